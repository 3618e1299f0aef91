"""Issue #7's proof: a symbol migrated back and forth under concurrent load, with the
orchestrator, the source worker and the target worker each killed (SIGKILL) at every step.

Everything runs as it does in production, apart from the clients: `spot worker` processes
for the two shards, a `spot batcher` process writing to PostgreSQL, and each migration
driven by a `spot migrate` process. Several clients, each its own user, place limit and
market orders, cancel and replace through the order gateway (what the HTTP API calls), on the
migrating symbol and on a bystander that lives on the target shard.

Afterwards: every accepted command has exactly one outcome; each symbol's events run
1..N; the books, the events and the balances equal an engine that applied the same
commands in the order the router queued them and never migrated; the database agrees
with Redis and `spot audit` is clean.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from api.order_gateway import OrderGateway, hold_for
from control import migration
from schema import keys
from schema.codes import CancelReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    Canceled,
    Event,
    OrderType,
    Place,
    Rejected,
    Replace,
    Replaced,
    Side,
    TimeInForce,
)
from schema.symbols import SymbolSpec
from schema.tables import metadata
from spot.audit import audit, render, wait_caught_up
from store import db
from store.database import Database, empty, open_database
from store.symbols import list_symbol
from tests.integration.flow import SPEC, Sent, never_crashed
from workers.book import OrderBook
from workers.snapshots import decode_books
from workers.worker import LEASE_MS

SHARDS = 10
BYSTANDER = SymbolSpec(
    symbol="TSLA", base="TSLA", quote="USD", band_bps=2000, reference_price=25_000
)
SPECS = {spec.symbol: spec for spec in (SPEC, BYSTANDER)}
CLIENTS = 6
FUNDS = {"USD": 10**12, "AAPL": 10**7, "TSLA": 10**7}
STEP_TIMEOUT_S = 10.0  # per step: a killed worker is back well within it, so most move
VICTIMS = ("orchestrator", "source", "target")
ORDER = (*migration.STEPS, "ROLLBACK", "DONE")
_events = msgspec.msgpack.Decoder(list[Event])


@pytest.fixture
def database(database_url: str, aio: asyncio.Runner) -> str:
    db.upgrade(database_url)

    async def emptied() -> None:
        conn = await open_database(database_url, max_size=1)
        try:
            await empty(conn, list(metadata.tables))
        finally:
            await conn.close()

    aio.run(emptied())
    return database_url


# -- the clients ------------------------------------------------------------------------------


class Client:
    """One user ordering on both symbols through the router, recording what it accepted.

    `sent` is appended to right after the router's reply, with no await in between: the
    router's pipeline runs the scripts in the order the calls were made and resolves them in
    that order, so `sent` is the order the commands were queued in (which the oracle needs).
    """

    def __init__(self, router: OrderGateway, user: str, seed: int, sent: Sent) -> None:
        self.router = router
        self.user = user
        self.rng = random.Random(seed)
        self.sent = sent
        self.open: dict[int, list] = {}  # order id -> [spec, side, price, quantity]

    async def run(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.one()
            await asyncio.sleep(self.rng.uniform(0, 0.02))  # ~100 commands/s per client

    async def one(self) -> None:
        rng = self.rng
        roll = rng.random()
        if self.open and roll < 0.15:
            await self.cancel(rng.choice(list(self.open)))
        elif self.open and roll < 0.35:
            await self.replace(rng.choice(list(self.open)))
        else:
            spec = SPEC if rng.random() < 0.8 else BYSTANDER
            await self.place(spec, market=roll > 0.9)

    async def place(self, spec: SymbolSpec, market: bool) -> None:
        rng = self.rng
        ref = spec.reference_price or 0
        side = rng.choice(list(Side))
        if market:
            band = spec.band(ref)
            assert band is not None
            kind, price, tif = OrderType.MARKET, None, TimeInForce.GTC
            protection = band[1] if side is Side.BUY else None  # as the API funds it
        else:
            kind, price, protection = OrderType.LIMIT, ref + rng.randrange(-100, 101), None
            tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC))
        place = Place(
            order_id=await self.router.order_ids.take(),
            user_id=self.user,
            symbol=spec.symbol,
            side=side,
            quantity=rng.randrange(1, 20),
            type=kind,
            price=price,
            time_in_force=tif,
            protection_price=protection,
        )
        result = await self.router.place(spec, place, int(time.time() * 1000))
        assert result.status == "OK", result
        self.sent.append((place, hold_for(spec, place)[1]))
        if price is not None and tif is TimeInForce.GTC:
            self.open[place.order_id] = [spec, side, price, place.quantity]

    async def cancel(self, order_id: int) -> None:
        spec = self.open.pop(order_id)[0]
        cancel = Cancel(order_id=order_id, user_id=self.user, symbol=spec.symbol)
        result = await self.router.cancel(cancel)
        if result.status == "OK":
            self.sent.append((cancel, 0))
        else:
            assert result.status == "NOT_OPEN", result

    async def replace(self, order_id: int) -> None:
        spec, side, price, quantity = self.open[order_id]
        rng = self.rng
        if rng.random() < 0.5:  # smaller, same price: keeps its place
            new_price, new_quantity = price, max(1, quantity - rng.randrange(1, 5))
        else:  # repriced or larger: loses it
            new_price, new_quantity = price + rng.randrange(-30, 31), quantity + rng.randrange(5)
        # Price and quantity both given, so the hold does not depend on the order record.
        hold = new_price * new_quantity if side is Side.BUY else new_quantity
        replace = Replace(
            order_id=order_id,
            user_id=self.user,
            symbol=spec.symbol,
            price=new_price,
            quantity=new_quantity,
        )
        result = await self.router.replace(replace)
        if result.status == "OK":
            self.sent.append((replace, hold))
            self.open[order_id] = [spec, side, new_price, new_quantity]
        elif result.status == "NOT_OPEN":
            del self.open[order_id]
        else:
            assert result.status == "PENDING", result  # an earlier replace still queued


# -- the processes ------------------------------------------------------------------------------


class Processes:
    """The workers of the two shards, the batcher and the orchestrators, as `spot` processes."""

    def __init__(self, redis: Redis, redis_url: str, database_url: str, logs: Path) -> None:
        self.redis = redis
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPOT_")},
            "SPOT_REDIS_URL": redis_url,
            "SPOT_DATABASE_URL": database_url,
            "SPOT_SHARDS": str(SHARDS),
            "SPOT_SNAPSHOT_INTERVAL_S": "0.3",  # recovery is snapshot + replay, both used
            "SPOT_WORKER_BATCH": "50",
            # Finished orders' records kept through the run: the clients and check_database
            # read every order's record, which the batcher lets go once its end is committed.
            "SPOT_FINISHED_ORDER_KEPT_S": "3600",
        }
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.others: list[subprocess.Popen[bytes]] = []
        self.frozen: dict[int, asyncio.Task[None]] = {}
        # Each process logs to its own file: what a failure points at.
        self.logs = logs
        self.spawned = 0
        print(f"process logs in {logs}")

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        name = "-".join(args[:3]).replace("--", "")
        with open(self.logs / f"{self.spawned:03}-{name}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "spot.cli", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_worker(self, shard: int) -> None:
        self.workers[shard] = self.spawn("worker", "--shards", str(shard))

    async def kill_worker(self, shard: int) -> None:
        """kill -9 and a restart. The lease a dead worker held would run out by itself in
        LEASE_MS; it is dropped at once, as if it had, to keep the test short."""
        holding = self.frozen.pop(shard, None)
        if holding is not None:
            holding.cancel()
        proc = self.workers[shard]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await self.redis.delete(keys.owner(shard))
        self.start_worker(shard)

    def orchestrate(self, target: int) -> subprocess.Popen[bytes]:
        proc = self.spawn("migrate", SPEC.symbol, "--to", str(target),
                          "--timeout", str(STEP_TIMEOUT_S))  # fmt: skip
        self.others.append(proc)
        return proc

    def freeze(self, shard: int) -> None:
        """SIGSTOP the worker, its lease kept alive meanwhile (by this test, as the worker
        would): stopped longer than LEASE_MS on a busy machine, it would lose its shard."""
        self.workers[shard].send_signal(signal.SIGSTOP)
        self.frozen[shard] = asyncio.create_task(self._hold_lease(shard))

    async def _hold_lease(self, shard: int) -> None:
        while True:
            await self.redis.pexpire(keys.owner(shard), LEASE_MS)
            await asyncio.sleep(0.2)

    def thaw(self, shard: int) -> None:
        holding = self.frozen.pop(shard, None)
        if holding is not None:
            holding.cancel()
            self.workers[shard].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for holding in self.frozen.values():
            holding.cancel()
        for proc in [*self.workers.values(), *self.others]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in [*self.workers.values(), *self.others]:
            proc.wait(timeout=60)


async def exited(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the orchestrator never finished"
        await asyncio.sleep(0.02)
    return proc.returncode


async def step_of(redis: Redis, migration_id: str) -> str:
    step = await redis.hget(keys.migration(migration_id), "step")
    return "PAUSE" if step is None else step.decode()


async def reached(redis: Redis, migration_id: str, step: str, orchestrator) -> str:
    """Polls (every 0.5 ms) until the migration's persisted step is `step` or later."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await redis.exists(keys.migration(migration_id)):
            at = await step_of(redis, migration_id)
            if ORDER.index(at) >= ORDER.index(step):
                return at
        elif orchestrator.poll() is not None:
            raise AssertionError(f"the orchestrator exited with {orchestrator.returncode}")
        await asyncio.sleep(0.0005)
    raise AssertionError(f"{migration_id} never reached {step}")


async def migrate_with_a_kill(
    redis: Redis, procs: Processes, home: int, other: int, step: str, victim: str
) -> dict:
    """One migration to the other shard, with `victim` killed once the migration is at
    `step`. The steps that wait on a worker are held there by freezing (SIGSTOP) that worker
    (its lease kept alive): DRAIN the source, TRANSFER and CLEANUP the target. PAUSE
    and SWITCH are one atomic script each: the kill lands as soon as the step is seen."""
    source = int(await redis.hget(keys.route(SPEC.symbol), "shard"))
    target = other if source == home else home
    migration_id = f"{SPEC.symbol}-{int(await redis.get(keys.MIGRATION_IDS) or 0) + 1}"
    frozen = {"DRAIN": source, "TRANSFER": target}.get(step)
    if frozen is not None:
        procs.freeze(frozen)
    orchestrator = procs.orchestrate(target)
    paused_orchestrator = False
    try:
        if step == "CLEANUP":
            # CLEANUP waits for the target to apply the replayed commands: frozen as soon as
            # TRANSFER saw it adopt the book, the target has not. A worker victim dies with
            # the orchestrator held still too.
            await reached(redis, migration_id, "SWITCH", orchestrator)
            frozen = target
            procs.freeze(target)
            await reached(redis, migration_id, "CLEANUP", orchestrator)
            if victim != "orchestrator":
                orchestrator.send_signal(signal.SIGSTOP)
                paused_orchestrator = True
        at = await reached(redis, migration_id, step, orchestrator)
        if victim == "orchestrator":
            orchestrator.send_signal(signal.SIGKILL)
            orchestrator.wait()
            at = await step_of(redis, migration_id)  # where it died: nothing moves it now
        else:
            await procs.kill_worker(source if victim == "source" else target)
    finally:
        if frozen is not None:
            procs.thaw(frozen)  # unless it was killed
        if paused_orchestrator:
            orchestrator.send_signal(signal.SIGCONT)
    if victim == "orchestrator" and await redis.exists(keys.migrating(SPEC.symbol)):
        orchestrator = procs.orchestrate(target)  # `spot migrate` again resumes it
    await exited(orchestrator)
    done = await migration.status(redis, migration_id)
    assert done["state"] in ("DONE", "ROLLED_BACK"), done
    shard, status = await redis.hmget(keys.route(SPEC.symbol), "shard", "status")
    assert (int(shard), status) == (target if done["state"] == "DONE" else source, b"ACTIVE")
    done["killed"] = (victim, step, at)
    return done


# -- what the events must show ---------------------------------------------------------------------


class Recorder:
    """Every entry of the two shards' event streams, read as they come: the batcher trims
    what it has persisted, so the streams alone do not keep them."""

    def __init__(self, redis: Redis, shards: list[int]) -> None:
        self.redis = redis
        self.positions = {keys.events(n): "0-0" for n in shards}
        self.entries: list[bytes] = []
        self.done = False

    async def run(self) -> None:
        while not self.done:
            await self.read(block=100)

    async def read(self, block: int | None = None) -> int:
        reply = await self.redis.xread(self.positions, count=500, block=block)
        got = 0
        for stream, entries in reply or ():
            self.positions[stream.decode()] = entries[-1][0].decode()
            self.entries += [fields[b"events"] for _, fields in entries]
            got += len(entries)
        return got

    async def events(self) -> dict[str, list[Event]]:
        self.done = True
        while await self.read():
            pass
        out: dict[str, list[Event]] = {symbol: [] for symbol in SPECS}
        for payload in self.entries:
            for event in _events.decode(payload):
                out[event.symbol].append(event)
        return {symbol: sorted(events, key=lambda e: e.seq) for symbol, events in out.items()}


def outcomes_of_commands(sent: Sent) -> Counter:
    out: Counter = Counter()
    for command, _ in sent:
        out[(type(command).__name__, command.order_id)] += 1
    return out


def outcomes_in_events(events: list[Event]) -> Counter:
    """One outcome per command: a place is accepted or rejected, a cancel cancels (USER) or
    is rejected, a replace replaces or is rejected."""
    out: Counter = Counter()
    for e in events:
        if type(e) is Accepted or (type(e) is Rejected and e.action is Action.PLACE):
            out[("Place", e.order_id)] += 1
        elif (type(e) is Canceled and e.reason is CancelReason.USER) or (
            type(e) is Rejected and e.action is Action.CANCEL
        ):
            out[("Cancel", e.order_id)] += 1
        elif type(e) is Replaced or (type(e) is Rejected and e.action is Action.REPLACE):
            out[("Replace", e.order_id)] += 1
    return out


def paying_asset(command, sides: dict[int, Side]) -> str | None:
    spec = SPECS[command.symbol]
    if isinstance(command, Place):
        return hold_for(spec, command)[0]
    if isinstance(command, Replace):
        return spec.quote if sides[command.order_id] is Side.BUY else spec.base
    return None


async def check_money(redis: Redis, sent: Sent, settlement, users: list[str]) -> None:
    sides = {c.order_id: c.side for c, _ in sent if isinstance(c, Place)}
    held: Counter = Counter()
    for command, hold in sent:
        asset = paying_asset(command, sides)
        if asset is not None:
            held[(command.user_id, asset)] += hold
    for user in users:
        for asset, funded in FUNDS.items():
            d_avail, d_locked = settlement.balances.get((user, asset), [0, 0])
            avail, locked = await redis.hmget(
                keys.balance(user), keys.available(asset), keys.locked(asset)
            )
            expected = (funded - held[(user, asset)] + d_avail, held[(user, asset)] + d_locked)
            assert (int(avail), int(locked)) == expected, (user, asset)


async def check_database(redis: Redis, conn: Database, sent: Sent) -> None:
    """The batcher caught up; every order row says what Redis says; the audit is clean."""
    behind = await wait_caught_up(redis, conn, SHARDS, timeout=60)
    assert not behind, behind
    rows = await conn.fetch("SELECT order_id, status, remaining, filled, price FROM orders")
    assert len(rows) == len({c.order_id for c, _ in sent if isinstance(c, Place)})
    for row in rows:
        record = await redis.hmget(keys.order(row["order_id"]), "status", "remaining", "filled")
        assert (row["status"], row["remaining"], row["filled"]) == (
            record[0].decode(),
            int(record[1]),
            int(record[2] or 0),  # no fill yet: no field (schema.orders.ORDER_RECORD_DEFAULTED)
        ), row["order_id"]
    found = await audit(redis, conn)
    assert not any(found.values()), render(found, behind)


async def snapshot_books(redis: Redis, shard: int) -> dict[str, bytes]:
    data = await redis.hget(keys.snapshot(shard), "books")
    return decode_books(data)


def state_hash(spec: SymbolSpec, data: bytes) -> str:
    book = OrderBook(spec)
    book.restore(data)
    book.validate()
    return book.state_hash()


async def settled(redis: Redis, shards: list[int]) -> bool:
    if await redis.exists(keys.pending(SPEC.symbol)):
        return False
    for n in shards:
        last = await redis.xrevrange(keys.orders(n), count=1)
        if last and await redis.get(keys.applied(n)) != last[0][0]:
            return False
    return True


# -- the proof ------------------------------------------------------------------------------------


def test_migrating_under_load_with_kills_at_every_step_equals_never_migrating(
    redis, redis_url, database, aio, tmp_path
):
    # Its own time limit: fifteen migrations and their restarts outlast the usual one.
    aio.run(asyncio.wait_for(_prove(redis, redis_url, database, tmp_path), 240))


async def _prove(redis: Redis, redis_url: str, database_url: str, logs: Path) -> None:
    home = await list_symbol(redis, SPEC, SHARDS)
    other = await list_symbol(redis, BYSTANDER, SHARDS)
    assert home != other
    router = OrderGateway(redis)
    users = [f"client{n}" for n in range(CLIENTS)]
    for user in users:
        for asset, amount in FUNDS.items():
            assert (await router.transfer(user, asset, amount, "seed")).status == "OK"
    procs = Processes(redis, redis_url, database_url, logs)
    recorder_redis = Redis.from_url(redis_url)
    recorder = Recorder(recorder_redis, [home, other])
    recording = asyncio.create_task(recorder.run())
    sent: Sent = []
    stopping = False
    clients: list[asyncio.Task[None]] = []
    figures = []
    try:
        procs.start_worker(home)
        procs.start_worker(other)
        procs.others.append(procs.spawn("batcher"))
        clients = [
            asyncio.create_task(Client(router, user, n, sent).run(lambda: stopping))
            for n, user in enumerate(users)
        ]
        for step in migration.STEPS:
            for victim in VICTIMS:
                await until_more(sent, 100)
                figures.append(await migrate_with_a_kill(redis, procs, home, other, step, victim))
        await until_more(sent, 100)
        stopping = True
        await asyncio.gather(*clients)
        events, books = await settle_and_stop(redis, procs, recorder, home, other)
        conn = await open_database(database_url, max_size=1)
        try:
            await check_database(redis, conn, sent)
        finally:
            await conn.close()
    finally:
        stopping = True
        for task in clients:
            task.cancel()
        recorder.done = True
        await asyncio.wait([recording])
        await recorder_redis.aclose()
        procs.stop()
    await check_against_never_migrated(redis, sent, events, books, users)
    assert any(f["state"] == "DONE" for f in figures)
    print(f"\n{len(sent)} commands; kills (victim, step, persisted step when killed), outcome:")
    for f in figures:
        print(
            f"  {f['id']}: {f['killed']} -> {f['state']}, paused "
            f"{f.get('paused_for_ms')} ms, {f.get('pending')} pending"
        )


async def settle_and_stop(
    redis: Redis, procs: Processes, recorder: Recorder, home: int, other: int
) -> tuple[dict[str, list[Event]], dict[str, bytes]]:
    """Once the workers applied everything: the events, and each book as its owner's last
    snapshot holds it (a worker stopped with SIGTERM snapshots first)."""
    for _ in range(3000):
        if await settled(redis, [home, other]):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the workers never caught up")
    events = await recorder.events()
    owner = int(await redis.hget(keys.route(SPEC.symbol), "shard"))
    for shard in (home, other):
        procs.workers[shard].terminate()
        procs.workers[shard].wait(timeout=60)
    books = {
        SPEC.symbol: (await snapshot_books(redis, owner))[SPEC.symbol],
        BYSTANDER.symbol: (await snapshot_books(redis, other))[BYSTANDER.symbol],
    }
    return events, books


async def check_against_never_migrated(
    redis: Redis, sent: Sent, events: dict[str, list[Event]], books: dict[str, bytes], users
) -> None:
    engine, expected, settlement = never_crashed(sent, list(SPECS.values()))
    for symbol in SPECS:
        got = events[symbol]
        assert [e.seq for e in got] == list(range(1, len(got) + 1)), symbol  # no gap, no repeat
        assert got == [e for e in expected if e.symbol == symbol], symbol
        assert state_hash(SPECS[symbol], books[symbol]) == engine.books[symbol].state_hash()
    assert outcomes_in_events(events[SPEC.symbol] + events[BYSTANDER.symbol]) == (
        outcomes_of_commands(sent)
    )
    for command, _ in sent:
        if isinstance(command, Place):
            assert await redis.hget(keys.order(command.order_id), "status") != b"NEW"
    await check_money(redis, sent, settlement, users)
    assert sum(isinstance(c, Replace) for c, _ in sent) > 100


async def until_more(sent: Sent, more: int) -> None:
    target = len(sent) + more
    while len(sent) < target:
        await asyncio.sleep(0.005)
