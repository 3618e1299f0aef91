"""The batcher's one-minute candles and the intervals read back from them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.candles import NO_TRADE, bucket_end, bucket_start, candle, gaps
from batcher.candles import CANDLE_COLUMNS, Candle, minute_candles
from schema import tables
from schema.messages import Side, Trade


def _trade(symbol: str, seq: int, price: int, quantity: int, side: Side) -> Trade:
    return Trade(
        symbol=symbol, seq=seq, price=price, quantity=quantity, maker_order_id=1,
        taker_order_id=2, maker_user_id="m", taker_user_id="t", taker_side=side,
    )  # fmt: skip


def test_a_flush_makes_one_candle_per_symbol_in_its_minute_open_and_close_by_seq() -> None:
    trades = [
        _trade("A", 7, 105, 2, Side.BUY),
        _trade("B", 3, 50, 1, Side.SELL),
        _trade("A", 5, 100, 1, Side.SELL),  # read after seq 7 (another stream): still the open
        _trade("A", 9, 98, 4, Side.BUY),
    ]
    now_ms = 1_700_000_059_999
    candles = {c.symbol: c for c in minute_candles(trades, now_ms)}
    assert candles["A"] == Candle(
        symbol="A", open_time=1_700_000_040_000, open=100, high=105, low=98, close=98,
        volume=7, quote_volume=100 + 210 + 392, taker_buy_volume=6,
        taker_buy_quote_volume=210 + 392, trades=3, first_seq=5, last_seq=9,
    )  # fmt: skip
    assert candles["B"].open_time == 1_700_000_040_000
    assert (candles["B"].taker_buy_volume, candles["B"].trades) == (0, 1)
    assert minute_candles([], now_ms) == []


def _ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("interval", "moment", "start", "end"),
    [
        ("1m", _ms(2026, 3, 4, 5, 6, 7), _ms(2026, 3, 4, 5, 6), _ms(2026, 3, 4, 5, 7)),
        ("15m", _ms(2026, 3, 4, 5, 29), _ms(2026, 3, 4, 5, 15), _ms(2026, 3, 4, 5, 30)),
        ("4h", _ms(2026, 3, 4, 5, 6), _ms(2026, 3, 4, 4), _ms(2026, 3, 4, 8)),
        ("1d", _ms(2026, 3, 4, 23, 59), _ms(2026, 3, 4), _ms(2026, 3, 5)),
        ("1w", _ms(2026, 3, 4, 12), _ms(2026, 3, 2), _ms(2026, 3, 9)),  # Monday to Monday
        ("1M", _ms(2026, 12, 31, 23), _ms(2026, 12, 1), _ms(2027, 1, 1)),
        ("1M", _ms(2026, 2, 1), _ms(2026, 2, 1), _ms(2026, 3, 1)),
    ],
)
def test_intervals_start_on_utc_boundaries(
    interval: str, moment: int, start: int, end: int
) -> None:
    assert bucket_start(moment, interval) == start
    assert bucket_end(start, interval) == end


def test_a_candle_has_the_candles_tables_columns_in_order() -> None:
    # the rows the batcher hands the database adapters take them in this order
    assert CANDLE_COLUMNS == tuple(column.name for column in tables.candles.columns)


def _row(at: int, close: int) -> dict[str, int]:
    return {"open_time": at, "open": close, "high": close, "low": close, "close": close}


def test_klines_are_unbroken_a_quiet_interval_at_the_last_close_none_before_the_first() -> None:
    minute = 60_000
    rows = [_row(5 * minute, 120), _row(8 * minute, 85)]
    filled = gaps(rows, "1m", 0, 10 * minute, 100, None)  # nothing traded before minute 5
    assert [(c["open_time"] // minute, c["close"]) for c in filled] == [
        (5, 120), (6, 120), (7, 120), (8, 85), (9, 85), (10, 85),
    ]  # fmt: skip
    quiet = filled[1]
    assert (quiet["open"], quiet["high"], quiet["low"], quiet["volume"], quiet["trades"]) == (
        120, 120, 120, 0, 0,
    )  # fmt: skip
    # /v1/klines and the candle feed make a Candle of every row, quiet ones too
    shown = candle(quiet, "1m")
    assert (shown.first_seq, shown.last_seq, shown.close_time) == (
        NO_TRADE, NO_TRADE, 7 * minute - 1,
    )  # fmt: skip
    # a window that opens after a trade starts at once, at that trade's close
    assert [c["close"] for c in gaps([], "1m", 20 * minute, 22 * minute, 100, 85)] == [85] * 3
    assert [c["open_time"] for c in gaps(rows, "1m", 0, 10 * minute, 2, None)] == [
        5 * minute, 6 * minute,
    ]  # fmt: skip
    assert gaps([], "1m", 0, 10 * minute, 100, None) == []  # never traded
    months = gaps([_row(_ms(2026, 11, 1), 7)], "1M", _ms(2026, 11, 1), _ms(2027, 1, 1), 9, None)
    assert [c["open_time"] for c in months] == [_ms(2026, 11, 1), _ms(2026, 12, 1), _ms(2027, 1, 1)]
