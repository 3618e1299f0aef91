"""Stops through the parts that crash and move, over real HTTP: the API and the matching
workers as processes of their own (`spot worker`), orders placed with curl-like requests.

- A worker killed with SIGKILL while untriggered stops and a GTD order wait on its book:
  its successor restores them (from the snapshot and from the stream after it), expires the
  GTD order by its own clock, and the stops trigger and fill as if nothing had happened.
- A symbol moved to another shard while a stop waits on it, with the order that triggers
  the stop placed during the migration (buffered in `pending`): the stop travels in the
  handed-over book and triggers on the target.

Both end with the database caught up (an in-process batcher) and `spot audit` clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from batcher.batcher import Batcher
from schema import keys
from schema.messages import Accepted, Event, Triggered
from schema.symbols import SymbolSpec
from spot.audit import audit, caught_up, render
from store import db
from store.database import open_database
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, until_listed, user_token

SHARDS = 10
TABLES = (
    "orders", "trades", "balances", "ledger", "consumer_offsets", "symbols", "symbol_progress"
)  # fmt: skip
BTC = SymbolSpec(symbol="BTC-USD", base="BTC", quote="USD", band_bps=1000, reference_price=50_000)
HOME = keys.home_shard("BTC-USD", SHARDS)
OTHER = (HOME + 3) % SHARDS
events_decoder = msgspec.msgpack.Decoder(list[Event])


@pytest.fixture(scope="module")
def migrated(database_url: str, aio: asyncio.Runner) -> str:
    aio.run(asyncio.to_thread(db.upgrade, database_url))
    return database_url


@pytest.fixture(scope="module")
def api(
    redis_url: str, migrated: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_api(
        tmp_path_factory.mktemp("api"), redis_url=redis_url, database_url=migrated,
        shards=str(SHARDS),
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_api(server)


class Stack:
    """The API, `spot worker` processes by shard, and the HTTP calls the tests make."""

    def __init__(self, api: Server, redis: Redis, redis_url: str, logs: Path) -> None:
        self.api = api
        self.redis = redis
        self.redis_url = redis_url
        self.logs = logs
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self._users = 0

    def start_worker(self, shard: int, snapshot_interval_s: float = 3600) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
        env |= {
            "SPOT_REDIS_URL": self.redis_url,
            "SPOT_SHARDS": str(SHARDS),
            "SPOT_SNAPSHOT_INTERVAL_S": str(snapshot_interval_s),
        }
        with (self.logs / f"worker-{shard}-{time.monotonic_ns()}.log").open("wb") as out:
            self.workers[shard] = subprocess.Popen(
                [sys.executable, "-m", "spot.cli", "worker", "--shards", str(shard)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, shard: int, sig: signal.Signals) -> None:
        self.workers[shard].send_signal(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.workers.pop(shard).wait(timeout=30)

    def stop_all(self) -> None:
        for shard in list(self.workers):
            self.workers[shard].send_signal(signal.SIGCONT)
            self.signal(shard, signal.SIGTERM)

    def user(self, **amounts: int) -> str:
        self._users += 1
        user = f"chaos{self._users}"
        for asset, amount in amounts.items():
            transfer = {"user_id": user, "asset": asset, "amount": amount}
            assert self.api.request("POST", "/v1/admin/deposits", transfer, token=admin())[0] == 200
        return user_token(user)

    def place(self, token: str, side: str, quantity: int, **order: Any) -> int:
        body = {"symbol": "BTC-USD", "side": side, "quantity": quantity, **order}
        status, reply = self.api.request("POST", "/v1/orders", body, token=token)
        assert status == 202, reply
        return int(reply["order_id"])

    def order(self, token: str, order_id: int) -> dict[str, Any]:
        status, view = self.api.request("GET", f"/v1/orders/{order_id}", token=token)
        assert status == 200, view
        return dict(view)

    async def until(self, token: str, order_id: int, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (view := self.order(token, order_id))["status"] != status:
            assert time.monotonic() < deadline, (order_id, view, status)
            await asyncio.sleep(0.05)

    def balances(self, token: str) -> dict[str, tuple[int, int]]:
        _, reply = self.api.request("GET", "/v1/balances", token=token)
        return {b["asset"]: (b["available"], b["locked"]) for b in reply["balances"]}

    async def settled(self, shard: int) -> None:
        """The shard's worker has settled everything in its stream."""
        for _ in range(600):
            last = await self.redis.xrevrange(keys.orders(shard), count=1)
            if not last or await self.redis.get(keys.applied(shard)) == last[0][0]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"shard {shard} never settled")

    async def events(self, shard: int) -> list[Event]:
        out: list[Event] = []
        for _, fields in await self.redis.xrange(keys.events(shard)):
            out.extend(events_decoder.decode(fields[b"events"]))
        return out


@pytest.fixture
def stack(
    api: Server, redis: Redis, redis_url: str, migrated: str, aio: asyncio.Runner, tmp_path: Path
) -> Iterator[Stack]:
    async def setup() -> None:
        conn = await asyncpg.connect(migrated)
        try:
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        finally:
            await conn.close()
        assert await list_symbol(redis, BTC, SHARDS) == HOME

    aio.run(setup())
    until_listed(api, {"BTC-USD"})
    stack = Stack(api, redis, redis_url, tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()


async def persisted_and_audited(redis: Redis, database_url: str) -> None:
    pool = await open_database(database_url, min_size=1, max_size=2)
    try:
        batcher = Batcher(redis, pool, list(range(SHARDS)), batch=500, interval_s=0.01)
        await batcher.start()
        for _ in range(200):
            behind = await caught_up(redis, pool, SHARDS)
            if not behind:
                break
            await batcher.step()
        assert not behind, behind
        found = await audit(redis, pool)
        assert not any(found.values()), render(found, [])
    finally:
        await pool.close()


async def test_untriggered_stops_and_a_gtd_order_survive_a_sigkill(
    stack: Stack, redis: Redis, migrated: str
) -> None:
    maker = stack.user(BTC=100)
    stopper = stack.user(USD=10_000_000)
    taker = stack.user(USD=10_000_000)
    for price, quantity in ((50_100, 1), (50_200, 3), (50_300, 3)):
        stack.place(maker, "SELL", quantity, price=price)
    stack.start_worker(HOME)
    # The first stop goes into a snapshot: SIGTERM snapshots the books before stopping.
    first = stack.place(stopper, "BUY", 3, type="STOP_LIMIT", stop_price=50_100, price=50_200)
    await stack.until(stopper, first, "UNTRIGGERED")
    stack.signal(HOME, signal.SIGTERM)
    books = await redis.hget(keys.snapshot(HOME), "books")
    assert books is not None
    # The second stop and a GTD order only in the stream after it: SIGKILL, no snapshot.
    stack.start_worker(HOME)
    second = stack.place(stopper, "BUY", 3, type="STOP_MARKET", stop_price=50_200)
    expire_at = int(time.time() * 1000) + 8_000  # after the restart below, well before the end
    gtd = stack.place(stopper, "BUY", 2, price=49_000, time_in_force="GTD", expire_at_ms=expire_at)
    await stack.until(stopper, second, "UNTRIGGERED")
    await stack.until(stopper, gtd, "OPEN")
    stack.signal(HOME, signal.SIGKILL)
    assert await redis.hget(keys.snapshot(HOME), "books") == books  # nothing newer
    held = 3 * 50_200 + 3 * 55_000 + 2 * 49_000  # the STOP_MARKET buy at the band's edge
    assert stack.balances(stopper)["USD"] == (10_000_000 - held, held)

    stack.start_worker(HOME)  # restores the first stop, re-applies the second and the GTD
    await stack.until(stopper, gtd, "CANCELED", timeout=30)  # by the new worker's clock
    assert stack.order(stopper, gtd)["reason"] == "EXPIRED"
    assert time.time() * 1000 >= expire_at

    stack.place(taker, "BUY", 1, price=50_100)  # 50_100 sets off the first, whose 50_200 the second
    await stack.until(stopper, second, "FILLED")
    view = stack.order(stopper, first)
    assert (view["status"], view["triggered"], view["average_price"]) == ("FILLED", True, 50_200)
    assert stack.order(stopper, second)["average_price"] == 50_300
    assert stack.balances(stopper) == {
        "USD": (10_000_000 - 3 * 50_200 - 3 * 50_300, 0),
        "BTC": (6, 0),
    }
    # Each order accepted once, each stop triggered once, through the SIGKILL and restarts.
    events = await stack.events(HOME)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.order_id for e in events if type(e) is Triggered] == [first, second]
    assert len([e for e in events if type(e) is Accepted]) == 7  # 3 asks, 2 stops, gtd, taker
    await stack.settled(HOME)
    await persisted_and_audited(redis, migrated)


async def test_a_stop_waiting_through_a_migration_triggers_on_the_target(
    stack: Stack, redis: Redis, migrated: str
) -> None:
    maker = stack.user(BTC=100)
    stopper = stack.user(USD=10_000_000)
    taker = stack.user(USD=10_000_000)
    stack.start_worker(HOME)
    stack.start_worker(OTHER)
    stack.place(maker, "SELL", 1, price=50_100)
    ask = stack.place(maker, "SELL", 4, price=50_200)
    # The API's last price is up to a refresh (0.2 s) old: the previous test's 50,300 may
    # still stand there after the flush, and make this stop one that would trigger at once.
    body = {"symbol": "BTC-USD", "side": "BUY", "quantity": 4, "type": "STOP_LIMIT",
            "stop_price": 50_100, "price": 50_250}  # fmt: skip
    deadline = time.monotonic() + 10
    while (answer := stack.api.request("POST", "/v1/orders", body, token=stopper))[0] != 202:
        assert answer[1]["error"] == "STOP_WOULD_TRIGGER" and time.monotonic() < deadline, answer
        await asyncio.sleep(0.05)
    stop = int(answer[1]["order_id"])
    await stack.until(stopper, stop, "UNTRIGGERED")

    # The source frozen, the migration waits at DRAIN with routing paused: what is placed
    # now waits in pending:BTC-USD, to be replayed on the target after the switch.
    stack.signal(HOME, signal.SIGSTOP)
    move = {"symbol": "BTC-USD", "to_shard": OTHER, "timeout_s": 60}
    status, started = stack.api.request("POST", "/v1/admin/migrations", move, token=admin())
    assert status == 202, started
    deadline = time.monotonic() + 10
    while await redis.hget(keys.route("BTC-USD"), "status") != b"MIGRATING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    trigger = stack.place(taker, "BUY", 1, price=50_100)
    assert await redis.xlen(keys.pending("BTC-USD")) == 1
    stack.signal(HOME, signal.SIGCONT)

    path = f"/v1/admin/migrations/{started['id']}"
    deadline = time.monotonic() + 60
    while (view := stack.api.request("GET", path, token=admin())[1])["state"] != "DONE":
        assert view["state"] == "RUNNING" and time.monotonic() < deadline, view
        await asyncio.sleep(0.05)
    assert view["pending"] == 1
    await stack.until(stopper, stop, "FILLED")
    assert stack.order(taker, trigger)["status"] == "FILLED"
    assert stack.order(maker, ask)["status"] == "FILLED"
    assert stack.balances(stopper) == {"USD": (10_000_000 - 4 * 50_200, 0), "BTC": (4, 0)}
    # The target applied the buffered trade and triggered the stop; the source never did.
    assert any(type(e) is Triggered and e.order_id == stop for e in await stack.events(OTHER))
    assert not any(type(e) is Triggered for e in await stack.events(HOME))
    await stack.settled(OTHER)
    await persisted_and_audited(redis, migrated)
