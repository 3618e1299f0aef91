"""executionReport from Spot's order events (api/binance/user_stream.py reports): an order's
life as Binance's x (execution type) and X (status), with its cumulative quantities."""

from __future__ import annotations

from typing import Any

from api.binance.translate import Scale
from api.binance.user_stream import OrderState, reports
from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Canceled,
    Done,
    Event,
    OrderType,
    Rejected,
    Replaced,
    Side,
    TimeInForce,
    Trade,
)
from schema.symbols import SymbolSpec

SPEC = SymbolSpec(symbol="BTCUSDT", base="BTC", quote="USDT")
SCALE = Scale(SPEC, {"BTC": 2, "USDT": 2})  # prices as they are, quantities in hundredths


def _accepted(order_id: int = 7, tif: TimeInForce = TimeInForce.GTC) -> Accepted:
    return Accepted(
        symbol="BTCUSDT", seq=1, order_id=order_id, user_id="u1", side=Side.BUY,
        order_type=OrderType.LIMIT, price=100, quantity=500, time_in_force=tif,
        post_only=False, client_order_id="mine",
    )  # fmt: skip


def _trade(seq: int, quantity: int, maker_order: int = 9) -> Trade:
    return Trade(
        symbol="BTCUSDT", seq=seq, price=100, quantity=quantity, maker_order_id=maker_order,
        taker_order_id=7, maker_user_id="u2", taker_user_id="u1", taker_side=Side.BUY,
        maker_fee=1, taker_fee=3,
    )  # fmt: skip


def _run(*events: Event) -> list[dict[str, Any]]:
    state: OrderState | None = None
    out: list[dict[str, Any]] = []
    for event in events:
        state, made = reports(event, "u1", 7, state, SCALE, SPEC, 1_000)
        out += made
    return out


def test_an_order_filled_in_two_trades() -> None:
    new, first, last = _run(_accepted(), _trade(2, 200), _trade(3, 300), Done(
        symbol="BTCUSDT", seq=4, order_id=7, user_id="u1", side=Side.BUY))  # fmt: skip
    assert (new["x"], new["X"], new["c"], new["o"], new["q"], new["z"]) == (
        "NEW", "NEW", "mine", "LIMIT", "5.00", "0.00",
    )  # fmt: skip
    assert (first["x"], first["X"], first["l"], first["z"], first["L"]) == (
        "TRADE", "PARTIALLY_FILLED", "2.00", "2.00", "100",
    )  # fmt: skip
    assert (first["t"], first["m"], first["n"], first["N"]) == (2, False, "0.03", "BTC")
    assert (last["X"], last["z"], last["Z"], last["Y"]) == ("FILLED", "5.00", "500.00", "300.00")


def test_a_cancel_by_the_engine_is_an_expiry_and_a_self_trade_a_prevention() -> None:
    ioc = _accepted(tif=TimeInForce.IOC)
    remainder = Canceled(
        symbol="BTCUSDT", seq=3, order_id=7, user_id="u1", side=Side.BUY, price=100,
        remaining=300, reason=CancelReason.IOC_REMAINDER,
    )  # fmt: skip
    expired = _run(ioc, _trade(2, 200), remainder)[-1]
    assert (expired["x"], expired["X"], expired["z"], expired["w"]) == (
        "EXPIRED", "EXPIRED", "2.00", False,
    )  # fmt: skip
    prevented = Canceled(
        symbol="BTCUSDT", seq=2, order_id=7, user_id="u1", side=Side.BUY, price=100,
        remaining=500, reason=CancelReason.SELF_TRADE,
    )  # fmt: skip
    assert [(r["x"], r["X"]) for r in _run(_accepted(), prevented)][-1] == (
        "TRADE_PREVENTION", "EXPIRED_IN_MATCH",
    )  # fmt: skip
    mine = Canceled(
        symbol="BTCUSDT", seq=2, order_id=7, user_id="u1", side=Side.BUY, price=100,
        remaining=500, reason=CancelReason.USER,
    )  # fmt: skip
    assert [(r["x"], r["X"]) for r in _run(_accepted(), mine)][-1] == ("CANCELED", "CANCELED")


def test_a_rejection_and_a_replace() -> None:
    rejected = Rejected(
        symbol="BTCUSDT", seq=2, order_id=7, user_id="u1", action=Action.PLACE,
        reason=RejectReason.PRICE_OUT_OF_BAND,
    )  # fmt: skip
    report = _run(_accepted(), rejected)[-1]
    assert (report["x"], report["X"], report["r"]) == ("REJECTED", "REJECTED", "PRICE_OUT_OF_BAND")
    replaced = Replaced(
        symbol="BTCUSDT", seq=3, order_id=7, user_id="u1", side=Side.BUY, price=101,
        quantity=100, old_price=100, old_quantity=300, priority_kept=False,
    )  # fmt: skip
    report = _run(_accepted(), _trade(2, 200), replaced)[-1]
    assert (report["x"], report["X"], report["p"], report["q"]) == (
        "REPLACED", "PARTIALLY_FILLED", "101", "3.00",
    )  # fmt: skip


def test_an_unknown_orders_events_make_no_report() -> None:
    assert reports(_trade(2, 1), "u1", 7, None, SCALE, SPEC, 0) == (None, [])
