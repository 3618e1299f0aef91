"""`spot bench batcher`: events offered at a fixed rate through the real batcher into
the database (PostgreSQL, or MySQL with SPOT_DATABASE_URL=mysql://…).

The events are real: the realistic engine workload (spot bench engine) applied by the
matching core and settled, then written to `events:{shard}` in worker-sized entries
at the offered rate, stamped with the time they are offered (their "acceptance"). The
batcher runs as its own process, as in production. Prints rows/s, flush duration
p50/p99, acceptance→committed p50/p99 and CPU µs per order of the batcher and of
the database server.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from redis.asyncio import Redis

from schema import keys
from schema.messages import Event, Side, Trade
from schema.settings import Settings
from schema.streams import EventsEntry
from schema.tables import metadata
from spot.bench.engine import SPEC, realistic
from spot.processes import cpu_seconds, pid_listening, spot_environment
from spot.stack import Stack
from spot.supervisor import child_env, spot_command
from store import db
from store.database import Database, empty, open_database
from store.symbols import list_symbol
from workers.engine import MatchingEngine

ENTRY_ORDERS = 50  # commands per events entry: what one worker batch holds under load
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def _entries(orders: int) -> list[tuple[bytes, bytes]]:
    """(events, balances) payloads of ENTRY_ORDERS commands each, as a worker writes them.
    Balance changes are those of the trades (holds aside): the same rows to upsert."""
    encode = msgspec.msgpack.Encoder().encode
    engine = MatchingEngine([SPEC])
    commands = realistic(orders)
    out = []
    for start in range(0, len(commands), ENTRY_ORDERS):
        events: list[Event] = []
        balances: dict[tuple[str, str], int] = {}
        for command in commands[start : start + ENTRY_ORDERS]:
            for event in engine.apply(command):
                events.append(event)
                if type(event) is Trade:
                    buyer, seller = event.taker_user_id, event.maker_user_id
                    if event.taker_side is Side.SELL:
                        buyer, seller = seller, buyer
                    notional = event.price * event.quantity
                    for key, amount in (
                        ((buyer, SPEC.quote), -notional),
                        ((buyer, SPEC.base), event.quantity),
                        ((seller, SPEC.base), -event.quantity),
                        ((seller, SPEC.quote), notional),
                    ):
                        balances[key] = balances.get(key, 0) + amount
        deltas = [(user, asset, amount, 0) for (user, asset), amount in balances.items()]
        out.append((encode(events), encode(deltas)))
    return out


async def _offer(redis: Redis, entries: list[tuple[bytes, bytes]], rate: int, shards: int) -> float:
    """XADD the entries, dealt over the shards, so that orders arrive at `rate` per second;
    returns seconds taken."""
    interval = ENTRY_ORDERS / rate
    started = time.monotonic()
    for n, (events, balances) in enumerate(entries):
        delay = started + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = f"{int(time.time() * 1000)}-0"
        await redis.xadd(
            keys.events(n % shards),
            {
                EventsEntry.ORDERS_ID: now,
                EventsEntry.FIRST: now,
                EventsEntry.EVENTS: events,
                EventsEntry.BALANCES: balances,
            },
        )
    return time.monotonic() - started


def batcher(settings: Settings, rate: int, seconds: int) -> int:
    orders = rate * seconds
    print(f"preparing {orders:,} orders of events…", flush=True)
    entries = _entries(orders)
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({**spot_environment(), "SPOT_DATA_DIR": data})
        with Stack(settings, durable=False) as (redis_url, database_url):
            db.upgrade(database_url)
            return asyncio.run(_run(settings, redis_url, database_url, entries, rate, orders))


async def _run(
    settings: Settings,
    redis_url: str,
    database_url: str,
    entries: list[tuple[bytes, bytes]],
    rate: int,
    orders: int,
) -> int:
    redis = Redis.from_url(redis_url)
    conn = await open_database(database_url, max_size=1)
    await redis.flushdb()
    await empty(conn, [*metadata.tables])
    await list_symbol(redis, SPEC, settings.shards)
    env = child_env(redis_url, database_url)
    procs = [subprocess.Popen(spot_command("batcher"), env=env)]
    try:
        await asyncio.sleep(1.5)  # the batchers start and read their offsets
        server = pid_listening(urlsplit(database_url).port or DEFAULT_PORTS[conn.dialect])
        # Redis too: what the batcher asks of it after each flush (trims, the finished
        # orders' records) is its cost as well.
        redis_server = pid_listening(urlsplit(redis_url).port or 6379)
        groups = {
            "batcher": [p.pid for p in procs],
            conn.dialect: [server] if server else [],
            "redis": [redis_server] if redis_server else [],
        }
        before = cpu_seconds(groups)
        took = await _offer(redis, entries, rate, settings.shards)
        await _caught_up(redis, conn, settings.shards)
        after = cpu_seconds(groups)
        flushes = [msgspec.json.decode(f) for f in await redis.lrange(keys.BATCHER_FLUSHES, 0, -1)]
        rows = int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM trades)"
            )
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        await conn.close()
        await redis.aclose()
    _report(orders, took, rows, flushes, before, after)
    return 0


async def _caught_up(redis: Redis, conn: Database, shards: int) -> None:
    for n in range(shards):
        if not await redis.exists(keys.events(n)):
            continue
        last = (await redis.xinfo_stream(keys.events(n)))["last-generated-id"].decode()
        query = "SELECT last_id FROM consumer_offsets WHERE stream = $1"
        while await conn.fetchval(query, keys.events(n)) != last:
            await asyncio.sleep(0.02)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _report(
    orders: int,
    took: float,
    rows: int,
    flushes: list[dict[str, Any]],
    before: dict[str, float],
    after: dict[str, float],
) -> None:
    durations = [f["flush_ms"] for f in flushes]
    lags = [f["lag_ms"] for f in flushes]
    print(
        f"offered {orders / took:,.0f} orders/s for {took:.1f} s: {rows:,} rows "
        f"({rows / took:,.0f} rows/s) in {len(flushes)} flushes of "
        f"{statistics.median(f['events'] for f in flushes):,.0f} events (median)"
    )
    print(
        f"flush duration p50 {_pct(durations, 50):.1f} ms, p99 {_pct(durations, 99):.1f} ms; "
        f"acceptance→committed p50 {_pct(lags, 50):.0f} ms, p99 {_pct(lags, 99):.0f} ms"
    )
    print("CPU per order: " + ", ".join(
        f"{kind} {(after[kind] - before[kind]) / orders * 1e6:.1f} µs" for kind in before
    ))  # fmt: skip
