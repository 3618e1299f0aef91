"""One-minute candles from a flush's trades. Pure: no I/O.

A flush's trades all carry the flush's time as their created_at, so they fall in one
minute: per symbol they make one candle, which the database adapter (store/database/) adds
to the minute's row (a minute spans many flushes). Open and close go by seq, not by
arrival: the row keeps the price of its lowest and highest seq, whichever flush brought
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from schema.messages import Side, Trade

MINUTE_MS = 60_000


@dataclass
class Candle:
    symbol: str
    open_time: int  # ms, the minute's start
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    trades: int
    first_seq: int
    last_seq: int


# In Candle's field order: the candles table's columns (the port's CANDLE_COLUMNS).
CANDLE_COLUMNS: tuple[str, ...] = tuple(Candle.__dataclass_fields__)


def minute_candles(trades: list[Trade], now_ms: int) -> list[Candle]:
    """The candles of `trades`, one per symbol, in the minute of `now_ms`."""
    minute = now_ms - now_ms % MINUTE_MS
    candles: dict[str, Candle] = {}
    for t in trades:
        notional = t.price * t.quantity
        bought = t.taker_side is Side.BUY
        c = candles.get(t.symbol)
        if c is None:
            candles[t.symbol] = Candle(
                t.symbol, minute, t.price, t.price, t.price, t.price, t.quantity, notional,
                t.quantity if bought else 0, notional if bought else 0, 1, t.seq, t.seq,
            )  # fmt: skip
            continue
        c.high = max(c.high, t.price)
        c.low = min(c.low, t.price)
        if t.seq < c.first_seq:
            c.first_seq, c.open = t.seq, t.price
        if t.seq > c.last_seq:
            c.last_seq, c.close = t.seq, t.price
        c.volume += t.quantity
        c.quote_volume += notional
        if bought:
            c.taker_buy_volume += t.quantity
            c.taker_buy_quote_volume += notional
        c.trades += 1
    return list(candles.values())
