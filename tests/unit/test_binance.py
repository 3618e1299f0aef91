"""The v3 layer's pure parts: signatures (Binance's documented examples), parameters, and
decimal strings to integer units and back."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.binance.errors import Binance, BinanceError
from api.binance.signing import Params, _pairs, payload, sign
from api.binance.translate import DECIMAL, Scale, parse, show, status
from schema.codes import CancelReason
from schema.messages import OrderType, Side, TimeInForce
from schema.orders import OrderRecord, OrderStatus
from schema.symbols import SymbolSpec

# Binance's spot API docs, "SIGNED endpoint examples for POST /api/v3/order" (HMAC keys).
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
MIXED_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
MIXED_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
MIXED_SIGNATURE = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"


def test_signature_of_binances_example_1_query_string() -> None:
    signed, signature = payload(f"{QUERY}&signature={SIGNATURE}", "")
    assert (signed, signature) == (QUERY, SIGNATURE)
    assert sign(SECRET, signed) == SIGNATURE


def test_signature_of_binances_example_2_body() -> None:
    signed, signature = payload("", f"{QUERY}&signature={SIGNATURE}")
    assert (signed, signature) == (QUERY, SIGNATURE)
    assert sign(SECRET, signed) == SIGNATURE


def test_signature_of_binances_example_3_query_then_body_with_nothing_between() -> None:
    signed, signature = payload(MIXED_QUERY, f"{MIXED_BODY}&signature={MIXED_SIGNATURE}")
    assert signed == MIXED_QUERY + MIXED_BODY
    assert signature == MIXED_SIGNATURE
    assert sign(SECRET, signed) == MIXED_SIGNATURE
    assert sign(SECRET, f"{MIXED_QUERY}&{MIXED_BODY}") != MIXED_SIGNATURE


def test_a_signature_elsewhere_than_last_is_taken_out_where_it_is() -> None:
    signed, signature = payload("a=1&signature=ff&b=2", "")
    assert (signed, signature) == ("a=1&b=2", "ff")
    assert payload("a=1", "b=2") == ("a=1b=2", None)


# What a query string or body is made of, escapes and the signature's name included.
_PIECES = st.lists(
    st.sampled_from(["a", "b", "=", "&", "signature=", "x", "%41", "%C2%B9", "+", "é", ""]),
    max_size=12,
).map("".join)


@given(_PIECES)
def test_parameters_are_read_as_parse_qsl_reads_them(part: str) -> None:
    try:
        expected = parse_qsl(part, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        with pytest.raises(BinanceError):
            _pairs(part)
        return
    assert _pairs(part) == expected


def _payload_by_pieces(query: str, body: str) -> tuple[str, str | None]:
    """payload() as first written: every piece looked at."""
    signature = None
    kept = []
    for part in (query, body):
        pieces = part.split("&")
        for piece in pieces:
            if piece.startswith("signature="):
                signature = piece[len("signature=") :]
        kept.append("&".join(p for p in pieces if not p.startswith("signature=")))
    return "".join(kept), signature


@given(_PIECES, _PIECES)
def test_the_signature_is_taken_out_wherever_it_is(query: str, body: str) -> None:
    both = [query, body]
    if sum(f"&{part}".count("&signature=") for part in both) > 1:
        return  # Params.parse refuses a second signature before payload() reads them
    assert payload(query, body) == _payload_by_pieces(query, body)


def test_a_parameter_sent_twice_is_binances_1101() -> None:
    with pytest.raises(BinanceError) as raised:
        Params.parse("symbol=A", "symbol=B")
    assert raised.value.error is Binance.TOO_MANY_PARAMETERS


def test_empty_parameters_are_not_sent_and_integers_are_ascii_digits_in_range() -> None:
    params = Params.parse("limit=&orderId=12&fromId=%C2%B9")
    assert params.get("limit") is None
    assert params.integer("limit", 1, 10, 5) == 5
    assert params.integer("orderId", 0, 100) == 12
    with pytest.raises(BinanceError) as raised:
        params.integer("fromId", 0, 100)  # a superscript one: isdigit() says yes
    assert raised.value.error is Binance.ILLEGAL_CHARS
    with pytest.raises(BinanceError) as raised:
        params.required("symbol")
    assert raised.value.error is Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED
    assert raised.value.msg == (
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
    )


@given(st.integers(-(10**20), 10**20), st.integers(-6, 18))
def test_units_shown_read_back_exactly(units: int, decimals: int) -> None:
    assert parse(show(units, decimals), decimals) == units


@given(st.integers(0, 2**53), st.integers(0, 18))
def test_what_is_shown_a_client_may_send_back(units: int, decimals: int) -> None:
    assert DECIMAL.fullmatch(show(units, decimals))


def test_a_value_off_the_grid_is_refused_not_rounded() -> None:
    assert parse("0.001", 2) is None
    assert parse("0.010", 2) == 1
    assert parse("150", -2) is None  # a price in hundreds
    assert parse("1500", -2) == 15
    assert show(5, 0) == "5" and show(5, 3) == "0.005" and show(5, -2) == "500"


def test_a_symbols_price_has_the_quote_decimals_less_the_base_ones() -> None:
    spec = SymbolSpec(symbol="BTCUSDT", base="BTC", quote="USDT")
    scale = Scale(spec, {"BTC": 5, "USDT": 7})
    # 0.5 BTC at 30000.50 USDT costs 15000.25 USDT: 50_000 x 3_000_050 = 150_002_500_000
    assert (scale.qty(50_000), scale.px(3_000_050)) == ("0.50000", "30000.50")
    assert scale.amount(50_000 * 3_000_050) == "15000.2500000"
    assert Scale(spec, {}).px(7) == "7"


def _record(status_: OrderStatus, reason: str | None) -> OrderRecord:
    return OrderRecord(
        user_id="u", symbol="S", side=Side.BUY, type=OrderType.LIMIT, price=1, quantity=1,
        remaining=0, filled=0, notional=0, time_in_force=TimeInForce.IOC, post_only=False,
        client_order_id=None, status=status_, pays_with="USD", created_ms=0, reason=reason,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("spot", "reason", "binance"),
    [
        (OrderStatus.NEW, None, "NEW"),
        (OrderStatus.OPEN, None, "NEW"),
        (OrderStatus.UNTRIGGERED, None, "NEW"),
        (OrderStatus.PARTIALLY_FILLED, None, "PARTIALLY_FILLED"),
        (OrderStatus.FILLED, None, "FILLED"),
        (OrderStatus.REJECTED, "POST_ONLY_WOULD_TRADE", "REJECTED"),
        (OrderStatus.CANCELED, CancelReason.USER, "CANCELED"),
        (OrderStatus.CANCELED, CancelReason.IOC_REMAINDER, "EXPIRED"),
        (OrderStatus.CANCELED, CancelReason.FOK_UNFILLABLE, "EXPIRED"),
        (OrderStatus.CANCELED, CancelReason.MARKET_REMAINDER, "EXPIRED"),
        (OrderStatus.CANCELED, CancelReason.SELF_TRADE, "EXPIRED_IN_MATCH"),
    ],
)
def test_order_statuses_in_binances_words(
    spot: OrderStatus, reason: str | None, binance: str
) -> None:
    assert status(_record(spot, reason)) == binance


def test_every_status_has_binances_word() -> None:
    for spot in OrderStatus:  # a status added later must be given one
        assert status(_record(spot, None)) in {
            "NEW",
            "PARTIALLY_FILLED",
            "FILLED",
            "CANCELED",
            "REJECTED",
        }
