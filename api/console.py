"""The operator console's data: GET /v1/admin/console, one snapshot of the exchange a second.

The snapshot (schema/console.py) is made ONCE per interval per API process, however many
consoles are open: one task reads Redis in two round trips (every figure `spot status`
shows, the rebalancer's view, the migrations, the batcher's last flush) and encodes the
snapshot once; every reader gets those bytes. The task starts with the first request and
stops once nobody has asked for IDLE_S, so a process that no console watches spends
nothing on it.

A reader asks with `?after=<at_ms of the snapshot it has>`: a newer one comes back at
once, else the request waits for the next (at most WAIT_S). Each reply says in its
`x-next-snapshot-ms` header how long until the next snapshot, so the page asks again just
after it is made: one short request a second, never faster than the data changes, and no
request that waits long (which would swell the latency histogram of the route, in
/metrics). Snapshots are made just after each whole second (OFFSET_S), when the router's
count of the second before is complete; `at_ms` lines up across API processes, so a page
whose next request lands on another process of the same API still gets the snapshot
after the one it has.

Admin tokens only (403 for a user's token). HTTP figures are this process's: with
SPOT_API_WORKERS > 1 each process reports its own requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from api.admin import migration_view
from api.auth import Authenticator
from api.errors import redis_not_serving
from api.market import Listing
from api.metrics import BUCKETS, Metrics
from api.request import JSON, Reply, admin, encode, error_reply, query, query_int
from api.rsgi import HTTPProtocol, Scope
from control import migration
from control.policy import Level
from schema import keys
from schema.codes import ApiError
from schema.console import (
    BatcherView,
    ConsoleSnapshot,
    Decision,
    Rates,
    RebalancerView,
    ShardSymbol,
    ShardView,
)
from schema.wire import MigrationView
from store import scripts

log = logging.getLogger("spot.api.console")

INTERVAL_S = 1.0  # one snapshot a second: the router counts orders per whole second
OFFSET_S = 0.1  # after the second: orders the router counted in it have landed by then
IDLE_S = 10.0  # no reader for this long: the snapshot task stops
WAIT_S = 3.0  # a long poll waits this long for the next snapshot, then answers the last
LAG_CAP = 10_000  # commands counted per shard; beyond, "at least"
DECISIONS_SHOWN = 20  # of the rebalancer's decision stream, newest first
RUNNING_SHOWN = 10  # running migrations (one per symbol at most)
FINISHED_SHOWN = 10  # finished migrations, newest first
AFTER = (0, 2**62, 0)  # ?after= bounds
STALE_MS = 2_500  # a running total not published for this long has not moved
# The console's own requests are long polls (seconds by design): left out of HTTP p99.
CONSOLE_ROUTES = ("/console", "/console/{file}", "/v1/admin/console")
NO_STORE = [*JSON, ("cache-control", "no-store")]
NEXT_HEADER = "x-next-snapshot-ms"  # how long until the next snapshot is made, in ms


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    return None if value is None or value == b"" or value == "" else int(value)


def _float(value: Any) -> float | None:
    return None if value is None or value == b"" or value == "" else float(value)


def quantile(counts: Sequence[int], bounds: Sequence[float], q: float) -> float | None:
    """The q-quantile of observations counted per bucket (not cumulative; `counts` has one
    more entry than `bounds`, +Inf), interpolated linearly inside its bucket as Prometheus'
    histogram_quantile does; the +Inf bucket answers the highest finite bound. None when
    nothing was counted."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]


class RunningRate:
    """A rate per second from readings (at_ms, total) of a running total that another
    process publishes now and then (a worker about once a second, the batcher at each
    flush). A reading no newer than the last keeps the last rate while it is fresh (a
    worker publishing every ~1.05 s would otherwise read as 0 every so often) and is 0
    once stale: nothing was published because nothing was done. None until two readings,
    and again after the total went down (its hash was made anew)."""

    __slots__ = ("reading", "rate")

    def __init__(self) -> None:
        self.reading: tuple[int, int] | None = None
        self.rate: float | None = None

    def update(self, reading: tuple[int, int] | None, now_ms: int) -> float | None:
        last, self.reading = self.reading, reading
        if reading is None or last is None or reading[1] < last[1] or reading[0] < last[0]:
            self.rate = None
        elif reading[0] > last[0]:
            self.rate = round((reading[1] - last[1]) * 1000 / (reading[0] - last[0]), 1)
        elif now_ms - reading[0] > STALE_MS:
            self.rate = 0.0
        return self.rate


@dataclass(frozen=True)
class Published:
    at_ms: int
    body: bytes | None  # the encoded snapshot; None when Redis failed it
    error: str = ""


class Console:
    """GET /v1/admin/console[?after=AT_MS] and the task that makes its snapshots."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        redis: Redis,
        listing: Listing,
        metrics: Metrics,
        shards: int,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.auth = auth
        self.redis = redis
        self.listing = listing
        self.metrics = metrics
        self.shards = shards
        self.interval_s = interval_s
        self.latest: Published | None = None
        self.snapshots = 0  # made since the process started (tests count them)
        self._published = asyncio.Event()  # set and replaced by each snapshot
        self._task: asyncio.Task[None] | None = None
        self._read_at = 0.0  # loop time of the last request
        # What the previous snapshot read, for rates: (at_ms, total) per counter.
        self._persisted, self._matched = RunningRate(), RunningRate()
        self._applied = [RunningRate() for _ in range(shards)]
        self._http: tuple[float, list[int]] | None = None  # (monotonic s, bucket counts)
        self._finished: dict[str, MigrationView] = {}  # finished migrations never change

    # -- the route ------------------------------------------------------------------------

    async def snapshot(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        admin(self.auth, scope)
        after = query_int(query(scope), "after", AFTER)
        loop = asyncio.get_running_loop()
        self._read_at = loop.time()
        if self._task is None:
            self._task = loop.create_task(self._run())
        latest = self.latest
        if latest is None or latest.at_ms <= after:
            published = self._published
            try:
                async with asyncio.timeout(WAIT_S):
                    await published.wait()
            except TimeoutError:
                pass
            latest = self.latest
        if latest is None:
            return error_reply(ApiError.UNAVAILABLE, "the console's first snapshot is not made yet")
        if latest.body is None:
            return error_reply(ApiError.UNAVAILABLE, latest.error)
        next_in_ms = latest.at_ms + round(self.interval_s * 1000) - time.time_ns() // 1_000_000
        return 200, latest.body, [*NO_STORE, (NEXT_HEADER, str(max(next_in_ms, 0)))]

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- the snapshot task ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await scripts.load(self.redis, scripts.SHARD_LAG)
        except RedisError as exc:
            log.warning("console: could not load its script (%r); retrying on use", exc)
        while loop.time() - self._read_at < IDLE_S:
            self._publish(await self._make())
            interval = self.interval_s
            await asyncio.sleep(interval - (time.time() - OFFSET_S) % interval)
        # Synchronously with the check above: a request from here on starts a new task.
        self._task = None
        self.latest = None  # stale by the time anyone asks again: the next reader waits
        self._http = None
        for rate in (self._persisted, self._matched, *self._applied):
            rate.update(None, 0)

    def _publish(self, published: Published) -> None:
        self.latest = published
        self.snapshots += 1
        event, self._published = self._published, asyncio.Event()
        event.set()

    async def _make(self) -> Published:
        at_ms = time.time_ns() // 1_000_000
        try:
            try:
                snapshot = await self.collect(at_ms)
            except NoScriptError:  # a Redis restarted or flushed of its scripts
                await scripts.load(self.redis, scripts.SHARD_LAG)
                snapshot = await self.collect(at_ms)
            return Published(at_ms, encode(snapshot))
        except RedisError as exc:
            if not redis_not_serving(exc):
                log.exception("console snapshot failed")
            return Published(at_ms, None, f"Redis is unavailable ({type(exc).__name__}), retry")
        except Exception:
            log.exception("console snapshot failed")
            return Published(at_ms, None, "the console's snapshot failed (logged), retry")

    async def collect(self, at_ms: int) -> ConsoleSnapshot:
        """Everything the console shows, read in two round trips."""
        second = at_ms // 1000 - 1  # the last whole second
        symbols = sorted(self.listing.market.specs)
        shards = range(self.shards)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(f"{keys.RATE}{second}")
        for symbol in symbols:
            pipe.hmget(keys.route(symbol), "shard", "status")
        for n in shards:
            pipe.exists(keys.owner(n))
        for n in shards:
            scripts.SHARD_LAG.queue(pipe, [keys.orders(n), keys.applied(n)], [LAG_CAP])
        pipe.hgetall(keys.SHARD_STATS)
        pipe.hgetall(keys.BATCHER_STATS)
        pipe.hgetall(keys.REBALANCER)
        pipe.xrevrange(keys.REBALANCER_DECISIONS, count=DECISIONS_SHOWN)
        pipe.zrevrange(keys.MIGRATIONS_RUNNING, 0, RUNNING_SHOWN - 1)
        pipe.zrevrange(keys.MIGRATIONS_FINISHED, 0, FINISHED_SHOWN - 1)
        replies = await pipe.execute()
        routed = {_text(s): int(n) for s, n in replies[0].items()}
        at = 1
        routes = replies[at : at + len(symbols)]
        at += len(symbols)
        owners = replies[at : at + self.shards]
        at += self.shards
        lags = replies[at : at + self.shards]
        at += self.shards
        shard_stats, batcher, rebalancer, decisions, running, finished = replies[at:]
        stats = {_text(k): _text(v) for k, v in shard_stats.items()}
        state = {_text(k): _text(v) for k, v in rebalancer.items()}
        by_shard: dict[int, list[ShardSymbol]] = {n: [] for n in shards}
        for symbol, (shard, status) in zip(symbols, routes, strict=True):
            if shard is not None and int(shard) in by_shard:
                by_shard[int(shard)].append(
                    ShardSymbol(
                        symbol=symbol,
                        migrating=status == b"MIGRATING",
                        orders_per_s=routed.get(symbol, 0),
                    )
                )
        views = [
            self._shard(n, by_shard[n], bool(owners[n]), lags[n], stats, state, at_ms)
            for n in shards
        ]
        return ConsoleSnapshot(
            at_ms=at_ms,
            interval_ms=round(self.interval_s * 1000),
            shards=views,
            batcher=_batcher(batcher),
            rates=self._rates(sum(routed.values()), batcher, at_ms),
            migrations=await self._migrations(running, finished),
            rebalancer=_rebalancer(state, decisions),
        )

    def _shard(
        self,
        n: int,
        symbols: list[ShardSymbol],
        owned: bool,
        lag: list[Any],
        stats: dict[str, str],
        state: dict[str, str],
        at_ms: int,
    ) -> ShardView:
        count, oldest = int(lag[0]), _text(lag[1])
        reading = None
        if f"{n}:at_ms" in stats:
            reading = (int(stats[f"{n}:at_ms"]), int(stats.get(f"{n}:commands", 0)))
        applied = self._applied[n].update(reading, at_ms)
        level = state.get(f"{n}:level")
        return ShardView(
            shard=n,
            owned=owned,
            orders_per_s=sum(s.orders_per_s for s in symbols),
            applied_per_s=applied,
            lag=count,
            lag_capped=count >= LAG_CAP,
            lag_ms=max(at_ms - int(oldest.partition("-")[0]), 0) if count else None,
            load=_float(state.get(f"{n}:load")),
            level=level if level in Level.__members__ else None,
            capacity=_int(state.get(f"{n}:capacity")),
            capacity_measured=state.get(f"{n}:measured") == "1",
            symbols=symbols,
        )

    def _rates(self, accepted: int, batcher: dict[bytes, bytes], at_ms: int) -> Rates:
        flushed = _int(batcher.get(b"at_ms"))
        orders = trades = None
        if flushed is not None:
            orders = (flushed, int(batcher.get(b"orders_total", 0)))
            trades = (flushed, int(batcher.get(b"trades_total", 0)))
        persisted = self._persisted.update(orders, at_ms)
        matched = self._matched.update(trades, at_ms)
        requests_per_s = p99_ms = None
        counts = [0] * (len(BUCKETS) + 1)
        for route in self.metrics.routes:
            if route.route not in CONSOLE_ROUTES:
                for i, n in enumerate(route.buckets):
                    counts[i] += n
        now = time.monotonic()
        if self._http is not None:
            then, before = self._http
            interval = [a - b for a, b in zip(counts, before, strict=True)]
            requests_per_s = round(sum(interval) / max(now - then, 1e-3), 1)
            p99 = quantile(interval, BUCKETS, 0.99)
            p99_ms = None if p99 is None else round(p99 * 1000, 2)
        self._http = (now, counts)
        return Rates(
            accepted=accepted,
            matched=matched,
            persisted=persisted,
            http_requests_per_s=requests_per_s,
            http_p99_ms=p99_ms,
        )

    async def _migrations(self, running: list[bytes], finished: list[bytes]) -> list[MigrationView]:
        """Running ones read afresh each time; a finished one once (it no longer changes)."""
        running_ids = [_text(i) for i in running]
        finished_ids = [_text(i) for i in finished]
        wanted = running_ids + [i for i in finished_ids if i not in self._finished]
        read: dict[str, MigrationView] = {}
        if wanted:
            pipe = self.redis.pipeline(transaction=False)
            for migration_id in wanted:
                pipe.hgetall(keys.migration(migration_id))
            for migration_id, raw in zip(wanted, await pipe.execute(), strict=True):
                if raw:  # else expired since it was indexed
                    fields = {_text(k): _text(v) for k, v in raw.items()}
                    read[migration_id] = migration_view(migration.described(fields, migration_id))
        self._finished = {
            i: self._finished.get(i) or read[i]
            for i in finished_ids
            if i in self._finished or i in read
        }
        return [read[i] for i in running_ids if i in read] + [
            self._finished[i] for i in finished_ids if i in self._finished
        ]


def _batcher(stats: dict[bytes, bytes]) -> BatcherView:
    return BatcherView(
        flushes=_int(stats.get(b"flushes")),
        last_flush_ms=_int(stats.get(b"at_ms")),
        flush_ms=_float(stats.get(b"flush_ms")),
        events=_int(stats.get(b"events")),
        lag_ms=_float(stats.get(b"lag_ms")),
        held_streams=_int(stats.get(b"held_streams")) or 0,
        held=_text(stats.get(b"held", b"")),
    )


def _rebalancer(state: dict[str, str], decisions: list[Any]) -> RebalancerView:
    return RebalancerView(
        at_ms=_int(state.get("at_ms")),
        code=state.get("code"),
        reason=state.get("reason"),
        dry_run=state.get("dry_run") == "1",
        evaluations=_int(state.get("evaluations")) or 0,
        moves=_int(state.get("moves")) or 0,
        moves_failed=_int(state.get("moves_failed")) or 0,
        decisions=[_decision(fields) for _, fields in decisions],
    )


def _decision(raw: dict[bytes, bytes]) -> Decision:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return Decision(
        at_ms=_int(fields.get("at_ms")) or 0,
        code=fields.get("code", ""),
        reason=fields.get("reason", ""),
        symbol=fields.get("symbol", ""),
        from_shard=_int(fields.get("from")),
        to_shard=_int(fields.get("to")),
    )
