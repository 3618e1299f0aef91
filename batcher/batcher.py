"""The batcher: `events:{shard}` and the ledger stream → the database, every 100 ms.

It reads each stream from the offset the database holds, gathers until the batch is
full or its oldest order was accepted an interval ago, and writes one transaction per
flush, offsets included; then trims what it has passed from the streams. A redelivered
entry (a crash between commit and the next read) is at or below the stored offset and
is skipped.

Each symbol's events are applied in sequence order across streams (batcher/sequencing.py):
after a hot-shard migration a symbol's newer events are in another stream than its older
ones, and order rows do not commute. A stream whose next entry would skip a symbol's seq
waits there (its offset stays before the entry, which is read again) while the others go
on; the database keeps each symbol's last applied seq with the rows (`symbol_progress`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed
import msgspec

from batcher import postgres
from batcher.changes import Changes
from batcher.sequencing import Gap, Sequencer
from schema import keys
from schema.messages import Event
from schema.settings import Settings
from schema.streams import EventsEntry, LedgerEntry
from store.db import POOL_SETTINGS
from store.symbols import load_specs

log = logging.getLogger("spot.batcher")

_json = msgspec.json.Encoder()
# Defaults of Batcher's tunables (Batcher.from_settings fills what Settings has).
READ_ENTRIES = 100  # stream entries per XREAD; a worker's entry holds a whole batch of events
# A read that brought fewer than GATHER_BELOW events (and ledger rows) is followed by a
# pause of up to GATHER_S, within the flush's window, before the next: under light load
# each worker batch woke the batcher on its own, and the wake-ups were most of its CPU.
# Issue #5, Locust on 2 cores, 3-run medians, with the window from the oldest order: CPU
# per order 202 -> 76 µs at 800 orders/s, 153 -> 63 µs at 1,000.
GATHER_BELOW = 200
GATHER_S = 0.02
# A stream waiting on a gap longer than this is logged: a migration's two halves are both
# in Redis before the newer one can be read, so a wait that lasts means events went missing
# (or another batcher that owns the older stream is down).
HOLD_WARN_S = 5.0
HOLD_STATS_INTERVAL_S = 1.0  # how often the stats show a wait while nothing is flushed
FINISHED_ORDER_KEPT_S = 10  # a finished order's record in Redis once committed (Settings)

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class Flush:
    changes: Changes = field(default_factory=Changes)
    offsets: dict[str, str] = field(default_factory=dict)  # the last entry applied, per stream
    entries: int = 0
    oldest_ms: int | None = None  # the oldest entry's stream time: how stale the flush is
    # symbol -> its seq before this flush (None: not known), for every symbol it advances
    before: dict[str, int | None] = field(default_factory=dict)
    gaps: dict[str, tuple[bytes, Gap]] = field(default_factory=dict)  # stream -> (entry, gap)
    # events of entries that waited, decoded once: (stream, entry id) -> events
    decoded: dict[tuple[str, bytes], list[Event]] = field(default_factory=dict)


@dataclass
class Hold:
    """A stream waiting at `entry_id` since `since` (monotonic seconds)."""

    entry_id: bytes
    gap: Gap
    since: float
    warned: bool = False


class Batcher:
    """Every tunable is a keyword with its production default, so a test builds exactly
    the batcher it needs; `from_settings` is where a process fills them."""

    def __init__(
        self,
        redis: Any,
        pool: asyncpg.Pool,
        shards: list[int],
        *,
        batch: int = 500,
        interval_s: float = 0.1,
        read_entries: int = READ_ENTRIES,
        gather_below: int = GATHER_BELOW,
        gather_s: float = GATHER_S,
        hold_warn_s: float = HOLD_WARN_S,
        hold_stats_interval_s: float = HOLD_STATS_INTERVAL_S,
        finished_order_kept_s: int = FINISHED_ORDER_KEPT_S,
    ) -> None:
        self.redis = redis
        self.pool = pool
        # The ledger has one writer: whichever batcher has shard 0, so that several
        # batchers (each on its own shards) can share the work.
        self.streams = [keys.events(n) for n in shards] + ([keys.LEDGER] if 0 in shards else [])
        self.batch = batch
        self.interval_s = interval_s
        self.read_entries = read_entries
        self.gather_below = gather_below
        self.gather_s = gather_s
        self.hold_warn_s = hold_warn_s
        self.hold_stats_interval_s = hold_stats_interval_s
        self.finished_order_kept_s = finished_order_kept_s
        self.positions: dict[str, str] = {}
        self.symbols: set[str] = set()
        self.flushes = 0
        self.sequencer = Sequencer()
        self.holds: dict[str, Hold] = {}  # stream -> what it waits on
        self._holds_published_at = 0.0
        self._refused_logged = 0

    @classmethod
    def from_settings(
        cls, redis: Any, pool: asyncpg.Pool, settings: Settings, shards: list[int]
    ) -> Batcher:
        return cls(
            redis,
            pool,
            shards,
            batch=settings.batcher_batch,
            interval_s=settings.batcher_interval_s,
            finished_order_kept_s=settings.finished_order_kept_s,
        )

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            stored = await postgres.load_offsets(conn)
            await self._save_symbols(conn)
            self.sequencer.load(await postgres.load_progress(conn))
        self.positions = {s: stored.get(s, "0-0") for s in self.streams}

    async def _save_symbols(self, conn: asyncpg.Connection) -> None:
        specs = await load_specs(self.redis)
        await postgres.save_symbols(conn, list(specs.values()))
        self.symbols = set(specs)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        while not stop.is_set():
            await self.step()

    async def step(self) -> int:
        """Gather until the oldest order gathered is one interval old (or `batch` events
        are in hand), then flush; returns entries.

        The window runs from the oldest order's acceptance, not from when gathering began:
        entries that arrived during the previous flush would otherwise wait that flush plus
        a whole interval. What a full read shows is already waiting is still taken."""
        if self.holds:
            # Another batcher may have filled the gap since: its streams are not ours.
            await self._reload_progress({hold.gap.symbol for hold in self.holds.values()})
        flush = Flush()
        reading: dict[str, bytes | str] = dict(self.positions)  # where the next XREAD starts
        queues: dict[str, deque[Entry]] = {}  # entries read and not applied yet, per stream
        deadline = time.monotonic() + self.interval_s
        backlog = False  # the last read filled `read_entries`: more is waiting already
        while (size := flush.changes.events + len(flush.changes.ledger)) < self.batch:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and not backlog:
                break
            # A waiting stream is not read further: nothing behind its gap can go first.
            positions = {s: reading[s] for s in self.streams if not queues.get(s)}
            if not positions:  # every stream waits: only another batcher can fill the gaps
                await asyncio.sleep(max(left_ms, 0) / 1000)
                break
            # BLOCK 0 would wait for ever: past the window only what is there is read.
            block = left_ms if left_ms > 0 else None
            reply = await self.redis.xread(positions, count=self.read_entries, block=block)
            if not reply:
                break
            backlog = False
            for stream, entries in reply:
                name = stream.decode()
                reading[name] = entries[-1][0]
                queues.setdefault(name, deque()).extend(entries)
                backlog = backlog or len(entries) == self.read_entries
            self._apply_ready(flush, queues)
            deadline = min(deadline, self._window_end(flush))
            read = flush.changes.events + len(flush.changes.ledger) - size
            if not backlog and read < self.gather_below:
                await asyncio.sleep(min(self.gather_s, max(deadline - time.monotonic(), 0.0)))
        self._note_holds(flush, queues)
        if flush.entries:
            await self.flush(flush)
        elif self.holds:
            await self._publish_holds()
        return flush.entries

    def _window_end(self, flush: Flush) -> float:
        """When (monotonic) the flush's oldest order is one interval old. Stream ids are
        the Redis server's clock: one ahead of ours only leaves the window where it was."""
        if flush.oldest_ms is None:
            return math.inf
        return time.monotonic() + flush.oldest_ms / 1000 + self.interval_s - time.time()

    def _apply_ready(self, flush: Flush, queues: dict[str, deque[Entry]]) -> None:
        """Each stream's entries in order until one waits on a gap; then the waiting
        streams again while any stream got further, so that a flush holding both halves
        of a migrated symbol applies them in order."""
        progress = True
        while progress:
            progress = False
            for stream, queue in queues.items():
                while queue and self._apply_entry(flush, stream, queue[0]):
                    queue.popleft()
                    progress = True

    def _apply_entry(self, flush: Flush, stream: str, entry: Entry) -> bool:
        """Add one entry to the flush, whole, unless it waits on a gap (False)."""
        entry_id, fields = entry
        if stream == keys.LEDGER:
            transfer = LedgerEntry.from_fields(fields)
            flush.changes.add_transfer(
                entry_id.decode(),
                transfer.user,
                transfer.asset,
                transfer.amount,
                transfer.reference,
            )
            accepted_id = entry_id
        else:
            settled = EventsEntry.from_fields(fields)
            events = flush.decoded.pop((stream, entry_id), None)
            if events is None:
                events = settled.decode_events()
            admitted = self.sequencer.admit(events, flush.before)
            if isinstance(admitted, Gap):
                flush.decoded[(stream, entry_id)] = events
                flush.gaps[stream] = (entry_id, admitted)
                return False
            flush.changes.add_events(admitted)
            flush.changes.add_balances(settled.decode_balances())
            accepted_id = settled.first_id  # the worker batch's oldest order
        ms = int(accepted_id.partition(b"-")[0])
        flush.oldest_ms = ms if flush.oldest_ms is None else min(flush.oldest_ms, ms)
        flush.offsets[stream] = entry_id.decode()
        flush.entries += 1
        return True

    def _note_holds(self, flush: Flush, queues: dict[str, deque[Entry]]) -> None:
        """Which streams wait, since when; a wait past `hold_warn_s` is logged once."""
        now = time.monotonic()
        holds = {}
        for stream, queue in queues.items():
            if not queue:
                continue
            entry_id, gap = flush.gaps[stream]
            hold = self.holds.get(stream)
            if hold is None or hold.entry_id != entry_id:
                hold = Hold(entry_id, gap, now)
            hold.gap = gap
            holds[stream] = hold
            if not hold.warned and now - hold.since >= self.hold_warn_s:
                hold.warned = True
                log.warning(
                    "%s has waited %.1f s at entry %s: %s needs seq %s next, the entry has "
                    "seq %s; the events between are in no stream this batcher has read",
                    stream, now - hold.since, entry_id.decode(), gap.symbol, gap.expected,
                    gap.found,
                )  # fmt: skip
        self.holds = holds

    def _hold_stats(self) -> dict[str, Any]:
        if not self.holds:
            return {"held_streams": 0, "held_ms": 0, "held": ""}
        now = time.monotonic()
        stream, hold = min(self.holds.items(), key=lambda item: item[1].since)
        gap = hold.gap
        return {
            "held_streams": len(self.holds),
            "held_ms": round((now - hold.since) * 1000),
            "held": f"{stream} waits for {gap.symbol} seq {gap.expected} (has {gap.found})",
        }

    async def _publish_holds(self) -> None:
        """Nothing to flush, yet streams wait: keep the stats saying so (throttled)."""
        now = time.monotonic()
        if now - self._holds_published_at < self.hold_stats_interval_s:
            return
        self._holds_published_at = now
        await self.redis.hset(keys.BATCHER_STATS, mapping=self._hold_stats())

    async def _reload_progress(self, symbols: set[str]) -> None:
        async with self.pool.acquire() as conn:
            self.sequencer.load(await postgres.load_progress(conn, sorted(symbols)))

    async def flush(self, flush: Flush) -> None:
        started = time.perf_counter()
        applied = self.sequencer.applied
        progress = {symbol: applied[symbol] for symbol in flush.before}
        try:
            rejected = await self._rejected_records(flush.changes)
            async with self.pool.acquire() as conn, conn.transaction():
                if {a.symbol for a in flush.changes.new_orders.values()} - self.symbols:
                    await self._save_symbols(conn)  # listed since this batcher started
                stored = await postgres.load_offsets(conn, self.streams, lock=True)
                if any(stored.get(s, "0-0") != self.positions[s] for s in flush.offsets):
                    # Another batcher moved the offsets: re-read from what the database holds.
                    log.warning("offsets moved under this batcher; re-reading from %s", stored)
                    self.positions.update(stored)
                    self.sequencer.undo(flush.before)
                    self.sequencer.load(await postgres.load_progress(conn))
                    return
                await postgres.write(conn, flush.changes, rejected, flush.offsets, progress)
        except BaseException:
            self.sequencer.undo(flush.before)  # nothing of this flush was committed
            raise
        self.positions.update(flush.offsets)
        self._log_refused()
        self.flushes += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        pipe = self.redis.pipeline(transaction=False)
        for stream, last in flush.offsets.items():
            pipe.xtrim(stream, minid=last, approximate=True)
        # An order that ended is in the database now: its record leaves Redis soon (reads
        # fall back to the database), so Redis holds open orders, not a day of history.
        for order_id in flush.changes.finished():
            pipe.expire(keys.order(order_id), self.finished_order_kept_s)
        # From the oldest order's acceptance to its rows committed: the flush's worst case.
        lag_ms = time.time() * 1000 - (flush.oldest_ms or 0)
        stats = {
            "flushes": self.flushes,
            "entries": flush.entries,
            "events": flush.changes.events,
            "flush_ms": round(elapsed_ms, 2),
            "lag_ms": round(lag_ms, 1),
            "at_ms": int(time.time() * 1000),
            "refused": self.sequencer.refused,
            **self._hold_stats(),
        }
        pipe.hset(keys.BATCHER_STATS, mapping=stats)
        # Running totals, for rates (the operator console, api/console.py): order rows
        # and trades committed, kept in Redis so that a restart does not reset them.
        changes = flush.changes
        written = len(changes.new_orders) + len(changes.rejected_places)
        pipe.hincrby(keys.BATCHER_STATS, "orders_total", written)
        pipe.hincrby(keys.BATCHER_STATS, "trades_total", len(changes.trades))
        pipe.lpush(keys.BATCHER_FLUSHES, _json.encode(stats))
        pipe.ltrim(keys.BATCHER_FLUSHES, 0, 9_999)
        await pipe.execute()

    def _log_refused(self) -> None:
        """Events at or below their symbol's applied seq were dropped: it must not happen
        (each seq is emitted once, into one stream), so say so, once per flush."""
        refused = self.sequencer.refused
        if refused != self._refused_logged and self.sequencer.last_refused is not None:
            symbol, seq, last = self.sequencer.last_refused
            log.warning(
                "refused %s events already applied (the last: %s seq %s, applied up to %s)",
                refused - self._refused_logged, symbol, seq, last,
            )  # fmt: skip
            self._refused_logged = refused

    async def _rejected_records(self, changes: Changes) -> dict[int, dict[str, Any]]:
        """The order records of rejected places: the event says why, the record what."""
        if not changes.rejected_places:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for order_id in changes.rejected_places:
            pipe.hgetall(keys.order(order_id))
        records = {}
        for (order_id, event), raw in zip(
            changes.rejected_places.items(), await pipe.execute(), strict=True
        ):
            if not raw:
                log.error("order %s was rejected but has no record; not persisted", order_id)
                continue
            record = {k.decode(): v.decode() for k, v in raw.items()}
            record["reason"] = event.reason.value
            records[order_id] = record
        return records


def run_batcher(settings: Settings, shards: list[int]) -> None:
    """A batcher process: SIGTERM or SIGINT finish the flush in hand and stop."""
    import signal

    import uvloop
    from redis.asyncio import Redis

    if settings.redis_url is None or settings.database_url is None:
        raise ValueError("a batcher needs SPOT_REDIS_URL and SPOT_DATABASE_URL")
    redis_url, database_url = settings.redis_url, settings.database_url

    async def main() -> None:
        redis = Redis.from_url(redis_url)
        pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=2, server_settings=POOL_SETTINGS
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Batcher.from_settings(redis, pool, settings, shards).run(stop)
        finally:
            await pool.close()
            await redis.aclose()

    uvloop.run(main())
