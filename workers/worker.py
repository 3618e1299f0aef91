"""The shard worker: reads `orders:{shard}`, applies commands to the books, settles.

One read of the streams becomes one Redis round trip: per shard, a script that checks
this worker still holds the shard's lease, skips the batch if the shard's watermark says
it was already settled, else moves the balances, updates the order records, appends the
events to `events:{shard}` and advances the watermark, all atomically; market data
(depth, last price, recent trades) rides in the same pipeline.

Crash recovery: restore the last snapshot (books + the stream id it was taken at),
re-apply the stream up to the watermark to the books only (those effects are already
in Redis), then carry on. The books are deterministic, so the re-applied commands
rebuild exactly the state that was lost.

Hot-shard migration (DESIGN.md §4, control/migration.py) reaches a worker as control
entries in its stream, ordered with the commands (schema.streams.ControlEntry):
DRAIN hands a symbol's book over through `handoff:{migration}` and drops it, ADOPT
takes a handed-over book. Which symbols a shard gave away or took at which route epoch
is kept in `Shard.owners` (and in the snapshot): a command for a symbol the shard gave
away, or queued under an older epoch than the one it took it at, is rejected as
STALE_ROUTE rather than applied to an empty book.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from schema import keys
from schema.codes import RejectReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    CancelAll,
    Command,
    Event,
    Expire,
    Place,
    Rejected,
    Replace,
    Side,
    Trade,
)
from schema.settings import Settings
from schema.streams import CommandEntry, Control, ControlEntry, is_control
from schema.symbols import SymbolSpec
from store import scripts
from store.pipeline import Batch, PipelinedRedis, xread
from store.scripts import ADOPTED, CLAIM, RELEASE, RENEW, SETTLE, STORE_HANDOFF, WORKER_SCRIPTS
from workers.book import BookSnapshot, OrderBook
from workers.engine import MatchingEngine
from workers.settlement import Settlement
from workers.snapshots import decode_books, decode_handoff, encode_books, encode_handoff

log = logging.getLogger("spot.worker")

# Defaults of Worker's tunables (Worker.from_settings fills what Settings has).
LEASE_MS = 3_000  # how long a crashed worker's shards wait for a new owner
DEPTH_LEVELS = 50
RECENT_TRADES = 100
DEPTH_INTERVAL_S = 0.05
# After a read that brought fewer than GATHER_BELOW entries the worker pauses GATHER_S
# before the next, so that orders gather into one settle round trip instead of waking it
# one or two at a time: under light load the wake-ups, not the orders, were its CPU. A
# read of a backlog never waits. Issue #5, Locust on 2 cores, 3-run medians: CPU per order
# 437 -> 339 µs at 800 orders/s, 365 -> 299 µs at 1,000; `spot bench pipeline` unhurt.
GATHER_BELOW = 64
GATHER_S = 0.004
# A finished order's record expires this long after it ended, should the batcher never
# commit it; once it has, the batcher shortens that to SPOT_FINISHED_ORDER_KEPT_S.
ORDER_KEPT_S = 86_400
# The GTD deadlines a shard tracks are rebuilt from its books once they outnumber the live
# GTD orders (at the last rebuild) twice over and by this many: an order that filled keeps
# its deadline there until it comes due.
EXPIRY_SLACK = 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_events = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
_owners = msgspec.msgpack.Decoder(dict[str, tuple[bool, int]])
_handoff = msgspec.msgpack.Decoder(BookSnapshot)
_command = msgspec.msgpack.Encoder()  # a map by field name, as the API's commands are
_specs = msgspec.json.Decoder(SymbolSpec)

Entry = tuple[bytes, dict[bytes, bytes]]


def stream_id_after(a: bytes, b: bytes) -> bool:
    am, _, aseq = a.partition(b"-")
    bm, _, bseq = b.partition(b"-")
    return (int(am), int(aseq or 0)) > (int(bm), int(bseq or 0))


@dataclass
class Shard:
    number: int
    engine: MatchingEngine
    position: bytes = b"0-0"  # last orders-stream id applied to the books
    snapshot_at: float = field(default_factory=time.monotonic)
    dirty: set[str] = field(default_factory=set)  # symbols whose depth is not yet published
    depth_at: float = 0.0
    # symbol -> (owned, route epoch) for the symbols a migration moved off or onto this
    # shard; a symbol not here is owned at any epoch (its home shard, before any move)
    owners: dict[str, tuple[bool, int]] = field(default_factory=dict)
    # (expire_at_ms, symbol) of every GTD order and stop accepted since the last rebuild, a
    # min-heap: the worker's clock passing the earliest sends that symbol an EXPIRE
    expiries: list[tuple[int, str]] = field(default_factory=list)
    expiries_live: int = 0  # how many were live at the last rebuild

    def stale(self, symbol: str, epoch: int) -> bool:
        """A command for `symbol` queued under route `epoch` is not this shard's to apply."""
        owner = self.owners.get(symbol)
        if owner is None:
            return False
        return not owner[0] or epoch < owner[1]


class Worker:
    """The shards' one owner. Every tunable is a keyword with its production default, so a
    test builds exactly the worker it needs; `from_settings` is where a process fills them."""

    def __init__(
        self,
        redis: Redis,
        shards: list[int],
        *,
        batch: int = 500,
        snapshot_interval_s: float = 10.0,
        lease_ms: int = LEASE_MS,
        gather_below: int = GATHER_BELOW,
        gather_s: float = GATHER_S,
        depth_levels: int = DEPTH_LEVELS,
        depth_interval_s: float = DEPTH_INTERVAL_S,
        recent_trades: int = RECENT_TRADES,
        order_kept_s: int = ORDER_KEPT_S,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        # Any: redis-py types replies as unions that decode_responses=False settles to bytes.
        self.redis: Any = redis
        # The stream reads and the settlement's round trips (store/pipeline.py): through
        # redis-py they were most of what a batch of a few orders cost the worker.
        self.link = PipelinedRedis(redis)
        self.batch = batch
        self.snapshot_interval_s = snapshot_interval_s
        self.lease_ms = lease_ms
        self.gather_below = gather_below
        self.gather_s = gather_s
        self.depth_levels = depth_levels
        self.depth_interval_s = depth_interval_s
        self.recent_trades = recent_trades
        self.order_kept_s = order_kept_s
        self.clock_ms = clock_ms  # what GTD orders expire by (tests set their own)
        self.token = secrets.token_hex(8)
        self.specs: dict[str, SymbolSpec] = {}
        self.shards = {n: Shard(n, MatchingEngine(specs=())) for n in shards}
        self.applied_orders = 0
        self._scripts_loaded = False
        self._busy: dict[int, list[int]] = {}  # shard -> [commands, busy µs] not yet published
        self._busy_published_at = 0.0

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, shards: list[int]) -> Worker:
        return cls(
            redis,
            shards,
            batch=settings.worker_batch,
            snapshot_interval_s=settings.snapshot_interval_s,
        )

    # -- life cycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self._acquire_leases(stop)
        if stop.is_set():
            return
        renewing = asyncio.create_task(self._renew_leases(stop))
        try:
            await self.load_specs()
            for shard in self.shards.values():
                await self._recover(shard)
            log.info("worker %s owns shards %s", self.token, sorted(self.shards))
            gather_below = min(self.gather_below, self.batch)  # a full read is never held back
            while not stop.is_set():
                if 0 < await self.step(block_ms=100) < gather_below:
                    await asyncio.sleep(self.gather_s)
            for shard in self.shards.values():
                await self.snapshot(shard)
        finally:
            renewing.cancel()
            for n in self.shards:
                await RELEASE.run(self.redis, [keys.owner(n)], [self.token])

    async def _acquire_leases(self, stop: asyncio.Event) -> None:
        """One owner per shard (DESIGN.md §3.4). A crashed owner's lease runs out by
        itself, so a restarted worker waits at most `lease_ms`."""
        for n in self.shards:
            while not stop.is_set():
                if await self.redis.set(keys.owner(n), self.token, nx=True, px=self.lease_ms):
                    break
                await asyncio.sleep(0.2)

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.lease_ms / 5000)
            for n in self.shards:
                if not await RENEW.run(self.redis, [keys.owner(n)], [self.token, self.lease_ms]):
                    log.error("lost the lease on shard %s; stopping", n)
                    stop.set()

    async def load_specs(self) -> None:
        raw = await self.redis.hgetall(keys.SYMBOLS)
        self.specs = {k.decode(): _specs.decode(v) for k, v in raw.items()}
        for shard in self.shards.values():
            shard.engine.specs.update(self.specs)

    async def _recover(self, shard: Shard) -> None:
        snap = await self.redis.hmget(keys.snapshot(shard.number), "id", "books", "owners")
        if snap[0] is not None:
            for symbol, data in decode_books(snap[1]).items():
                book = shard.engine.book(symbol)
                if book is None:
                    raise RuntimeError(f"snapshot holds {symbol}, which has no spec")
                book.restore(data)
            if snap[2] is not None:  # snapshots from before migrations have no owners
                shard.owners = _owners.decode(snap[2])
            shard.position = snap[0]
        applied = await self.redis.get(keys.applied(shard.number)) or b"0-0"
        replayed = 0
        while stream_id_after(applied, shard.position):
            entries = await self.redis.xrange(
                keys.orders(shard.number), b"(" + shard.position, applied, count=self.batch
            )
            if not entries:
                break
            handoffs: dict[str, bytes] = {}
            for _, fields in entries:
                if is_control(fields):
                    await self._control(shard, fields, handoffs)
                    continue
                entry = CommandEntry.from_fields(fields)
                command = entry.decode_command()
                if not shard.stale(command.symbol, entry.epoch):
                    shard.engine.apply(command)
            if handoffs:  # the same bytes again: the book is deterministic
                await self._write_handoffs(handoffs)
            shard.position = entries[-1][0]
            replayed += len(entries)
        self._rebuild_expiries(shard)
        log.info("shard %s recovered at %s (%s re-applied)", shard.number, applied, replayed)

    # -- the loop ---------------------------------------------------------------------

    async def step(self, block_ms: int | None = None) -> int:
        """Read and settle one batch per shard that has entries; returns commands applied."""
        streams = {keys.orders(n): s.position for n, s in self.shards.items()}
        reply = await xread(self.link, streams, self.batch, block_ms)
        applied = 0
        if reply:
            applied = await self._settle_all(reply)
        await self._tick()
        now = time.monotonic()
        settled = {int(stream.rpartition(b":")[2]) for stream, _ in reply or ()}
        for shard in self.shards.values():
            # A shard idle this step publishes what the throttle held back, though others
            # are busy: else its depth cache lags its events until its next order, and
            # Binance's depth diffs (api/binance/streams.py) wait for the cache.
            held = shard.dirty and now - shard.depth_at >= self.depth_interval_s
            if held and shard.number not in settled:
                pipe = Batch(self.link)
                self._publish_depth(pipe, shard)
                await pipe.execute()
            if now - shard.snapshot_at >= self.snapshot_interval_s:
                await self.snapshot(shard)
        return applied

    async def _measure(self, shard: int, commands: int, busy_s: float) -> None:
        """Count what the shard applied and the wall time its batches took (the settle round
        trip included: that is what bounds a shard); publish it at most once a second, in
        one round trip, for the rebalancer's capacity estimate (control/rebalancer.py)."""
        counts = self._busy.setdefault(shard, [0, 0])
        counts[0] += commands
        counts[1] += int(busy_s * 1_000_000)
        now = time.monotonic()
        if now - self._busy_published_at < 1.0:
            return
        self._busy_published_at = now
        at_ms = time.time_ns() // 1_000_000
        pipe = self.redis.pipeline(transaction=False)
        for n, (applied, busy_us) in self._busy.items():
            pipe.hincrby(keys.SHARD_STATS, f"{n}:commands", applied)
            pipe.hincrby(keys.SHARD_STATS, f"{n}:busy_us", busy_us)
            pipe.hset(keys.SHARD_STATS, f"{n}:at_ms", at_ms)
        self._busy.clear()
        await pipe.execute()

    async def _settle_all(self, reply: list[tuple[bytes, list[Entry]]]) -> int:
        """Every shard's batch settles in one pipeline: a round trip per shard was most of
        a worker's CPU under light load, when each batch holds an order or two (Locust at
        1,000 orders/s on 2 cores: 312-323 -> 281-285 µs per order). The wall time is
        shared out by commands, for the rebalancer's capacity estimate."""
        await self._load_scripts()
        started = time.perf_counter()
        pipe = Batch(self.link)
        # One for the whole step: an ADOPT takes the book a DRAIN on another of this
        # worker's shards gave up earlier in the step, before the pipeline stored it.
        handoffs: dict[str, bytes] = {}
        settled = []
        for stream, entries in reply:
            shard = self.shards[int(stream.rpartition(b":")[2])]
            await self._settle(shard, entries, pipe, handoffs)
            settled.append((shard, entries))
        await pipe.execute()
        busy_s = time.perf_counter() - started
        applied = sum(len(entries) for _, entries in settled)
        for shard, entries in settled:
            shard.position = entries[-1][0]
            await self._measure(shard.number, len(entries), busy_s * len(entries) / applied)
        self.applied_orders += applied
        return applied

    async def _settle(
        self, shard: Shard, entries: list[Entry], pipe: Any, handoffs: dict[str, bytes]
    ) -> None:
        """Apply one shard's batch and queue its settlement on `pipe`: one SETTLE call whose
        changes travel as one msgpack argument (store/lua/settle-3.lua says what it holds)
        rather than eleven per order and balance, since packing hundreds of arguments was
        a third of a worker's CPU."""
        settlement = Settlement()
        events: list[Event] = []
        trades: dict[str, list[Trade]] = {}
        earlier = set(handoffs)  # stored with the shards settled before this one
        for _, fields in entries:
            if is_control(fields):
                await self._control(shard, fields, handoffs)
                continue
            out = await self._apply(shard, CommandEntry.from_fields(fields), settlement)
            events.extend(out)
            for event in out:
                if type(event) is Trade:
                    trades.setdefault(event.symbol, []).append(event)
                elif type(event) is Accepted and event.expire_at_ms is not None:
                    heapq.heappush(shard.expiries, (event.expire_at_ms, event.symbol))
        last_id = entries[-1][0]
        for_database = [
            (user, asset, d_avail, d_locked)
            for (user, asset), (d_avail, d_locked) in settlement.with_holds().items()
        ]
        balances = [
            (user, asset, str(d_avail), str(d_locked))
            for (user, asset), (d_avail, d_locked) in settlement.balances.items()
            if d_avail or d_locked
        ]
        orders = [
            (
                str(order_id),
                state.status or "",
                "" if state.remaining is None else str(state.remaining),
                "" if state.price is None else str(state.price),
                str(state.filled),
                str(state.notional),
                state.settled,
                state.reason or "",
                state.finished,
                state.triggered,
            )
            for order_id, state in settlement.orders.items()
        ]
        args: list[Any] = [
            self.token,
            last_id,
            _events.encode(events) if events else "",
            _events.encode(for_database),
            entries[0][0],
            _events.encode((balances, orders)),
            keys.BALANCE,
            keys.available(""),
            keys.locked(""),
            keys.ORDER,
            self.order_kept_s,
            keys.open_orders(""),
            keys.OPEN_ORDERS,
        ]
        # A handed-over book is stored before the watermark passes its DRAIN marker, so a
        # crash in between re-applies the marker and stores the same bytes again.
        self._store_handoffs(pipe, {m: d for m, d in handoffs.items() if m not in earlier})
        SETTLE.queue(pipe, [keys.applied(shard.number), keys.owner(shard.number),
                            keys.events(shard.number)], args)  # fmt: skip
        shard.dirty.update(e.symbol for e in events)
        for symbol, recent in trades.items():
            pipe.lpush(keys.trades(symbol), *(_json.encode(t) for t in recent))
            pipe.ltrim(keys.trades(symbol), 0, self.recent_trades - 1)
        self._publish_depth(pipe, shard)

    async def _apply(
        self, shard: Shard, entry: CommandEntry, settlement: Settlement
    ) -> list[Event]:
        """One command through the book (or rejected as stale) and into the settlement."""
        engine = shard.engine
        command = entry.decode_command()
        if command.symbol not in engine.specs:
            await self.load_specs()  # a symbol listed after this worker started
        if shard.stale(command.symbol, entry.epoch):
            out = _stale(command)
            spec = engine.specs.get(command.symbol)
            resting = None
        else:
            out = engine.apply(command)
            book = engine.books.get(command.symbol)
            spec = None if book is None else book.spec
            resting = None if book is None else book.order(command.order_id)
        if spec is None:
            log.error("no spec for %s: order %s rejected", command.symbol, command.order_id)
            return out
        settlement.add(
            spec,
            command,
            entry.side,
            entry.hold,
            out,
            None if resting is None else (resting.price, resting.remaining),
        )
        return out

    async def _control(
        self, shard: Shard, fields: dict[bytes, bytes], handoffs: dict[str, bytes]
    ) -> None:
        """A migration's DRAIN or ADOPT marker; the same live and when recovering."""
        try:
            control = ControlEntry.from_fields(fields)
        except ValueError:  # a marker of a newer Spot: skipped, as it always was
            log.error("shard %s: unknown control entry %r", shard.number, fields)
            return
        symbol, migration, epoch = control.symbol, control.migration, control.epoch
        if symbol not in shard.engine.specs:
            await self.load_specs()
        if control.control is Control.DRAIN:
            await self._drain(shard, symbol, migration, epoch, handoffs)
        else:
            await self._adopt(shard, symbol, migration, epoch, handoffs)

    async def _drain(
        self, shard: Shard, symbol: str, migration: str, epoch: int, handoffs: dict[str, bytes]
    ) -> None:
        owner = shard.owners.get(symbol, (True, -1))
        if not owner[0] or owner[1] >= epoch:
            log.warning("shard %s: DRAIN of %s it does not own ignored", shard.number, symbol)
            return
        book = shard.engine.book(symbol)
        if book is None:
            log.error("shard %s: DRAIN of %s, which has no spec, ignored", shard.number, symbol)
            return
        if not await CLAIM.run(self.redis, [keys.migration(migration)]):
            log.info("shard %s keeps %s: migration %s rolled back", shard.number, symbol, migration)
            return
        handoffs[migration] = encode_handoff(book.snapshot())
        del shard.engine.books[symbol]
        shard.owners[symbol] = (False, epoch)

    async def _adopt(
        self, shard: Shard, symbol: str, migration: str, epoch: int, handoffs: dict[str, bytes]
    ) -> None:
        owner = shard.owners.get(symbol)
        if owner is None or not owner[0] or owner[1] < epoch:
            # The handoff may come from a DRAIN earlier in this very batch (a rollback
            # gives the book back to the shard that drained it).
            stored = handoffs.get(migration) or await self.redis.get(keys.handoff(migration))
            if stored is None:  # the source has not drained yet: another marker follows
                log.info("shard %s: no handoff for migration %s yet", shard.number, migration)
                return
            data = decode_handoff(stored)
            held = shard.engine.books.get(symbol)
            if held is None or held.seq < _handoff.decode(data).seq:
                book = shard.engine.book(symbol)
                if book is None:
                    log.error("shard %s: ADOPT of %s, which has no spec", shard.number, symbol)
                    return
                book.restore(data)
                _push_expiries(shard, book)
            shard.owners[symbol] = (True, epoch)
        # The orchestrator switches routing only to a shard that says it holds the book.
        await ADOPTED.run(self.redis, [keys.migration(migration)], [shard.number])

    async def _load_scripts(self) -> None:
        """Before the first pipeline that runs a script: a pipeline cannot fall back on
        NOSCRIPT, so a Redis flushed of its scripts since fails that batch (and the worker,
        which its supervisor restarts) like a lost connection."""
        if not self._scripts_loaded:
            await scripts.load(self.redis, *WORKER_SCRIPTS)
            self._scripts_loaded = True

    async def _write_handoffs(self, handoffs: dict[str, bytes]) -> None:
        await self._load_scripts()
        pipe = self.redis.pipeline(transaction=False)
        self._store_handoffs(pipe, handoffs)
        await pipe.execute()

    def _store_handoffs(self, pipe: Any, handoffs: dict[str, bytes]) -> None:
        for migration, data in handoffs.items():
            STORE_HANDOFF.queue(pipe, [keys.handoff(migration), keys.migration(migration)],
                                [data, keys.HANDOFF_KEPT_S])  # fmt: skip

    def _publish_depth(self, pipe: Any, shard: Shard) -> None:
        """Depth and last price of the symbols that changed, at most every `depth_interval_s`:
        computing the top 50 levels on every small batch cost more than the matching."""
        now = time.monotonic()
        if not shard.dirty or now - shard.depth_at < self.depth_interval_s:
            return
        for symbol in shard.dirty:
            book = shard.engine.books.get(symbol)
            if book is None:
                continue
            bids, asks = book.depth(self.depth_levels)
            pipe.set(
                keys.depth(symbol), _json.encode({"bids": bids, "asks": asks, "seq": book.seq})
            )
            if book.last_price is not None:
                pipe.set(keys.last_price(symbol), book.last_price)
        shard.dirty.clear()
        shard.depth_at = now

    async def _tick(self) -> None:
        """The clock's turn: for each symbol whose earliest GTD deadline has passed, an
        EXPIRE at the clock's now into the shard's own stream. Time reaches a book only
        through its stream, so recovery and `spot replay` expire exactly what this did. A
        deadline whose order ended since sends an EXPIRE that cancels nothing; one of a
        symbol given away sends none (the new owner's clock expires its orders)."""
        now = self.clock_ms()
        pipe = None
        for shard in self.shards.values():
            heap = shard.expiries
            if not heap or heap[0][0] > now:
                continue
            due = set()
            while heap and heap[0][0] <= now:
                due.add(heapq.heappop(heap)[1])
            for symbol in sorted(due & shard.engine.books.keys()):
                pipe = pipe or self.redis.pipeline(transaction=False)
                entry = CommandEntry(
                    epoch=shard.owners.get(symbol, (True, 0))[1],
                    command=_command.encode(Expire(symbol=symbol, now_ms=now)),
                    hold=0,
                    side=None,
                )
                pipe.xadd(keys.orders(shard.number), entry.to_fields())
            if len(heap) > 2 * shard.expiries_live + EXPIRY_SLACK:
                self._rebuild_expiries(shard)
        if pipe is not None:
            await pipe.execute()

    def _rebuild_expiries(self, shard: Shard) -> None:
        """The deadlines of the GTD orders and stops the shard's books hold now."""
        shard.expiries = []
        for book in shard.engine.books.values():
            _push_expiries(shard, book)
        shard.expiries_live = len(shard.expiries)

    async def snapshot(self, shard: Shard) -> None:
        """A consistent cut: taken between batches, so every applied command is settled."""
        books = {symbol: book.snapshot() for symbol, book in shard.engine.books.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.snapshot(shard.number),
            mapping={
                "id": shard.position,
                "books": encode_books(books),
                "owners": msgspec.msgpack.encode(shard.owners),
            },
        )
        # What the snapshot covers is never needed again for recovery.
        pipe.xtrim(keys.orders(shard.number), minid=shard.position, approximate=True)
        await pipe.execute()
        shard.snapshot_at = time.monotonic()


# What a command this shard may no longer apply (STALE_ROUTE: a migration moved its symbol)
# turns into: a rejection its client sees, or nothing for the clock's EXPIRE (the symbol's
# new owner runs its own clock for it).
_STALE: dict[type[Command], Action | None] = {
    Place: Action.PLACE,
    Cancel: Action.CANCEL,
    Replace: Action.REPLACE,
    CancelAll: Action.CANCEL_ALL,
    Expire: None,
}


def _stale(command: Command) -> list[Event]:
    action = _STALE[type(command)]
    if action is None:
        return []
    # seq 0: the event belongs to no book (this shard has none for the symbol).
    return [
        Rejected(
            command.symbol, 0, command.order_id, command.user_id, action, RejectReason.STALE_ROUTE
        )
    ]


def _push_expiries(shard: Shard, book: OrderBook) -> None:
    deadlines = [o.expire_at_ms for o in book.resting(Side.BUY) + book.resting(Side.SELL)]
    deadlines += [s.expire_at_ms for s in book.stops()]
    for expire_at_ms in deadlines:
        if expire_at_ms is not None:
            heapq.heappush(shard.expiries, (expire_at_ms, book.symbol))


def run_worker(settings: Settings, shards: list[int]) -> None:
    """A worker process: SIGTERM or SIGINT snapshot the shards and stop cleanly."""
    import signal

    import uvloop

    if settings.redis_url is None:
        raise ValueError("a worker needs SPOT_REDIS_URL")
    redis_url = settings.redis_url

    async def main() -> None:
        redis = Redis.from_url(redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Worker.from_settings(redis, settings, shards).run(stop)
        finally:
            await redis.aclose()

    uvloop.run(main())
