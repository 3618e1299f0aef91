"""Result codes as data: why an order was rejected or canceled, and how HTTP shows it.

Grouped by the stage that produces them (exchange-core style): the symbol's rules,
the router's risk checks, and the matching core.
"""

from enum import StrEnum


class RejectReason(StrEnum):
    # rules of the symbol (checked by the API and again by the book)
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    PRICE_REQUIRED = "PRICE_REQUIRED"
    PRICE_NOT_ALLOWED = "PRICE_NOT_ALLOWED"
    PRICE_NOT_POSITIVE = "PRICE_NOT_POSITIVE"
    PRICE_OFF_TICK = "PRICE_OFF_TICK"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"
    QUANTITY_OFF_LOT = "QUANTITY_OFF_LOT"
    QUANTITY_BELOW_MIN = "QUANTITY_BELOW_MIN"
    QUANTITY_ABOVE_MAX = "QUANTITY_ABOVE_MAX"
    POST_ONLY_NOT_GTC_LIMIT = "POST_ONLY_NOT_GTC_LIMIT"
    REPLACE_WITHOUT_CHANGE = "REPLACE_WITHOUT_CHANGE"
    STOP_PRICE_REQUIRED = "STOP_PRICE_REQUIRED"
    STOP_PRICE_NOT_ALLOWED = "STOP_PRICE_NOT_ALLOWED"
    STOP_PRICE_NOT_POSITIVE = "STOP_PRICE_NOT_POSITIVE"
    STOP_PRICE_OFF_TICK = "STOP_PRICE_OFF_TICK"
    STOP_PRICE_OUT_OF_BAND = "STOP_PRICE_OUT_OF_BAND"
    # FOK on a stop order; GTD on a MARKET order (it never rests, so it has nothing to expire)
    TIME_IN_FORCE_NOT_ALLOWED = "TIME_IN_FORCE_NOT_ALLOWED"
    EXPIRE_AT_REQUIRED = "EXPIRE_AT_REQUIRED"  # GTD without expire_at_ms
    EXPIRE_AT_NOT_ALLOWED = "EXPIRE_AT_NOT_ALLOWED"  # expire_at_ms on an order that is not GTD
    # a per-order fee override out of range: each rate within ±10_000 bps, the taker's not
    # negative, the maker's rebate no larger than the taker's rate
    FEE_RATE_INVALID = "FEE_RATE_INVALID"
    # risk (the router)
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    # matching
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    POST_ONLY_WOULD_TRADE = "POST_ONLY_WOULD_TRADE"
    # a stop whose condition already holds against the last trade (or the reference price)
    STOP_WOULD_TRIGGER = "STOP_WOULD_TRIGGER"
    STOP_NOT_REPLACEABLE = "STOP_NOT_REPLACEABLE"  # a Replace of a stop not yet triggered
    # a GTD order whose expire_at_ms is not after the book's clock (the latest EXPIRE's now_ms)
    EXPIRE_AT_PASSED = "EXPIRE_AT_PASSED"
    # a command for a symbol this shard no longer owns, or queued under an older route epoch
    # (a hot-shard migration moved the symbol): never applied to an empty book
    STALE_ROUTE = "STALE_ROUTE"


class CancelReason(StrEnum):
    USER = "USER"
    IOC_REMAINDER = "IOC_REMAINDER"
    MARKET_REMAINDER = "MARKET_REMAINDER"
    FOK_UNFILLABLE = "FOK_UNFILLABLE"
    SELF_TRADE = "SELF_TRADE"
    EXPIRED = "EXPIRED"  # a GTD order or stop reached its expire_at_ms (an EXPIRE command)


# How the API answers a rejection it can see before queueing the order.
HTTP_STATUS: dict[RejectReason, int] = {
    **{reason: 422 for reason in RejectReason},
    RejectReason.UNKNOWN_ORDER: 404,
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: 409,
    RejectReason.DUPLICATE_ORDER_ID: 409,
}
