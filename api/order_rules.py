"""The rules /v1 checks before it queues a new order: a 422 with the book's own code
(schema/codes.py) now, rather than a REJECTED later, for what the API can see. The book
checks them all again (workers/book.py) and has the last word: the band and the last price
here are a cache up to api.market.REFRESH_S old.

What only the API decides: a MARKET or STOP_MARKET buy is held at the band's edge (its
protection price, past which the book never lets it trade), so it needs a band; a GTD
expiry must lie ahead of the API's clock, and no further than MAX_GTD_MS.
"""

from __future__ import annotations

from api.errors import HTTPError, price_refused, quantity_refused
from schema.codes import ApiError, RejectReason
from schema.messages import OrderType, Side, TimeInForce
from schema.symbols import SymbolSpec
from schema.wire import PlaceOrder

MAX_GTD_MS = 90 * 86_400_000  # how far ahead a GTD order may expire: 90 days
LIMITED = frozenset((OrderType.LIMIT, OrderType.STOP_LIMIT))  # the types that take a price
STOPS = frozenset((OrderType.STOP_LIMIT, OrderType.STOP_MARKET))


def check_place(
    spec: SymbolSpec,
    order: PlaceOrder,
    band: tuple[int, int] | None,
    reference: int | None,
    now_ms: int,
) -> int | None:
    """Refuse what breaks a rule; return the protection price the order's funds are held
    at (MARKET and STOP_MARKET buys), else None."""
    kind = order.type
    if kind in LIMITED:
        if order.price is None:
            raise HTTPError(RejectReason.PRICE_REQUIRED, f"a {kind} order needs a price")
        check_price(spec, order.price, band)
    elif order.price is not None:
        raise HTTPError(RejectReason.PRICE_NOT_ALLOWED, f"a {kind} order takes no price")
    if kind in STOPS:
        _check_stop(spec, order, band, reference)
    elif order.stop_price is not None:
        raise HTTPError(RejectReason.STOP_PRICE_NOT_ALLOWED, f"a {kind} order takes no stop_price")
    if order.post_only and (
        kind is not OrderType.LIMIT or order.time_in_force is not TimeInForce.GTC
    ):
        raise HTTPError(
            RejectReason.POST_ONLY_NOT_GTC_LIMIT, "post_only is for LIMIT orders with GTC"
        )
    check_quantity(spec, order.quantity)
    _check_expiry(order, now_ms)
    if kind in LIMITED or order.side is Side.SELL:
        return None
    if band is None:
        raise HTTPError(
            ApiError.MARKET_BUY_WITHOUT_BAND,
            f"{spec.symbol} has no price band, so a {kind} BUY cannot be funded; "
            "place a LIMIT order (or a STOP_LIMIT) instead",
        )
    return band[1]


def _check_stop(
    spec: SymbolSpec, order: PlaceOrder, band: tuple[int, int] | None, reference: int | None
) -> None:
    stop = order.stop_price
    if stop is None:
        raise HTTPError(
            RejectReason.STOP_PRICE_REQUIRED, f"a {order.type} order needs a stop_price"
        )
    reason = spec.check_stop_price(stop, band)
    if reason is RejectReason.STOP_PRICE_OUT_OF_BAND:
        assert band is not None  # out of band only with a band
        raise HTTPError(reason, f"stop_price {stop} is outside the band {band[0]}..{band[1]}")
    if reason is not None:
        raise HTTPError(reason, f"stop_price {stop} must be positive and on the tick {spec.tick}")
    if order.time_in_force is TimeInForce.FOK:
        raise HTTPError(
            RejectReason.TIME_IN_FORCE_NOT_ALLOWED, "a stop order is GTC, IOC or GTD, not FOK"
        )
    buy = order.side is Side.BUY
    if reference is not None and (reference >= stop if buy else reference <= stop):
        above = "at or above" if buy else "at or below"
        raise HTTPError(
            RejectReason.STOP_WOULD_TRIGGER,
            f"the last price {reference} is {above} stop_price {stop}: it would trigger at once",
        )


def _check_expiry(order: PlaceOrder, now_ms: int) -> None:
    if order.time_in_force is not TimeInForce.GTD:
        if order.expire_at_ms is not None:
            raise HTTPError(RejectReason.EXPIRE_AT_NOT_ALLOWED, "expire_at_ms is for GTD orders")
        return
    if order.type is OrderType.MARKET:
        raise HTTPError(
            RejectReason.TIME_IN_FORCE_NOT_ALLOWED, "a MARKET order never rests: no GTD"
        )
    expire_at_ms = order.expire_at_ms
    if expire_at_ms is None:
        raise HTTPError(RejectReason.EXPIRE_AT_REQUIRED, "a GTD order needs expire_at_ms")
    if expire_at_ms <= now_ms:
        raise HTTPError(
            RejectReason.EXPIRE_AT_PASSED, f"expire_at_ms {expire_at_ms} is not after {now_ms}"
        )
    if expire_at_ms > now_ms + MAX_GTD_MS:
        raise HTTPError(
            ApiError.EXPIRE_AT_TOO_FAR,
            f"expire_at_ms {expire_at_ms} is more than {MAX_GTD_MS // 86_400_000} days ahead",
        )


def check_price(spec: SymbolSpec, price: int, band: tuple[int, int] | None) -> None:
    reason = spec.check_price(price, band)
    if reason is not None:
        raise price_refused(reason, spec, price, band)


def check_quantity(spec: SymbolSpec, quantity: int, *, replace: bool = False) -> None:
    reason = spec.check_quantity(quantity, replace=replace)
    if reason is not None:
        raise quantity_refused(reason, spec, quantity)
