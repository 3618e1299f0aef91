"""An order's status and the record users read it from (`order:{id}` in Redis).

One transition table, as nautilus_trader's `_ORDER_STATE_TABLE`: every place that moves
an order's status (the worker's settlement, the SETTLE script through it, the batcher's
row changes) asks `next_status`; none re-derives it. A status the table has no entry for
is a bug, never a client's doing, so `next_status` raises.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from schema.messages import OrderType, Side, TimeInForce


class OrderStatus(StrEnum):
    NEW = "NEW"  # queued by the router; no worker has taken it yet
    # a stop the book accepted, waiting outside the book (and its depth) for a trade to
    # reach its stop price; its funds are held from placement
    UNTRIGGERED = "UNTRIGGERED"
    OPEN = "OPEN"  # accepted by the book (or a stop triggered), resting, nothing filled
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"


class OrderEvent(StrEnum):
    """What happens to an order, as far as its status is concerned."""

    ACCEPT = "ACCEPT"  # the book took it (Accepted)
    ACCEPT_STOP = "ACCEPT_STOP"  # the book took a stop, untriggered (Accepted with stop_price)
    TRIGGER = "TRIGGER"  # a trade reached the stop: it runs as an incoming order (Triggered)
    FILL = "FILL"  # one of its trades, not its last
    DONE = "DONE"  # its last trade (Done)
    CANCEL = "CANCEL"  # Canceled, whatever the reason
    REJECT = "REJECT"  # Rejected before the book took it


S, E = OrderStatus, OrderEvent

# (status before, event) -> status after. The book accepts an order before anything else
# happens to it, so a NEW order can only be accepted or rejected. A batch may see an
# order's fill without its accept (that came in an earlier batch): settlement and the
# batcher then start from OPEN, and every open status moves the same way. A stop's trigger
# makes it an incoming order like any other, OPEN until it trades (Bybit's Untriggered ->
# Triggered -> New); that it was triggered stays in the record (`triggered`), whatever
# happens to it next. Nothing but its trigger or its cancel happens to an untriggered stop.
TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (S.NEW, E.ACCEPT): S.OPEN,
    (S.NEW, E.ACCEPT_STOP): S.UNTRIGGERED,
    (S.NEW, E.REJECT): S.REJECTED,
    (S.UNTRIGGERED, E.TRIGGER): S.OPEN,
    (S.UNTRIGGERED, E.CANCEL): S.CANCELED,
    (S.OPEN, E.FILL): S.PARTIALLY_FILLED,
    (S.OPEN, E.DONE): S.FILLED,
    (S.OPEN, E.CANCEL): S.CANCELED,
    (S.PARTIALLY_FILLED, E.FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.DONE): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL): S.CANCELED,
}

# Statuses no event leaves: the order is finished.
TERMINAL: frozenset[OrderStatus] = frozenset(
    status for status in OrderStatus if not any(before is status for before, _ in TRANSITIONS)
)
OPEN_STATUSES: tuple[OrderStatus, ...] = tuple(s for s in OrderStatus if s not in TERMINAL)


class InvalidTransition(Exception):
    pass


def next_status(status: OrderStatus, event: OrderEvent) -> OrderStatus:
    after = TRANSITIONS.get((status, event))
    if after is None:
        raise InvalidTransition(f"an order {status} cannot {event}")
    return after


def advance(status: OrderStatus | None, event: OrderEvent) -> OrderStatus:
    """`next_status` for a batch that may not know the order's status (None). ACCEPT,
    ACCEPT_STOP and REJECT happen only to an order the book has not taken yet (NEW), TRIGGER
    only to an untriggered stop; anything else to an order the book has, and every open
    status moves the same way, so OPEN stands for it. One lookup: the worker and the
    batcher call this for every order event."""
    after = _ADVANCE.get((status, event))
    if after is None:
        raise InvalidTransition(f"an order {status} cannot {event}")
    return after


# Where a batch that has not seen an order's status takes it to be, by what happens to it.
_UNSEEN = {E.ACCEPT: S.NEW, E.ACCEPT_STOP: S.NEW, E.REJECT: S.NEW, E.TRIGGER: S.UNTRIGGERED}
_ADVANCE: dict[tuple[OrderStatus | None, OrderEvent], OrderStatus] = {
    **{(status, event): after for (status, event), after in TRANSITIONS.items()},
    **{(None, event): TRANSITIONS[(_UNSEEN.get(event, S.OPEN), event)] for event in OrderEvent},
}


# The price a buy is held at: its limit (LIMIT, STOP_LIMIT), or the protection price the
# API set (MARKET, STOP_MARKET: the band's edge), past which the book never lets it trade.
_LIMITED = frozenset((OrderType.LIMIT, OrderType.STOP_LIMIT))


def hold(
    side: Side, order_type: OrderType, price: int | None, protection: int | None, quantity: int
) -> int:
    """What an order holds from placement, in the asset it pays with: a sell its quantity of
    base, a buy its limit or protection price times its quantity of quote. A stop is held
    as the order it becomes once triggered. The router takes this (api/order_gateway.py),
    and settlement knows a triggered stop's hold by it (workers/settlement.py)."""
    if side is Side.SELL:
        return quantity
    held_at = price if order_type in _LIMITED else protection
    return (held_at or 0) * quantity


class OrderRecord(msgspec.Struct, kw_only=True, gc=False):
    """The `order:{id}` hash: written by the PLACE script from the command, patched by the
    SETTLE script, read by the API. Redis keeps every value as a string: `price` is ''
    when absent, `post_only` and `pending` '0'/'1'; `filled`, `notional`, `post_only` and
    `client_order_id` are missing until they are other than 0, false or none. The fields
    only some orders carry (`stop_price`, `expire_at_ms`, `protection_price`) are written
    only when set, so a plain order's record is no bigger than before stops; `triggered`
    ('1') is the SETTLE script's, once a stop's TRIGGERED is settled."""

    user_id: str
    symbol: str
    side: Side
    type: OrderType
    price: int | None
    quantity: int
    remaining: int
    filled: int
    notional: int
    time_in_force: TimeInForce
    post_only: bool
    client_order_id: str | None
    status: OrderStatus
    pays_with: str
    created_ms: int
    pending: bool = False  # a replace is queued and not applied yet
    reason: str | None = None  # why it was canceled or rejected
    stop_price: int | None = None  # STOP_LIMIT and STOP_MARKET
    expire_at_ms: int | None = None  # GTD
    # MARKET and STOP_MARKET buys: the price their funds were held at (the band's edge)
    protection_price: int | None = None
    triggered: bool = False  # a stop whose trigger was settled

    @classmethod
    def from_hash(cls, r: dict[bytes, bytes]) -> OrderRecord:
        price = r.get(b"price", b"")
        client_order_id = r.get(b"client_order_id", b"")
        reason = r.get(b"reason")
        stop_price = r.get(b"stop_price")
        expire_at_ms = r.get(b"expire_at_ms")
        protection_price = r.get(b"protection_price")
        return cls(
            user_id=r[b"user_id"].decode(),
            symbol=r[b"symbol"].decode(),
            side=Side(r[b"side"].decode()),
            type=OrderType(r[b"type"].decode()),
            price=int(price) if price else None,
            quantity=int(r[b"quantity"]),
            remaining=int(r[b"remaining"]),
            filled=int(r.get(b"filled", b"0")),
            notional=int(r.get(b"notional", b"0")),
            time_in_force=TimeInForce(r[b"time_in_force"].decode()),
            post_only=r.get(b"post_only") == b"1",
            client_order_id=client_order_id.decode() if client_order_id else None,
            status=OrderStatus(r[b"status"].decode()),
            pays_with=r.get(b"pays_with", b"").decode(),
            created_ms=int(r[b"created_ms"]),
            pending=r.get(b"pending") == b"1",
            reason=reason.decode() if reason else None,
            stop_price=int(stop_price) if stop_price else None,
            expire_at_ms=int(expire_at_ms) if expire_at_ms else None,
            protection_price=int(protection_price) if protection_price else None,
            triggered=r.get(b"triggered") == b"1",
        )


# The record's field names, for readers that take a few (HMGET) and for the scripts'
# contract tests: the PLACE script writes exactly these but the SETTLE script's, those of
# ORDER_RECORD_OPTIONAL that the order has not got and those of ORDER_RECORD_DEFAULTED
# at their defaults (no fill yet: '0'; not post-only: '0'; no client order id: ''), which
# readers take as those defaults when missing.
ORDER_RECORD_FIELDS: tuple[str, ...] = OrderRecord.__struct_fields__
ORDER_RECORD_SETTLED: tuple[str, ...] = ("pending", "reason", "triggered")
ORDER_RECORD_OPTIONAL: tuple[str, ...] = ("stop_price", "expire_at_ms", "protection_price")
ORDER_RECORD_DEFAULTED: tuple[str, ...] = ("filled", "notional", "post_only", "client_order_id")
