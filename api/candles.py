"""Candles read back: any interval from the batcher's one-minute rows (schema/tables.py
`candles`, batcher/candles.py), the rolling 24 h summary of a symbol, and trades by time
(a minute's seq range makes a time range of trades a range of their primary key).

Intervals start on UTC boundaries counted from the epoch, weeks on Mondays (Binance's
weekly candles), months on the 1st. Only intervals with trades have a candle.
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


def _klines_query(monthly: bool, ascending: bool) -> str:
    """$1 symbol, $2..$3 the range of minutes, the limit last ($4, or $6 after the fixed
    intervals' $4 offset and $5 width)."""
    bucket, limit = (_MONTHLY, "$4") if monthly else (_FIXED, "$6")
    return f"""
SELECT {bucket} AS open_time, {_SUMS}
FROM candles WHERE symbol = $1 AND open_time >= $2 AND open_time < $3
GROUP BY 1 ORDER BY 1 {"ASC" if ascending else "DESC"} LIMIT {limit}"""


KLINES = {(m, a): _klines_query(m, a) for m in (False, True) for a in (False, True)}

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


async def klines(
    history: History,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[Any]:
    """Candles of `interval` that start within start_ms..end_ms, oldest first: the first
    `limit` from start_ms on, or without start_ms the newest `limit`."""
    low = 0
    if start_ms is not None:
        first = bucket_start(start_ms, interval)
        low = first if first == start_ms else bucket_end(first, interval)
    high = 2**62 if end_ms is None else bucket_end(bucket_start(end_ms, interval), interval)
    query = KLINES[interval == MONTH, start_ms is not None]
    if interval == MONTH:
        rows = await history.fetch(query, symbol, low, high, limit)
    else:
        width, offset = INTERVALS[interval]
        rows = await history.fetch(query, symbol, low, high, offset, width, limit)
    return rows if start_ms is not None else rows[::-1]


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
