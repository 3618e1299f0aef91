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
    by_symbol: dict[str, list[Trade]] = {}
    for t in trades:
        same = by_symbol.get(t.symbol)
        if same is None:
            by_symbol[t.symbol] = [t]
        else:
            same.append(t)
    return [_candle(symbol, minute, same) for symbol, same in by_symbol.items()]


def _candle(symbol: str, minute: int, trades: list[Trade]) -> Candle:
    """One symbol's trades summed in locals: updating a Candle's attributes and calling
    max() and min() for each trade cost ~5,000 instructions a trade, more than its row."""
    first = trades[0]
    open_ = high = low = close = first.price
    first_seq = last_seq = first.seq
    volume = quote_volume = buy_volume = buy_quote_volume = 0
    for t in trades:
        price, quantity, seq = t.price, t.quantity, t.seq
        notional = price * quantity
        if price > high:
            high = price
        elif price < low:
            low = price
        if seq < first_seq:
            first_seq, open_ = seq, price
        elif seq > last_seq:
            last_seq, close = seq, price
        volume += quantity
        quote_volume += notional
        if t.taker_side is Side.BUY:
            buy_volume += quantity
            buy_quote_volume += notional
    return Candle(
        symbol, minute, open_, high, low, close, volume, quote_volume, buy_volume,
        buy_quote_volume, len(trades), first_seq, last_seq,
    )  # fmt: skip
