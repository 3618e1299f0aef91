"""`spot bench migration`: how long a hot symbol is paused while it moves, under load.

The stack is the one `spot bench pipeline` runs, without the API (workers as processes,
the batcher, Redis, PostgreSQL), in a throwaway data folder. A generator process offers a
steady rate of limit orders through the order gateway (the API's own path to Redis, pipelined),
the hot symbol taking a big share and the other demo symbols the rest. Meanwhile this
process moves the hot symbol back and forth between two shards owned by different worker
processes, with the orchestrator that `spot migrate` runs, and prints per migration:

- the pause: the route paused (PAUSE) until it was switched (SWITCH);
- the commands buffered in `pending:{symbol}` meanwhile;
- per buffered order, from its entry into `pending` (the stream id, a Redis ms timestamp)
  until the target shard applied it (its ACCEPTED/REJECTED event's entry id on the
  target's events stream, likewise).

then percentiles over all migrations and all buffered orders, and the rate achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from redis.asyncio import Redis

from api.order_gateway import OrderGateway
from control import wiring
from schema import keys
from schema.messages import Accepted, Action, Place, Rejected, Side
from schema.settings import Settings
from schema.streams import CommandEntry, EventsEntry
from spot.bench.pipeline import prepare
from spot.processes import spot_environment
from spot.seed import DEMO_SYMBOLS
from spot.stack import Stack
from spot.supervisor import child_env, children
from store import db
from store.symbols import load_specs

HOT = "AAPL"
WARMUP_S = 3.0  # load before the first migration: books filled, workers at speed
BETWEEN_S = 1.0  # load between two migrations
TICK_S = 0.002  # the generator's pacing step


def migration_bench(
    settings: Settings, rate: int, migrations: int, hot_share: float, users: int
) -> int:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({**spot_environment(), "SPOT_DATA_DIR": data})
        with Stack(settings, durable=False) as (redis_url, database_url):
            db.upgrade(database_url)
            asyncio.run(prepare(redis_url, settings, users))
            return _measure(settings, redis_url, database_url, rate, migrations, hot_share, users)


def _measure(
    settings: Settings,
    redis_url: str,
    database_url: str,
    rate: int,
    migrations: int,
    hot_share: float,
    users: int,
) -> int:
    env = child_env(redis_url, database_url)
    procs = [
        subprocess.Popen(c.argv, env=env, start_new_session=True)
        for c in children(settings)
        if c.name != "api"
    ]
    generator = None
    try:
        asyncio.run(_until_owned(redis_url, settings.shards))
        generator = subprocess.Popen(
            [sys.executable, "-m", "spot.bench.migration", redis_url, str(rate), HOT,
             str(hot_share), str(users)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        home = keys.home_shard(HOT, settings.shards)
        # A shard of the other worker process (they are dealt round robin).
        other = (home + 1) % settings.shards
        results = asyncio.run(_migrate_back_and_forth(settings, redis_url, home, other, migrations))
        generator.send_signal(signal.SIGTERM)
        offered = json.loads(generator.communicate(timeout=60)[0])
    finally:
        if generator is not None and generator.poll() is None:
            generator.kill()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    _report(results, offered, rate, hot_share)
    return 0


async def _until_owned(redis_url: str, shards: int) -> None:
    """Until a worker holds every shard's lease (the workers are up)."""
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(600):
            if all([await redis.exists(keys.owner(n)) for n in range(shards)]):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the workers never started")
    finally:
        await redis.aclose()


# -- the migrations and what they cost the hot symbol's orders -------------------------------


class Watch:
    """Tails `pending:{HOT}` (when each buffered order entered it) and the two shards'
    event streams (when each of the hot symbol's orders was applied)."""

    def __init__(self, redis: Any, shards: tuple[int, int]) -> None:
        self.redis = redis
        self.shards = shards
        self.pending_ms: dict[int, int] = {}
        self.applied_ms: dict[int, int] = {}
        # Between migrations: how long each settled batch's oldest command had waited in
        # its orders stream (the workers' lag, which a DRAIN marker waits behind).
        self.lag_ms: list[int] = []
        self.sampling = False
        self.done = False

    async def pending(self) -> None:
        last = "0-0"
        while not self.done:
            reply = await self.redis.xread({keys.pending(HOT): last}, count=1000, block=5)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    command = CommandEntry.from_fields(fields).decode_command()
                    if type(command) is Place:
                        self.pending_ms[command.order_id] = _ms(entry_id)
                last = entries[-1][0]

    async def applied(self) -> None:
        positions: dict[str, Any] = {keys.events(n): "$" for n in self.shards}
        while not self.done:
            reply = await self.redis.xread(positions, count=1000, block=100)
            for stream, entries in reply or ():
                for entry_id, fields in entries:
                    at = _ms(entry_id)
                    batch = EventsEntry.from_fields(fields)
                    if self.sampling:
                        self.lag_ms.append(at - _ms(batch.first_id))
                    for e in batch.decode_events():
                        if e.symbol == HOT and (
                            type(e) is Accepted
                            or (type(e) is Rejected and e.action is Action.PLACE)
                        ):
                            self.applied_ms[e.order_id] = at
                positions[stream.decode()] = entries[-1][0]


def _ms(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


async def _migrate_back_and_forth(
    settings: Settings, redis_url: str, home: int, other: int, count: int
) -> list[dict[str, Any]]:
    redis = Redis.from_url(redis_url)
    orchestrator = wiring.orchestrator(redis, settings)
    tails = Redis.from_url(redis_url)  # blocking reads on their own connections
    watch = Watch(tails, (home, other))
    tasks = [asyncio.create_task(watch.pending()), asyncio.create_task(watch.applied())]
    results: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(WARMUP_S)
        for n in range(count):
            target = other if n % 2 == 0 else home
            done = await orchestrator.migrate(HOT, target, timeout_s=5.0)
            done["handoff_bytes"] = await redis.strlen(keys.handoff(done["id"]))
            done["waits_ms"], done["unseen"] = await _waits(redis, watch, done)
            results.append(done)
            _print_one(done)
            await asyncio.sleep(BETWEEN_S / 4)
            watch.sampling = True
            await asyncio.sleep(BETWEEN_S * 3 / 4)
            watch.sampling = False
    finally:
        watch.done = True
        await asyncio.gather(*tasks)
        await tails.aclose()
        await redis.aclose()
    if results:
        results[0]["lag_ms"] = watch.lag_ms
    return results


async def _waits(redis: Any, watch: Watch, done: dict[str, Any]) -> tuple[list[int], int]:
    """Per order the switch replayed: pending entry -> applied on the target, in ms. The
    replayed entries are the last `pending` ones up to `replayed_to` in the target's stream
    (the switch script appends them in one step). For an order the tail did not see in
    `pending` before the switch deleted it, the time the generator stamped on it just
    before the router call (its record's created_ms) stands in; how many is returned."""
    if not done.get("replayed_to"):
        return [], 0
    entries = await redis.xrevrange(
        keys.orders(int(done["to"])), max=done["replayed_to"], count=int(done["pending"])
    )
    orders = [
        command.order_id
        for command in (CommandEntry.from_fields(f).decode_command() for _, f in entries)
        if type(command) is Place
    ]
    for _ in range(200):  # the tail of the events streams may be a moment behind
        if all(o in watch.applied_ms for o in orders):
            break
        await asyncio.sleep(0.01)
    stamped = 0
    waits = []
    for order_id in orders:
        queued = watch.pending_ms.get(order_id)
        if queued is None:
            queued = int(await redis.hget(keys.order(order_id), "created_ms"))
            stamped += 1
        waits.append(watch.applied_ms[order_id] - queued)
    return waits, stamped


# -- the report ----------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"p50 {at(0.50):.0f} ms, p95 {at(0.95):.0f} ms, p99 {at(0.99):.0f} ms, "
        f"max {ordered[-1]:.0f} ms (n={len(ordered)})"
    )


def _print_one(m: dict[str, Any]) -> None:
    waits = m["waits_ms"]
    steps = ", ".join(f"{k} {v}" for k, v in m["timings_ms"].items())
    print(
        f"{m['id']}: shard {m['from']} -> {m['to']} {m['state']}: paused "
        f"{m.get('paused_for_ms')} ms, {m.get('pending')} pending, book "
        f"{m['handoff_bytes'] / 1024:.0f} KiB; buffered order applied after "
        f"max {max(waits, default=0)} ms, median {statistics.median(waits) if waits else 0:.0f}"
        f" ms ({m['unseen']} from the stamp); steps ms: {steps}",
        flush=True,
    )


def _report(
    results: list[dict[str, Any]], offered: dict[str, Any], rate: int, hot_share: float
) -> None:
    pauses = [m["paused_for_ms"] for m in results if "paused_for_ms" in m]
    waits = [w for m in results for w in m["waits_ms"]]
    states = [m["state"] for m in results]
    print(
        f"\noffered {offered['offered'] / offered['seconds']:,.0f} orders/s "
        f"(asked {rate:,}; {hot_share:.0%} on {HOT}), accepted {offered['accepted']:,}, "
        f"refused {offered['refused']}, {offered['skipped']} not sent (200 ms behind); "
        f"{states.count('DONE')} of {len(states)} migrations DONE"
    )
    print(f"pause (route paused -> switched), per migration: {_percentiles(pauses)}")
    print(f"pending entry -> applied on the target, per buffered order: {_percentiles(waits)}")
    print(
        "worker lag between migrations (oldest command of a settled batch, queued -> "
        f"applied): {_percentiles(results[0]['lag_ms'] if results else [])}"
    )
    unseen = sum(m["unseen"] for m in results)
    if unseen:
        print(f"  ({unseen} of them timed from the generator's stamp: not seen in pending)")


# -- the load generator (its own process) ------------------------------------------------------


async def _generate(redis_url: str, rate: int, hot: str, hot_share: float, users: int) -> None:
    """Limit orders at `rate` per second until SIGTERM, paced every TICK_S; prints what it
    offered as one JSON line. Each order is its own task: the gateway pipelines the calls
    that are due together into one round trip."""
    redis = Redis.from_url(redis_url)
    specs = await load_specs(redis)
    router = OrderGateway(redis)
    hot_orders = _order_shapes(specs[hot])
    cold_orders = [s for spec in DEMO_SYMBOLS if spec.symbol != hot for s in _order_shapes(spec)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts = {"offered": 0, "accepted": 0, "refused": 0, "in_flight": 0, "skipped": 0}
    pending: set[asyncio.Task[None]] = set()

    async def place(shape: tuple[Any, Side, int], user: str) -> None:
        spec, side, price = shape
        order = Place(
            order_id=await router.order_ids.take(),
            user_id=user,
            symbol=spec.symbol,
            side=side,
            price=price,
            quantity=1,
        )
        result = await router.place(spec, order, time.time_ns() // 1_000_000)
        counts["accepted" if result.status == "OK" else "refused"] += 1
        counts["in_flight"] -= 1

    started = time.monotonic()
    n = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) - counts["offered"] - counts["skipped"]
        for _ in range(due):
            if counts["in_flight"] > rate // 5:  # 200 ms behind: Redis is saturated
                counts["skipped"] += 1
                continue
            n += 1
            shapes = hot_orders if (n * 0.618034) % 1 < hot_share else cold_orders
            task = asyncio.create_task(place(shapes[n % len(shapes)], f"bench{n % users}"))
            pending.add(task)
            task.add_done_callback(pending.discard)
            counts["offered"] += 1
            counts["in_flight"] += 1
        await asyncio.sleep(TICK_S)
    seconds = time.monotonic() - started
    await asyncio.gather(*pending)
    await redis.aclose()
    print(json.dumps({**counts, "seconds": seconds}), flush=True)


def _order_shapes(spec: Any) -> list[tuple[Any, Side, int]]:
    """Both sides at prices within ±0.5% of the reference, so that about half cross and
    the book stays small (as `spot bench pipeline` orders)."""
    ref = spec.reference_price or 10_000
    out = []
    for step in range(-5, 6):
        out.append((spec, Side.BUY, ref + ref * step // 1_000))
        out.append((spec, Side.SELL, ref - ref * step // 1_000))
    return out


def _generator_main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description="the migration benchmark's load generator")
    parser.add_argument("redis_url")
    parser.add_argument("rate", type=int)
    parser.add_argument("hot")
    parser.add_argument("hot_share", type=float)
    parser.add_argument("users", type=int)
    args = parser.parse_args()
    uvloop.run(_generate(args.redis_url, args.rate, args.hot, args.hot_share, args.users))


if __name__ == "__main__":
    _generator_main()
