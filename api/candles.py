"""Candles read back: any interval from the batcher's one-minute rows (schema/tables.py
`candles`, batcher/candles.py), the rolling 24 h summary of a symbol, and trades by time
(a minute's seq range makes a time range of trades a range of their primary key).

Intervals start on UTC boundaries counted from the epoch, weeks on Mondays (Binance's
weekly candles), months on the 1st. The batcher writes a minute only when it has trades;
klines are Binance's unbroken series all the same: from the symbol's first trade to the
interval now running, an interval without trades is a candle at the last close with no
volume (a bot reads a missing candle as a market whose data stopped: freqtrade ignores a
pair whose newest candle is a few intervals old).

Served as GET /v1/klines (KlineRoutes), GET /api/v3/klines (api/binance/market.py), and
live (CandleFeed) on /v1/ws `klines:{symbol}:{interval}` and Binance's
`<symbol>@kline_<interval>` streams: the feed reads the newest candles back from this same
table once a second while a watched symbol has traded since, so every surface shows the
batcher's one aggregation, never one of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.errors import HTTPError, malformed
from api.history import History
from api.market import Listing
from api.request import JSON, Reply, encode, now_ms, query, query_int, query_text
from api.rsgi import HTTPProtocol, Scope
from schema.wire import Candle, Klines

log = logging.getLogger("spot.api.candles")

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


NO_TRADE = -1  # first_seq/last_seq of an interval without trades (Binance's kline f/L)


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
                    "first_seq": NO_TRADE, "last_seq": NO_TRADE,
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


def is_interval(interval: str) -> bool:
    return interval in INTERVALS or interval == MONTH


def candle(row: Any, interval: str) -> Candle:
    """A row of `klines` as the /v1 record (the sums are numerics: Decimals to int)."""
    return Candle(
        open_time=row["open_time"],
        close_time=bucket_end(row["open_time"], interval) - 1,
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=int(row["volume"]),
        quote_volume=int(row["quote_volume"]),
        taker_buy_volume=int(row["taker_buy_volume"]),
        taker_buy_quote_volume=int(row["taker_buy_quote_volume"]),
        trades=int(row["trades"]),
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
    )


KLINES_LIMIT = (1, 1000, 500)
TIME_LIMIT = (0, 10**14, 0)  # ms since the epoch (translate.MAX_TIME_MS)


class KlineRoutes:
    """GET /v1/klines?symbol=&interval=&start_ms=&end_ms=&limit=, in minor units."""

    def __init__(self, listing: Listing, history: History) -> None:
        self.listing = listing
        self.history = history

    async def klines(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        params = query(scope)
        symbol = query_text(params, "symbol")
        if symbol is None:
            raise malformed("symbol is required")
        self.listing.listed(symbol)
        interval = query_text(params, "interval") or ""
        if not is_interval(interval):
            raise malformed(f"interval must be one of {', '.join([*INTERVALS, MONTH])}")
        limit = query_int(params, "limit", KLINES_LIMIT)
        start = query_int(params, "start_ms", TIME_LIMIT) if "start_ms" in params else None
        end = query_int(params, "end_ms", TIME_LIMIT) if "end_ms" in params else None
        rows = await klines(self.history, symbol, interval, start, end, limit, now_ms())
        body = Klines(symbol=symbol, interval=interval, klines=[candle(r, interval) for r in rows])
        return 200, encode(body), JSON


# -- live -------------------------------------------------------------------------------------

FEED_S = 1.0  # Binance pushes a kline every 1-2 s; the batcher writes every 100 ms

# (symbol, interval, the candle, whether its interval is over)
CandleSink = Callable[[str, str, Candle, bool], None]


@dataclass
class _Watched:
    listeners: int = 0
    upto: int = 0  # the last trade seq the candles read back held
    sent: tuple[int, int, bool] | None = None  # open_time, last_seq, closed of the last push
    force: bool = True  # push the newest candle even if unchanged (a new listener)


class CandleFeed:
    """The newest candles of the watched (symbol, interval)s, read back from the candles
    table once every FEED_S while the symbol traded since (its trade seq is ahead of what
    the last read held) or the last candle pushed has ended, and pushed to `sink`: each
    change, and a candle once more, `closed`, when its interval is over. One task per API
    process, running while anything is watched."""

    def __init__(self, history: History, sink: CandleSink, *, every_s: float = FEED_S) -> None:
        self._history = history
        self._sink = sink
        self._every_s = every_s
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._traded: dict[str, int] = {}  # symbol -> the seq of its last trade seen
        self._task: asyncio.Task[None] | None = None

    def watch(self, symbol: str, interval: str) -> None:
        watched = self._watched.setdefault((symbol, interval), _Watched())
        watched.listeners += 1
        watched.force = True
        if self._task is None:
            self._task = asyncio.create_task(self._forever())

    def unwatch(self, symbol: str, interval: str) -> None:
        watched = self._watched.get((symbol, interval))
        if watched is not None:
            watched.listeners -= 1
            if watched.listeners <= 0:
                del self._watched[symbol, interval]

    def traded(self, symbol: str, seq: int) -> None:
        """A trade event of `symbol` (the fan-out calls this for every trade it reads)."""
        self._traded[symbol] = seq

    async def _forever(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(self._every_s)
                for key in list(self._watched):
                    try:
                        await self._poll(*key)
                    except HTTPError as exc:  # no database, or it is down: next time
                        log.warning("candles unavailable: %s", exc.message)
                        break
                    except Exception:  # one symbol's failure must not end every feed
                        log.exception("candles of %s %s failed", *key)
        finally:
            self._task = None

    async def _poll(self, symbol: str, interval: str) -> None:
        watched = self._watched.get((symbol, interval))
        if watched is None:
            return
        now = now_ms()
        sent = watched.sent
        ended = sent is not None and not sent[2] and bucket_end(sent[0], interval) <= now
        if not (watched.force or ended or self._traded.get(symbol, 0) > watched.upto):
            return
        rows = await klines(self._history, symbol, interval, None, None, 2, now)
        if (symbol, interval) not in self._watched:
            return
        force, watched.force = watched.force, False
        for i, row in enumerate(rows):
            closed = i < len(rows) - 1 or bucket_end(row["open_time"], interval) <= now
            state = (row["open_time"], row["last_seq"], closed)
            if sent is not None and (state[0] < sent[0] or (state == sent and not force)):
                continue
            watched.sent = state
            watched.upto = max(watched.upto, row["last_seq"])
            self._sink(symbol, interval, candle(row, interval), closed)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
