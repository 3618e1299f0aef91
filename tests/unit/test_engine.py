"""MatchingEngine: every command kind reaches its symbol's book, or is rejected outside
any book (seq 0) when the symbol is unknown."""

import pytest

from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    CancelAll,
    Canceled,
    Expire,
    Place,
    Rejected,
    Replace,
    Side,
    TimeInForce,
)
from schema.symbols import SymbolSpec
from workers.engine import MatchingEngine

SPEC = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD")


@pytest.mark.parametrize(
    ("command", "action"),
    [
        (
            Place(order_id=1, user_id="u", symbol="NOPE", side=Side.BUY, quantity=1, price=1),
            Action.PLACE,
        ),
        (Cancel(order_id=1, user_id="u", symbol="NOPE"), Action.CANCEL),
        (Replace(order_id=1, user_id="u", symbol="NOPE", quantity=1), Action.REPLACE),
        (Expire(symbol="NOPE", now_ms=5), Action.EXPIRE),
        (CancelAll(user_id="u", symbol="NOPE", order_id=7), Action.CANCEL_ALL),
    ],
)
def test_an_unknown_symbol_is_rejected_outside_any_book(command, action):
    assert MatchingEngine([SPEC]).apply(command) == [
        Rejected("NOPE", 0, command.order_id, command.user_id, action, RejectReason.UNKNOWN_SYMBOL)
    ]


def test_expire_and_cancel_all_reach_only_their_symbols_book():
    other = SymbolSpec(symbol="MSFT", base="MSFT", quote="USD")
    engine = MatchingEngine([SPEC, other])
    for symbol in ("AAPL", "MSFT"):
        gtd = Place(
            order_id=1 if symbol == "AAPL" else 2,
            user_id="u",
            symbol=symbol,
            side=Side.BUY,
            quantity=1,
            price=10,
            time_in_force=TimeInForce.GTD,
            expire_at_ms=100,
        )
        assert [type(e) for e in engine.apply(gtd)] == [Accepted]
    assert engine.apply(Expire(symbol="AAPL", now_ms=100)) == [
        Canceled("AAPL", 2, 1, "u", Side.BUY, 10, 1, CancelReason.EXPIRED)
    ]
    assert engine.apply(CancelAll(user_id="u", symbol="MSFT")) == [
        Canceled("MSFT", 2, 2, "u", Side.BUY, 10, 1, CancelReason.USER)
    ]
    assert engine.apply(CancelAll(user_id="u", symbol="AAPL")) == []
