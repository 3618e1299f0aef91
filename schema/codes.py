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
    # risk (the router)
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    # matching
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    POST_ONLY_WOULD_TRADE = "POST_ONLY_WOULD_TRADE"
    # a command for a symbol this shard no longer owns, or queued under an older route epoch
    # (a hot-shard migration moved the symbol): never applied to an empty book
    STALE_ROUTE = "STALE_ROUTE"


class CancelReason(StrEnum):
    USER = "USER"
    IOC_REMAINDER = "IOC_REMAINDER"
    MARKET_REMAINDER = "MARKET_REMAINDER"
    FOK_UNFILLABLE = "FOK_UNFILLABLE"
    SELF_TRADE = "SELF_TRADE"


# How the API answers a rejection it can see before queueing the order.
HTTP_STATUS: dict[RejectReason, int] = {
    **{reason: 422 for reason in RejectReason},
    RejectReason.UNKNOWN_ORDER: 404,
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: 409,
    RejectReason.DUPLICATE_ORDER_ID: 409,
}
