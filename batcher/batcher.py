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

The database is PostgreSQL or MySQL, behind the port of store/database/: nothing here knows
which. Its faults are of two kinds (each adapter sorts its driver's errors): a transient
one (connection lost, deadlock, the server restarting) retries the same transaction until
it goes through; a refusal of the rows themselves (a value the column cannot hold) would
refuse every retry, so the flush is split until the entries the database refuses stand
alone, and each is quarantined - kept whole in the `quarantine` table with the error,
its stream's offset moved past it in the same transaction - while the rest is written.
`spot status` and /metrics name what was quarantined.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from batcher.changes import Changes
from batcher.rows import flush_rows, symbol_rows
from batcher.sequencing import Gap, Sequencer
from schema import keys
from schema.messages import Event
from schema.settings import Settings
from schema.streams import EventsEntry, LedgerEntry
from store.database import Database, Fault, Transaction, open_database, require_settings
from store.database.port import FlushRows, QuarantineRow
from store.scripts import EXPIRE_RECORDS
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
# Finished orders' records given their time to live per script call: 1,000 hold Redis ~1.3 ms
# (SLOWLOG, Redis 6.2), about what as many EXPIRE commands take it to run.
EXPIRE_CHUNK = 1000
# A transient database fault is retried after RETRY_FIRST_S, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
QUARANTINE_SHOWN = 100  # the newest quarantined entries kept in Redis for `spot status`
ERROR_CHARS = 1000  # of a refusal's message, kept with the quarantined entry

GC_YOUNG = 10_000  # allocations between young collections in a batcher process
CONSUMER = "batcher"  # whose offsets these are in consumer_offsets
T = TypeVar("T")
Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(slots=True)
class Admitted:
    """One entry taken into a flush, kept so that the flush can be written in parts."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    events: list[Event]  # as admitted: repeats dropped (none for the ledger)
    balances: list[tuple[str, str, int, int]]
    transfer: LedgerEntry | None = None


class Refused(Exception):
    """The database refused the rows (a DATA fault): retrying them cannot help."""


class Stopped(Exception):
    """Asked to stop while the database was away: the flush in hand is dropped, unwritten."""


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
    admitted: list[Admitted] = field(default_factory=list)  # in the order applied


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
        database: Database,
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
        self.database = database
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
        self.quarantined = 0  # entries in the quarantine table
        self.last_quarantined = ""
        self.stop: asyncio.Event | None = None  # set: give up retrying, stop

    @classmethod
    def from_settings(
        cls, redis: Any, database: Database, settings: Settings, shards: list[int]
    ) -> Batcher:
        return cls(
            redis,
            database,
            shards,
            batch=settings.batcher_batch,
            interval_s=settings.batcher_interval_s,
            finished_order_kept_s=settings.finished_order_kept_s,
        )

    async def start(self) -> None:
        """Check the server's settings (an error that names them, rather than a failed
        flush later), then read where the last run got to."""
        await require_settings(self.database)

        async def load(tx: Transaction) -> tuple[dict[str, str], dict[str, int | None], int]:
            await self._save_symbols(tx)
            quarantined = await tx.fetchval(
                "SELECT COUNT(*) FROM quarantine WHERE consumer = $1", CONSUMER
            )
            return await tx.offsets(CONSUMER), await tx.progress(), int(quarantined)

        stored, progress, self.quarantined = await self._transact(load)
        self.sequencer.load(progress)
        self.positions = {s: stored.get(s, "0-0") for s in self.streams}

    async def _save_symbols(self, tx: Transaction) -> None:
        specs = await load_specs(self.redis)
        await tx.save_symbols(symbol_rows(list(specs.values())), datetime.now(UTC))
        self.symbols = set(specs)

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        try:
            await self.start()
            while not stop.is_set():
                await self.step()
        except Stopped:
            log.info("stopped while the database was unavailable; the flush in hand is unwritten")

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
        entry_name = entry_id.decode()
        if stream == keys.LEDGER:
            transfer = LedgerEntry.from_fields(fields)
            flush.changes.add_transfer(
                entry_name, transfer.user, transfer.asset, transfer.amount, transfer.reference
            )
            flush.admitted.append(Admitted(stream, entry_name, fields, [], [], transfer))
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
            balances = settled.decode_balances()
            flush.changes.add_events(admitted)
            flush.changes.add_balances(balances)
            flush.admitted.append(Admitted(stream, entry_name, fields, admitted, balances))
            accepted_id = settled.first_id  # the worker batch's oldest order
        ms = int(accepted_id.partition(b"-")[0])
        flush.oldest_ms = ms if flush.oldest_ms is None else min(flush.oldest_ms, ms)
        flush.offsets[stream] = entry_name
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
        async def load(tx: Transaction) -> dict[str, int | None]:
            return await tx.progress(sorted(symbols))

        self.sequencer.load(await self._transact(load))

    async def flush(self, flush: Flush) -> None:
        started = time.perf_counter()
        applied = self.sequencer.applied
        progress = {symbol: applied[symbol] for symbol in flush.before}
        try:
            rejected = await self._rejected_records(flush.changes)
            try:
                written = await self._commit(
                    flush, flush.changes, rejected, flush.offsets, progress
                )
            except Refused as refusal:
                log.warning("the database refused a flush of %s entries (%s): writing it in "
                            "parts to find what it refuses", flush.entries, refusal)  # fmt: skip
                written = await self._commit_apart(flush, flush.admitted, rejected, refusal)
        except BaseException:
            self.sequencer.undo(flush.before)  # nothing of this flush was committed
            raise
        if not written:
            return
        self.positions.update(flush.offsets)
        self._log_refused()
        self.flushes += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        # The orders that ended are in the database now: their records leave Redis soon
        # (reads fall back to the database), so Redis holds open orders, not a day of history.
        await self._expire_records(flush.changes.finished())
        pipe = self.redis.pipeline(transaction=False)
        for stream, last in flush.offsets.items():
            pipe.xtrim(stream, minid=last, approximate=True)
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
            "quarantined": self.quarantined,
            "quarantined_last": self.last_quarantined,
            **self._hold_stats(),
        }
        pipe.hset(keys.BATCHER_STATS, mapping=stats)
        # Running totals, for rates (the operator console, api/console.py): order rows
        # and trades committed, kept in Redis so that a restart does not reset them.
        changes = flush.changes
        orders_written = len(changes.new_orders) + len(changes.rejected_places)
        pipe.hincrby(keys.BATCHER_STATS, "orders_total", orders_written)
        pipe.hincrby(keys.BATCHER_STATS, "trades_total", len(changes.trades))
        pipe.lpush(keys.BATCHER_FLUSHES, _json.encode(stats))
        pipe.ltrim(keys.BATCHER_FLUSHES, 0, 9_999)
        await pipe.execute()

    async def _expire_records(self, order_ids: list[int]) -> None:
        """EXPIRE_RECORDS on the ids, EXPIRE_CHUNK at a time: one script call holds Redis
        for every EXPIRE in it, and other clients wait meanwhile."""
        kept = self.finished_order_kept_s
        for start in range(0, len(order_ids), EXPIRE_CHUNK):
            ids = " ".join(map(str, order_ids[start : start + EXPIRE_CHUNK]))
            await EXPIRE_RECORDS.run(self.redis, args=(keys.ORDER, kept, ids))

    async def _commit(
        self,
        flush: Flush,
        changes: Changes,
        rejected: dict[int, dict[str, Any]],
        offsets: dict[str, str],
        progress: dict[str, int],
    ) -> bool:
        """One transaction: these changes, the offsets and the progress. False: another
        batcher moved the offsets (nothing written; the flush is undone by the caller)."""
        rows = flush_rows(changes, rejected, offsets, progress, datetime.now(UTC))
        new_symbols = {a.symbol for a in changes.new_orders.values()} - self.symbols
        return await self._write(flush, rows, new_symbols)

    async def _write(self, flush: Flush, rows: FlushRows, new_symbols: set[str]) -> bool:
        """False: another batcher moved the offsets; this one re-reads from theirs."""

        async def write(tx: Transaction) -> tuple[bool, dict[str, str]]:
            # Nothing here changes the batcher's state: the transaction may run again.
            if new_symbols:
                await self._save_symbols(tx)  # listed since this batcher started
            stored = await tx.lock_offsets(CONSUMER, self.streams)
            if all(stored.get(s) == last for s, last in rows.offsets.items()):
                return True, stored  # a commit whose answer was lost had landed
            if any(stored.get(s, "0-0") != self.positions[s] for s in rows.offsets):
                return False, stored
            await tx.write(CONSUMER, rows)
            return True, stored

        written, stored = await self._transact(write)
        if not written:
            log.warning("offsets moved under this batcher; re-reading from %s", stored)
            self.positions.update(stored)
            self.sequencer.undo(flush.before)
            flush.before.clear()

            async def progress(tx: Transaction) -> dict[str, int | None]:
                return await tx.progress()

            self.sequencer.load(await self._transact(progress))
        return written

    async def _commit_apart(
        self,
        flush: Flush,
        entries: list[Admitted],
        rejected: dict[int, dict[str, Any]],
        refusal: Refused,
    ) -> bool:
        """Write `entries` in two halves, each split again while the database refuses it,
        down to the single entries it refuses, which are quarantined. Each part commits
        on its own: the next starts from its offsets, with its symbols' progress."""
        if len(entries) == 1:
            return await self._quarantine(flush, entries[0], refusal)
        half = len(entries) // 2
        for part in (entries[:half], entries[half:]):
            changes = _changes_of(part)
            offsets = {entry.stream: entry.entry_id for entry in part}
            progress = _progress_of(part)
            mine = {k: v for k, v in rejected.items() if k in changes.rejected_places}
            try:
                written = await self._commit(flush, changes, mine, offsets, progress)
            except Refused as again:
                written = await self._commit_apart(flush, part, rejected, again)
            else:
                self._committed(flush, offsets, progress)
            if not written:
                return False
        return True

    async def _quarantine(self, flush: Flush, entry: Admitted, refusal: Refused) -> bool:
        """The entry, whole, into the quarantine table with the database's reason, and its
        stream's offset past it: in one transaction, as rows would have gone."""
        cause = refusal.__cause__ or refusal
        error = f"{type(cause).__name__}: {cause}".replace("\x00", "")[:ERROR_CHARS]
        offsets = {entry.stream: entry.entry_id}
        progress = _progress_of([entry])
        now = datetime.now(UTC)
        row = QuarantineRow(CONSUMER, entry.stream, entry.entry_id, error,
                            len(entry.events) or 1, _fields(entry.fields), now)  # fmt: skip
        rows = FlushRows(at=now, quarantine=[row], progress=progress, offsets=offsets)
        if not await self._write(flush, rows, set()):
            return False
        self._committed(flush, offsets, progress)
        self.quarantined += 1
        self.last_quarantined = f"{entry.stream} {entry.entry_id}: {error}"
        log.error(
            "quarantined %s entry %s (%s events): the database refused it: %s; it is in the "
            "quarantine table, the rest goes on", entry.stream, entry.entry_id,
            len(entry.events), error,
        )  # fmt: skip
        record = {"stream": entry.stream, "entry_id": entry.entry_id, "error": error,
                  "events": len(entry.events), "at_ms": int(now.timestamp() * 1000)}  # fmt: skip
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.BATCHER_QUARANTINE, _json.encode(record))
        pipe.ltrim(keys.BATCHER_QUARANTINE, 0, QUARANTINE_SHOWN - 1)
        await pipe.execute()
        return True

    def _committed(self, flush: Flush, offsets: dict[str, str], progress: dict[str, int]) -> None:
        """A part of the flush is in the database: from now on, undoing the flush goes back
        to here, and the next part is checked against these offsets."""
        self.positions.update(offsets)
        flush.before.update(progress)

    async def _transact(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """`await work(tx)` in a transaction, retried while the database's faults are
        transient (with a line in the log); a refusal of the rows raises Refused."""
        delay = RETRY_FIRST_S
        failures = 0
        while True:
            try:
                async with self.database.transaction() as tx:
                    result = await work(tx)
            except Exception as exc:
                fault = self.database.fault(exc)
                if fault is Fault.DATA:
                    raise Refused(str(exc)) from exc
                if fault is not Fault.TRANSIENT:
                    raise
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "%s unavailable (%s: %s); retrying (%s tries so far)",
                        self.database.server, type(exc).__name__, exc, failures,
                    )  # fmt: skip
                if self.stop is not None and self.stop.is_set():
                    raise Stopped from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if failures:
                log.warning("%s is back after %s failed tries", self.database.server, failures)
            return result

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
    import gc
    import signal

    import uvloop
    from redis.asyncio import Redis

    if settings.redis_url is None or settings.database_url is None:
        raise ValueError("a batcher needs SPOT_REDIS_URL and SPOT_DATABASE_URL")
    redis_url, database_url = settings.redis_url, settings.database_url

    async def main() -> None:
        # What the imports made (SQLAlchemy's tables, the drivers) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it, and
        # young collections come every GC_YOUNG allocations instead of 700 (a flush makes
        # a few objects an event, and the batcher holds no cycles worth the chasing).
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        redis = Redis.from_url(redis_url)
        database = await open_database(database_url, min_size=1, max_size=2, writer=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Batcher.from_settings(redis, database, settings, shards).run(stop)
        finally:
            await database.close()
            await redis.aclose()

    uvloop.run(main())


def _changes_of(entries: list[Admitted]) -> Changes:
    """The changes of some of a flush's entries, as if they had been a flush alone."""
    changes = Changes()
    for entry in entries:
        transfer = entry.transfer
        if transfer is not None:
            changes.add_transfer(entry.entry_id, transfer.user, transfer.asset,
                                 transfer.amount, transfer.reference)  # fmt: skip
        else:
            changes.add_events(entry.events)
            changes.add_balances(entry.balances)
    return changes


def _progress_of(entries: list[Admitted]) -> dict[str, int]:
    """Where the entries take each symbol: seqs only grow in the order entries apply."""
    progress: dict[str, int] = {}
    for entry in entries:
        for event in entry.events:
            if event.seq:
                progress[event.symbol] = event.seq
    return progress


_fields_encoder = msgspec.msgpack.Encoder()


def _fields(fields: dict[bytes, bytes]) -> bytes:
    return _fields_encoder.encode(fields)
