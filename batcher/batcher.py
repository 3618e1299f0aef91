"""The batcher: `events:{shard}` and the ledger stream → the database, every 100 ms.

It reads each stream from the offset the database holds, gathers until the batch is
full or the interval is up, and writes one transaction per flush, offsets included;
then trims what it has passed from the streams. A redelivered entry (a crash between
commit and the next read) is at or below the stored offset and is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from batcher import postgres
from batcher.changes import Changes
from schema import keys
from schema.messages import Event
from spot.market import load_specs

log = logging.getLogger("spot.batcher")

_events = msgspec.msgpack.Decoder(list[Event])
_balances = msgspec.msgpack.Decoder(list[tuple[str, str, int, int]])
_json = msgspec.json.Encoder()
READ_ENTRIES = 100  # stream entries per XREAD; a worker's entry holds a whole batch of events


@dataclass
class Flush:
    changes: Changes = field(default_factory=Changes)
    offsets: dict[str, str] = field(default_factory=dict)
    entries: int = 0
    oldest_ms: int | None = None  # the oldest entry's stream time: how stale the flush is


class Batcher:
    def __init__(
        self,
        redis: Any,
        pool: asyncpg.Pool,
        shards: list[int],
        batch: int = 500,
        interval_s: float = 0.1,
    ) -> None:
        self.redis = redis
        self.pool = pool
        # The ledger has one writer: whichever batcher has shard 0, so that several
        # batchers (each on its own shards) can share the work.
        self.streams = [keys.events(n) for n in shards] + ([keys.LEDGER] if 0 in shards else [])
        self.batch = batch
        self.interval_s = interval_s
        self.positions: dict[str, str] = {}
        self.symbols: set[str] = set()
        self.flushes = 0

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            stored = await postgres.load_offsets(conn)
            await self._save_symbols(conn)
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
        """Gather for up to one interval (or `batch` events), then flush; returns entries."""
        flush = Flush()
        deadline = time.monotonic() + self.interval_s
        while flush.changes.events + len(flush.changes.ledger) < self.batch:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            positions = {s: flush.offsets.get(s, self.positions[s]) for s in self.streams}
            reply = await self.redis.xread(positions, count=READ_ENTRIES, block=left_ms)
            if not reply:
                break
            for stream, entries in reply:
                self._gather(flush, stream.decode(), entries)
        if flush.entries:
            await self.flush(flush)
        return flush.entries

    def _gather(self, flush: Flush, stream: str, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if stream == keys.LEDGER:
                flush.changes.add_transfer(
                    entry_id.decode(),
                    fields[b"user"].decode(),
                    fields[b"asset"].decode(),
                    int(fields[b"amount"]),
                    fields[b"ref"].decode(),
                )
                accepted_id = entry_id
            else:
                flush.changes.add_events(_events.decode(fields[b"events"]))
                flush.changes.add_balances(_balances.decode(fields[b"balances"]))
                accepted_id = fields[b"first"]  # the worker batch's oldest order
            ms = int(accepted_id.partition(b"-")[0])
            flush.oldest_ms = ms if flush.oldest_ms is None else min(flush.oldest_ms, ms)
        flush.offsets[stream] = entries[-1][0].decode()
        flush.entries += len(entries)

    async def flush(self, flush: Flush) -> None:
        started = time.perf_counter()
        rejected = await self._rejected_records(flush.changes)
        async with self.pool.acquire() as conn, conn.transaction():
            if {a.symbol for a in flush.changes.new_orders.values()} - self.symbols:
                await self._save_symbols(conn)  # listed since this batcher started
            stored = await postgres.load_offsets(conn, self.streams, lock=True)
            if any(stored.get(s, "0-0") != self.positions[s] for s in flush.offsets):
                # Another batcher moved the offsets: re-read from what the database holds.
                log.warning("offsets moved under this batcher; re-reading from %s", stored)
                self.positions.update(stored)
                return
            await postgres.write(conn, flush.changes, rejected, flush.offsets)
        self.positions.update(flush.offsets)
        self.flushes += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
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
        }
        pipe.hset(keys.BATCHER_STATS, mapping=stats)
        pipe.lpush(keys.BATCHER_FLUSHES, _json.encode(stats))
        pipe.ltrim(keys.BATCHER_FLUSHES, 0, 9_999)
        await pipe.execute()

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


def run_batcher(
    redis_url: str, database_url: str, shards: list[int], batch: int, interval_s: float
) -> None:
    """A batcher process: SIGTERM or SIGINT finish the flush in hand and stop."""
    import signal

    import uvloop
    from redis.asyncio import Redis

    async def main() -> None:
        redis = Redis.from_url(redis_url)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Batcher(redis, pool, shards, batch, interval_s).run(stop)
        finally:
            await pool.close()
            await redis.aclose()

    uvloop.run(main())
