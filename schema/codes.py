"""Result codes as data, grouped by the stage that produces them (exchange-core's
CommandResultCode), each with the HTTP status the API answers it with beside it.

- `RejectReason`, `CancelReason`: why the book rejected or canceled an order. They travel
  in events (the matching core is their home) and the API answers the rules it checks
  before queueing with the same codes; `HTTP_STATUS` gives their status.
- `ScriptStatus`: what the order scripts (store/lua/) reply, the gateway's stage.
- `ApiError`: every other code the HTTP API answers with, as (code, status). The API
  raises by member; the member carries its status.
- `SocketError`: the errors /v1/ws sends as messages; no status, the connection stays.
"""

from enum import Enum, StrEnum


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
    # the user has SPOT_MAX_OPEN_ORDERS_PER_SYMBOL open orders on the symbol, or
    # SPOT_MAX_OPEN_ORDERS in all (Binance: -2010 "too many open orders")
    TOO_MANY_OPEN_ORDERS = "TOO_MANY_OPEN_ORDERS"
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


class ScriptStatus(StrEnum):
    """The first element of an order script's reply (each script's header says which)."""

    OK = "OK"
    NO_ROUTE = "NO_ROUTE"  # the symbol has no route
    DUPLICATE = "DUPLICATE"  # the client order id is an earlier order's (detail: its id)
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"  # detail: what is available
    NOT_FOUND = "NOT_FOUND"  # no such order, or another user's
    NOT_OPEN = "NOT_OPEN"  # the order has ended (detail: its status), or is a MARKET order
    PENDING = "PENDING"  # an earlier replace of the order is still queued
    TOO_LARGE = "TOO_LARGE"  # an amount past what Lua's doubles hold exactly (2^53)
    TOO_MANY_OPEN = "TOO_MANY_OPEN"  # detail: the cap reached (SYMBOL or ALL)


class ApiError(Enum):
    """The HTTP API's own error codes, `{"error": code}` on the wire, with their status.

    Not a StrEnum: UNKNOWN_SYMBOL is a RejectReason (422, an order for it) and also a 404
    here (a path or an admin request naming it), and the two must not be one dict key.
    """

    code: str
    status: int

    def __init__(self, code: str, status: int) -> None:
        self.code = code
        self.status = status

    # -- the request itself (api/app.py, api/request.py)
    MALFORMED = "MALFORMED", 400  # a body, query or path parameter that cannot be read
    NOT_FOUND = "NOT_FOUND", 404  # no such path
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED", 405
    BODY_TOO_LARGE = "BODY_TOO_LARGE", 413  # past SPOT_MAX_BODY_BYTES
    UPGRADE_REQUIRED = "UPGRADE_REQUIRED", 426  # /v1/ws without a WebSocket upgrade
    # past a request rate limit (api/limits.py), with Retry-After; Binance's -1003
    RATE_LIMITED = "RATE_LIMITED", 429
    # -- authentication (api/auth.py)
    UNAUTHENTICATED = "UNAUTHENTICATED", 401  # no bearer token
    INVALID_TOKEN = "INVALID_TOKEN", 401
    TOKEN_EXPIRED = "TOKEN_EXPIRED", 401
    FORBIDDEN = "FORBIDDEN", 403  # an admin path with a user's token
    # -- orders (api/orders.py, the order scripts' refusals)
    ORDER_NOT_OPEN = "ORDER_NOT_OPEN", 409  # ended, or a MARKET order (nothing to replace)
    REPLACE_PENDING = "REPLACE_PENDING", 409
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE", 422  # price x quantity past 2^53
    MARKET_BUY_WITHOUT_BAND = "MARKET_BUY_WITHOUT_BAND", 422  # nothing to size its hold by
    NO_ROUTE = "NO_ROUTE", 503  # a listed symbol with no route: ours to fix
    # an order kind a surface does not serve (/v1 serves every kind the book has)
    NOT_SUPPORTED = "NOT_SUPPORTED", 422
    # a GTD expiry further ahead than the API takes (api.order_rules.MAX_GTD_MS)
    EXPIRE_AT_TOO_FAR = "EXPIRE_AT_TOO_FAR", 422

    # -- API keys (api/apikeys.py)
    UNKNOWN_API_KEY = "UNKNOWN_API_KEY", 404  # not the caller's key, or revoked already
    TOO_MANY_API_KEYS = "TOO_MANY_API_KEYS", 409  # revoke one first
    # -- market data and admin (api/market.py, api/admin.py)
    SYMBOL_NOT_LISTED = "UNKNOWN_SYMBOL", 404  # a path or admin request naming no symbol
    UNKNOWN_ASSET = "UNKNOWN_ASSET", 422  # no listed symbol trades it
    # a deposit that would take available + locked past 2^53, where the scripts' doubles
    # stop holding every integer
    BALANCE_TOO_LARGE = "BALANCE_TOO_LARGE", 422
    SHARD_OUT_OF_RANGE = "SHARD_OUT_OF_RANGE", 422
    NO_FEE_TIER = "NO_FEE_TIER", 404  # the user pays the symbols' rates
    UNKNOWN_MIGRATION = "UNKNOWN_MIGRATION", 404
    MIGRATION_RUNNING = "MIGRATION_RUNNING", 409  # the symbol is being moved already
    ALREADY_ON_SHARD = "ALREADY_ON_SHARD", 409
    NOT_ACTIVE = "NOT_ACTIVE", 409  # the route is not ACTIVE (control.migration's code)
    MIGRATION_REFUSED = "MIGRATION_REFUSED", 409  # any other refusal of control.migration
    # -- dependencies (never a 500 for one that is down)
    UNAVAILABLE = "UNAVAILABLE", 503  # Redis or the database cannot be reached
    NO_DATABASE = "NO_DATABASE", 503  # history asked of an API without SPOT_DATABASE_URL
    NOT_READY = "NOT_READY", 503  # /readyz before the first symbols are loaded
    INTERNAL = "INTERNAL", 500  # a fault of ours, logged


class SocketError(StrEnum):
    """`{"type": "error", "error": code}` on /v1/ws (api/market_data.py); a bad token is
    the ApiError of api/auth.py (INVALID_TOKEN, TOKEN_EXPIRED)."""

    MALFORMED = "MALFORMED"  # not JSON, or not a known message shape
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    UNKNOWN_OP = "UNKNOWN_OP"
    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    TOO_MANY_CHANNELS = "TOO_MANY_CHANNELS"
    UNAUTHENTICATED = "UNAUTHENTICATED"  # `orders` or `balances` before op auth
    ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"
    SLOW_CONSUMER = "SLOW_CONSUMER"  # the last message before the server closes
    # the last message before the server closes, too
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"  # the user's, past SPOT_WS_CONNECTIONS_PER_USER
    IDLE_TIMEOUT = "IDLE_TIMEOUT"  # no subscription and nothing sent for SPOT_WS_IDLE_TIMEOUT_S
    UNAVAILABLE = "UNAVAILABLE"  # Redis cannot be reached; the fan-out retries
    INTERNAL = "INTERNAL"
