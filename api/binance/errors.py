"""Binance's errors, `{"code": -NNNN, "msg": "..."}`, and the one table that translates
Spot's codes (schema/codes.py) into them.

The codes, texts and HTTP statuses are Binance's (its spot API's errors.md), chosen so that
ccxt's `binance` class raises the exception it raises against Binance itself: it looks up
`msg` as an exact string first (so "Account has insufficient balance for requested
action." is InsufficientFunds whatever the code), then the body for LOT_SIZE and
PRICE_FILTER (InvalidOrder), then `code` (docs/ccxt-binance.md §2). A 429 is
DDoSProtection to ccxt whatever the body says, as it is against Binance.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import msgspec

from api.errors import HTTPError
from api.request import JSON, RETRY_AFTER_S, Reply
from schema.codes import ApiError, RejectReason

_encode = msgspec.json.Encoder().encode


class Binance(Enum):
    """(code, HTTP status, Binance's text). A text with `{}` takes the parameter's name."""

    code: int
    status: int
    text: str

    def __init__(self, code: int, status: int, text: str) -> None:
        self.code = code
        self.status = status
        self.text = text

    UNKNOWN = -1000, 500, "An unknown error occurred while processing the request."
    DISCONNECTED = -1001, 503, "Internal error; unable to process your request. Please try again."
    TOO_MANY_REQUESTS = -1003, 429, "Too many requests; current limit is exceeded."
    INVALID_MESSAGE = -1013, 400, "Invalid message."  # filter failures; their text varies
    UNSUPPORTED_ORDER_COMBINATION = -1014, 400, "Unsupported order combination."
    INVALID_TIMESTAMP = -1021, 400, "Timestamp for this request is outside of the recvWindow."
    INVALID_SIGNATURE = -1022, 400, "Signature for this request is not valid."
    ILLEGAL_CHARS = -1100, 400, "Illegal characters found in parameter '{}'."
    TOO_MANY_PARAMETERS = -1101, 400, "Duplicate values for a parameter detected."
    MANDATORY_PARAM_EMPTY_OR_MALFORMED = (
        -1102,
        400,
        "Mandatory parameter '{}' was not sent, was empty/null, or malformed.",
    )
    PARAM_NOT_REQUIRED = -1106, 400, "Parameter '{}' sent when not required."
    INVALID_TIF = -1115, 400, "Invalid timeInForce."
    INVALID_ORDER_TYPE = -1116, 400, "Invalid orderType."
    INVALID_SIDE = -1117, 400, "Invalid side."
    BAD_INTERVAL = -1120, 400, "Invalid interval."
    BAD_SYMBOL = -1121, 400, "Invalid symbol."
    INVALID_PARAMETER = -1130, 400, "Invalid data sent for a parameter."
    BAD_RECV_WINDOW = -1131, 400, "recvWindow must be less than 60000"
    NO_LISTEN_KEY = -1125, 400, "This listenKey does not exist."
    # the WebSocket API's, for a method it does not serve
    UNSUPPORTED_OPERATION = -1020, 400, "This operation is not supported."
    NEW_ORDER_REJECTED = -2010, 400, "New order rejected."
    # cancelReplace: one of the two failed (409, Binance's status for it), or the cancel did
    # and the new order was not attempted, or both failed (400)
    REPLACE_PARTIALLY_FAILED = -2021, 409, "Order cancel-replace partially failed."
    REPLACE_FAILED = -2022, 400, "Order cancel-replace failed."
    CANCEL_REJECTED = -2011, 400, "Unknown order sent."
    NO_SUCH_ORDER = -2013, 400, "Order does not exist."
    BAD_API_KEY_FMT = -2014, 401, "API-key format invalid."
    REJECTED_MBX_KEY = -2015, 401, "Invalid API-key, IP, or permissions for action."


class BinanceError(Exception):
    """Raised anywhere in the v3 layer; api/binance/routes.py answers it."""

    def __init__(
        self,
        error: Binance,
        msg: str | None = None,
        *,
        param: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        text = msg if msg is not None else error.text.format(param)
        super().__init__(text)
        self.error = error
        self.msg = text
        self.data = data  # what a cancelReplace did of its two parts

    def body(self) -> dict[str, Any]:
        return {"code": self.error.code, "msg": self.msg}


def reply(exc: BinanceError) -> Reply:
    error = exc.error
    headers = JSON if error.status not in (429, 503) else [*JSON, ("retry-after", RETRY_AFTER_S)]
    body = exc.body() if exc.data is None else {**exc.body(), "data": exc.data}
    return error.status, _encode(body), headers


# Texts ccxt matches exactly (its binance `exceptions['exact']`), and the filter names it
# finds in a body (LOT_SIZE, PRICE_FILTER: InvalidOrder).
INSUFFICIENT = "Account has insufficient balance for requested action."
WOULD_TAKE = "Order would immediately match and take."
WOULD_TRIGGER = "Order would trigger immediately."
DUPLICATE = "Duplicate order sent."
PRICE_FILTER = "Filter failure: PRICE_FILTER"
LOT_SIZE = "Filter failure: LOT_SIZE"
PERCENT_PRICE = "Filter failure: PERCENT_PRICE_BY_SIDE"
NOTIONAL = "Filter failure: NOTIONAL"

_R, _A = RejectReason, ApiError
_KEEP = None  # Spot's own message says it best

# THE table: every Spot code the v3 layer can meet, by its wire code, to Binance's error and
# its text (None: Spot's message). ApiError.SYMBOL_NOT_LISTED's wire code is UNKNOWN_SYMBOL,
# RejectReason.UNKNOWN_SYMBOL's too: both are Binance's invalid symbol.
TRANSLATION: dict[str, tuple[Binance, str | None]] = {
    # the symbol's rules (schema/symbols.py)
    _R.UNKNOWN_SYMBOL: (Binance.BAD_SYMBOL, Binance.BAD_SYMBOL.text),
    _R.PRICE_REQUIRED: (Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, _KEEP),
    _R.PRICE_NOT_ALLOWED: (Binance.PARAM_NOT_REQUIRED, _KEEP),
    _R.PRICE_NOT_POSITIVE: (Binance.INVALID_MESSAGE, PRICE_FILTER),
    _R.PRICE_OFF_TICK: (Binance.INVALID_MESSAGE, PRICE_FILTER),
    _R.PRICE_OUT_OF_BAND: (Binance.INVALID_MESSAGE, PERCENT_PRICE),
    _R.QUANTITY_OFF_LOT: (Binance.INVALID_MESSAGE, LOT_SIZE),
    _R.QUANTITY_BELOW_MIN: (Binance.INVALID_MESSAGE, LOT_SIZE),
    _R.QUANTITY_ABOVE_MAX: (Binance.INVALID_MESSAGE, LOT_SIZE),
    _R.POST_ONLY_NOT_GTC_LIMIT: (Binance.UNSUPPORTED_ORDER_COMBINATION, _KEEP),
    _R.STOP_PRICE_REQUIRED: (Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, _KEEP),
    _R.STOP_PRICE_NOT_ALLOWED: (Binance.PARAM_NOT_REQUIRED, _KEEP),
    _R.STOP_PRICE_NOT_POSITIVE: (Binance.INVALID_MESSAGE, PRICE_FILTER),
    _R.STOP_PRICE_OFF_TICK: (Binance.INVALID_MESSAGE, PRICE_FILTER),
    _R.STOP_PRICE_OUT_OF_BAND: (Binance.INVALID_MESSAGE, PERCENT_PRICE),
    _R.TIME_IN_FORCE_NOT_ALLOWED: (Binance.INVALID_TIF, _KEEP),
    _R.EXPIRE_AT_REQUIRED: (Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, _KEEP),
    _R.EXPIRE_AT_NOT_ALLOWED: (Binance.PARAM_NOT_REQUIRED, _KEEP),
    _R.FEE_RATE_INVALID: (Binance.NEW_ORDER_REJECTED, _KEEP),
    # risk (the router)
    _R.INSUFFICIENT_BALANCE: (Binance.NEW_ORDER_REJECTED, INSUFFICIENT),
    _R.TOO_MANY_OPEN_ORDERS: (Binance.NEW_ORDER_REJECTED, "Account has too many open orders."),
    _R.DUPLICATE_CLIENT_ORDER_ID: (Binance.NEW_ORDER_REJECTED, DUPLICATE),
    _A.AMOUNT_TOO_LARGE.code: (Binance.INVALID_MESSAGE, NOTIONAL),
    _A.MARKET_BUY_WITHOUT_BAND.code: (Binance.NEW_ORDER_REJECTED, _KEEP),
    _A.NOT_SUPPORTED.code: (Binance.NEW_ORDER_REJECTED, _KEEP),
    # matching (an order the book rejected, seen by a RESULT/FULL placement)
    _R.UNKNOWN_ORDER: (Binance.NO_SUCH_ORDER, Binance.NO_SUCH_ORDER.text),
    _R.DUPLICATE_ORDER_ID: (Binance.NEW_ORDER_REJECTED, DUPLICATE),
    _R.POST_ONLY_WOULD_TRADE: (Binance.NEW_ORDER_REJECTED, WOULD_TAKE),
    _R.STOP_WOULD_TRIGGER: (Binance.NEW_ORDER_REJECTED, WOULD_TRIGGER),
    _R.STOP_NOT_REPLACEABLE: (Binance.NEW_ORDER_REJECTED, _KEEP),
    _R.EXPIRE_AT_PASSED: (Binance.NEW_ORDER_REJECTED, _KEEP),
    _R.STALE_ROUTE: (Binance.NEW_ORDER_REJECTED, _KEEP),
    _R.REPLACE_WITHOUT_CHANGE: (Binance.NEW_ORDER_REJECTED, _KEEP),
    # orders that ended, or changes of them
    _A.ORDER_NOT_OPEN.code: (Binance.CANCEL_REJECTED, Binance.CANCEL_REJECTED.text),
    _A.REPLACE_PENDING.code: (Binance.NEW_ORDER_REJECTED, _KEEP),
    # the request (a v3 request that /v1's checks refuse)
    _A.MALFORMED.code: (Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, _KEEP),
    _A.BODY_TOO_LARGE.code: (Binance.TOO_MANY_PARAMETERS, _KEEP),
    # authentication (the v3 layer signs its own requests: only a key's lack of a right)
    _A.FORBIDDEN.code: (Binance.REJECTED_MBX_KEY, Binance.REJECTED_MBX_KEY.text),
    # dependencies, and ours
    _A.NO_ROUTE.code: (Binance.DISCONNECTED, _KEEP),
    _A.UNAVAILABLE.code: (Binance.DISCONNECTED, _KEEP),
    _A.NO_DATABASE.code: (Binance.DISCONNECTED, _KEEP),
    _A.NOT_READY.code: (Binance.DISCONNECTED, _KEEP),
    _A.INTERNAL.code: (Binance.UNKNOWN, Binance.UNKNOWN.text),
}

# A code the table does not name (one added after it) goes by its HTTP status: a rate limit
# (429) is Binance's -1003, whatever Spot calls it.
_BY_STATUS = {
    429: Binance.TOO_MANY_REQUESTS,
    503: Binance.DISCONNECTED,
    401: Binance.REJECTED_MBX_KEY,
    403: Binance.REJECTED_MBX_KEY,
    404: Binance.NO_SUCH_ORDER,
    500: Binance.UNKNOWN,
}


def translate(exc: HTTPError) -> BinanceError:
    """Spot's error as Binance's."""
    found = TRANSLATION.get(exc.code)
    if found is None:
        error = _BY_STATUS.get(exc.status, Binance.NEW_ORDER_REJECTED)
        return BinanceError(error, exc.message if error.code == -2010 else None)
    error, text = found
    return BinanceError(error, exc.message if text is None else text)
