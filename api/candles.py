"""Candles read back: any interval from the batcher's one-minute rows (schema/tables.py
`candles`, batcher/candles.py), the rolling 24 h summary of a symbol, and trades by time
(a minute's seq range makes a time range of trades a range of their primary key).

Intervals start on UTC boundaries counted from the epoch, weeks on Mondays (Binance's
weekly candles), months on the 1st. The batcher writes a minute only when it has trades;
klines are Binance's unbroken series all the same: from the symbol's first trade to the
interval now running, an interval without trades is a candle at the last close with no
volume (a bot reads a missing candle as a market whose data stopped: freqtrade ignores a
pair whose newest candle is a few intervals old).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.history import History

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MONTH = "1M"
# interval -> (width ms, offset ms of its first boundary from the epoch); months apart
INTERVALS: dict[str, tuple[int, int]] = {
    "1m": (MINUTE_MS, 0),
    "3m": (3 * MINUTE_MS, 0),
    "5m": (5 * MINUTE_MS, 0),
    "15m": (15 * MINUTE_MS, 0),
    "30m": (30 * MINUTE_MS, 0),
    "1h": (HOUR_MS, 0),
    "2h": (2 * HOUR_MS, 0),
    "4h": (4 * HOUR_MS, 0),
    "6h": (6 * HOUR_MS, 0),
    "8h": (8 * HOUR_MS, 0),
    "12h": (12 * HOUR_MS, 0),
    "1d": (DAY_MS, 0),
    "3d": (3 * DAY_MS, 0),
    "1w": (7 * DAY_MS, 4 * DAY_MS),  # 1970-01-01 was a Thursday; the 5th, a Monday
}

_SUMS = """(array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high,
       min(low) AS low, (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume,
       sum(taker_buy_volume) AS taker_buy_volume,
       sum(taker_buy_quote_volume) AS taker_buy_quote_volume, sum(trades) AS trades,
       min(first_seq) AS first_seq, max(last_seq) AS last_seq"""
_FIXED = "(open_time - $4) / $5 * $5 + $4"
_MONTHLY = (
    "(extract(epoch FROM date_trunc('month', to_timestamp(open_time / 1000.0) "
    "AT TIME ZONE 'UTC')) * 1000)::bigint"
)


def _klines_query(monthly: bool) -> str:
    """$1 symbol, $2..$3 the range of minutes, the limit last ($4, or $6 after the fixed
    intervals' $4 offset and $5 width); oldest first."""
    bucket, limit = (_MONTHLY, "$4") if monthly else (_FIXED, "$6")
    return f"""
SELECT {bucket} AS open_time, {_SUMS}
FROM candles WHERE symbol = $1 AND open_time >= $2 AND open_time < $3
GROUP BY 1 ORDER BY 1 LIMIT {limit}"""


KLINES = {monthly: _klines_query(monthly) for monthly in (False, True)}

DAY = f"""
SELECT s.symbol, w.*, p.close AS prev_close
FROM unnest($1::text[]) AS s(symbol)
LEFT JOIN LATERAL (
    SELECT {_SUMS} FROM candles c WHERE c.symbol = s.symbol AND c.open_time >= $2
) AS w ON true
LEFT JOIN LATERAL (
    SELECT close FROM candles c
    WHERE c.symbol = s.symbol AND c.open_time < $2 ORDER BY c.open_time DESC LIMIT 1
) AS p ON true
"""

SEQ_RANGE = """
SELECT min(first_seq) AS first_seq, max(last_seq) AS last_seq FROM candles
WHERE symbol = $1 AND open_time >= $2 AND open_time <= $3
"""


def bucket_start(moment_ms: int, interval: str) -> int:
    """The start of the interval that holds `moment_ms`."""
    if interval == MONTH:
        day = datetime.fromtimestamp(moment_ms / 1000, UTC)
        return int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp() * 1000)
    width, offset = INTERVALS[interval]
    return (moment_ms - offset) // width * width + offset


def bucket_end(start_ms: int, interval: str) -> int:
    """The start of the interval after the one that starts at `start_ms`."""
    if interval == MONTH:
        day = datetime.fromtimestamp(start_ms / 1000, UTC)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return start_ms + INTERVALS[interval][0]


CLOSE_BEFORE = """
SELECT close FROM candles WHERE symbol = $1 AND open_time < $2 ORDER BY open_time DESC LIMIT 1
"""


async def klines(
    history: History,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    now_ms: int,
) -> list[Any]:
    """Candles of `interval` that start within start_ms..end_ms and by now_ms, oldest
    first, every interval from the symbol's first trade on (gaps(): a quiet one at the last
    close): the first `limit` from start_ms on, or without start_ms the newest `limit`."""
    last = bucket_start(now_ms if end_ms is None else min(end_ms, now_ms), interval)
    if start_ms is not None:
        first = bucket_start(start_ms, interval)
        low = first if first == start_ms else bucket_end(first, interval)
    else:  # the window of the newest `limit`, traded or not
        low = last
        for _ in range(limit - 1):
            if low <= 0:
                break
            low = bucket_start(low - 1, interval)
    if low > last:
        return []
    high = bucket_end(last, interval)
    # every traded interval of the window is among these: it holds at most `limit` intervals
    query = KLINES[interval == MONTH]
    if interval == MONTH:
        rows = await history.fetch(query, symbol, low, high, limit)
    else:
        width, offset = INTERVALS[interval]
        rows = await history.fetch(query, symbol, low, high, offset, width, limit)
    before = await history.fetch(CLOSE_BEFORE, symbol, low)
    return gaps(rows, interval, low, last, limit, before[0]["close"] if before else None)


def gaps(
    rows: list[Any], interval: str, low: int, last: int, limit: int, close: int | None
) -> list[Any]:
    """`rows` (traded intervals from `low` on, oldest first) with the intervals between
    them up to `last`, at most `limit`: an interval without trades is a candle at the last
    close, with no volume; none before the first trade (`close`: the last before `low`)."""
    traded = {row["open_time"]: row for row in rows}
    out: list[Any] = []
    at = low if close is not None or not rows else rows[0]["open_time"]
    while at <= last and len(out) < limit:
        row = traded.get(at)
        if row is not None:
            out.append(row)
            close = row["close"]
        elif close is not None:
            out.append(
                {
                    "open_time": at, "open": close, "high": close, "low": close,
                    "close": close, "volume": 0, "quote_volume": 0, "taker_buy_volume": 0,
                    "taker_buy_quote_volume": 0, "trades": 0,
                }
            )  # fmt: skip
        at = bucket_end(at, interval)
    return out


async def day_summaries(history: History, symbols: list[str], now_ms: int) -> dict[str, Any]:
    """Each symbol's last 24 hours (from the minute 24 h ago), and the close before them."""
    since = bucket_start(now_ms - DAY_MS, "1m")
    rows = await history.fetch(DAY, symbols, since)
    return {row["symbol"]: row for row in rows}


async def seq_range(
    history: History, symbol: str, start_ms: int, end_ms: int
) -> tuple[int, int] | None:
    """The seq range of the symbol's trades written within start_ms..end_ms (a superset
    by up to a minute each end), or None when there are none."""
    rows = await history.fetch(SEQ_RANGE, symbol, bucket_start(start_ms, "1m"), end_ms)
    if not rows or rows[0]["first_seq"] is None:
        return None
    return rows[0]["first_seq"], rows[0]["last_seq"]
