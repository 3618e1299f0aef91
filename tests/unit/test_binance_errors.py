"""Every Spot code the v3 layer answers, through the one table into Binance's error, then
through the real ccxt's binance error handler: the exception a bot sees. The expected
classes are written out here (what a Binance client expects of each refusal), not derived
from the table under test."""

from __future__ import annotations

import json

import ccxt
import pytest

from api.binance.errors import TRANSLATION, BinanceError, reply, translate
from api.errors import HTTPError
from schema.codes import ApiError, RejectReason

R, A = RejectReason, ApiError
URL = "http://127.0.0.1:8000/api/v3/order"

EXPECTED: dict[RejectReason | ApiError, type[Exception]] = {
    R.UNKNOWN_SYMBOL: ccxt.BadSymbol,
    A.SYMBOL_NOT_LISTED: ccxt.BadSymbol,
    R.PRICE_REQUIRED: ccxt.BadRequest,
    R.PRICE_NOT_ALLOWED: ccxt.BadRequest,
    R.PRICE_NOT_POSITIVE: ccxt.InvalidOrder,
    R.PRICE_OFF_TICK: ccxt.InvalidOrder,
    R.PRICE_OUT_OF_BAND: ccxt.InvalidOrder,
    R.QUANTITY_OFF_LOT: ccxt.InvalidOrder,
    R.QUANTITY_BELOW_MIN: ccxt.InvalidOrder,
    R.QUANTITY_ABOVE_MAX: ccxt.InvalidOrder,
    R.POST_ONLY_NOT_GTC_LIMIT: ccxt.InvalidOrder,
    R.REPLACE_WITHOUT_CHANGE: ccxt.InvalidOrder,
    R.STOP_PRICE_REQUIRED: ccxt.BadRequest,
    R.STOP_PRICE_NOT_ALLOWED: ccxt.BadRequest,
    R.STOP_PRICE_NOT_POSITIVE: ccxt.InvalidOrder,
    R.STOP_PRICE_OFF_TICK: ccxt.InvalidOrder,
    R.STOP_PRICE_OUT_OF_BAND: ccxt.InvalidOrder,
    R.TIME_IN_FORCE_NOT_ALLOWED: ccxt.BadRequest,
    R.EXPIRE_AT_REQUIRED: ccxt.BadRequest,
    R.EXPIRE_AT_NOT_ALLOWED: ccxt.BadRequest,
    R.FEE_RATE_INVALID: ccxt.InvalidOrder,
    R.INSUFFICIENT_BALANCE: ccxt.InsufficientFunds,
    R.DUPLICATE_CLIENT_ORDER_ID: ccxt.InvalidOrder,
    R.UNKNOWN_ORDER: ccxt.OrderNotFound,
    R.DUPLICATE_ORDER_ID: ccxt.InvalidOrder,
    R.POST_ONLY_WOULD_TRADE: ccxt.OrderImmediatelyFillable,
    R.STOP_WOULD_TRIGGER: ccxt.OrderImmediatelyFillable,
    R.STOP_NOT_REPLACEABLE: ccxt.InvalidOrder,
    R.EXPIRE_AT_PASSED: ccxt.InvalidOrder,
    R.STALE_ROUTE: ccxt.InvalidOrder,
    A.AMOUNT_TOO_LARGE: ccxt.BadRequest,  # Binance's NOTIONAL filter: -1013
    A.MARKET_BUY_WITHOUT_BAND: ccxt.InvalidOrder,
    A.NOT_SUPPORTED: ccxt.InvalidOrder,
    A.ORDER_NOT_OPEN: ccxt.OrderNotFound,
    A.REPLACE_PENDING: ccxt.InvalidOrder,
    A.MALFORMED: ccxt.BadRequest,
    A.BODY_TOO_LARGE: ccxt.BadRequest,
    A.FORBIDDEN: ccxt.AuthenticationError,
    A.NO_ROUTE: ccxt.OperationFailed,
    A.UNAVAILABLE: ccxt.OperationFailed,
    A.NO_DATABASE: ccxt.OperationFailed,
    A.NOT_READY: ccxt.OperationFailed,
    A.INTERNAL: ccxt.OperationFailed,
}


def _raised_by_ccxt(exc: BinanceError) -> type[Exception] | None:
    status, body, _ = reply(exc)
    text = body.decode()
    exchange = ccxt.binance()
    try:
        exchange.handle_errors(status, "", URL, "POST", {}, text, json.loads(text), {}, "")
    except Exception as raised:
        return type(raised)
    return None


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda c: f"{type(c).__name__}.{c.name}")
def test_each_spot_code_raises_the_ccxt_exception_a_binance_client_expects(
    code: RejectReason | ApiError,
) -> None:
    raised = _raised_by_ccxt(translate(HTTPError(code, "a reason of Spot's")))
    assert raised is EXPECTED[code], f"{code}: {raised}"


def test_the_table_names_every_code_expected_here() -> None:
    named = {c.value if isinstance(c, RejectReason) else c.code for c in EXPECTED}
    assert set(TRANSLATION) == named


def test_every_reject_reason_is_translated() -> None:
    # A reason added to the core later must be given its Binance error, not fall back.
    assert set(RejectReason) <= set(TRANSLATION)


def test_a_rate_limit_is_1003_with_status_429_whatever_spot_calls_it() -> None:
    limited = HTTPError(ApiError.MALFORMED, "slow down")
    limited.code, limited.status = "RATE_LIMITED", 429  # the hardening work's code, unseen
    error = translate(limited)
    status, body, headers = reply(error)
    assert (status, json.loads(body)["code"]) == (429, -1003)
    assert ("retry-after", "1") in headers
    # ccxt takes any 429 for DDoSProtection, before the body: as against Binance itself.
    assert _raised_by_ccxt(error) is ccxt.DDoSProtection


def test_a_1003_answered_with_400_would_be_rate_limit_exceeded() -> None:
    """Why the v3 layer answers 429 (Binance's status) and the tests expect DDoSProtection
    for it: ccxt's RateLimitExceeded is what -1003 maps to only below the 429 rule."""
    exchange = ccxt.binance()
    body = '{"code":-1003,"msg":"Too many requests."}'
    with pytest.raises(ccxt.RateLimitExceeded):
        exchange.handle_errors(400, "", URL, "GET", {}, body, json.loads(body), {}, "")
