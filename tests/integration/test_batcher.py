"""The batcher on real Redis and PostgreSQL: trades land once, the database agrees with
Redis, a batcher killed at any moment loses and duplicates nothing, and the audit both
passes a clean run and catches a corrupted balance."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

import asyncpg
import pytest

from api.router import Router
from batcher.batcher import Batcher
from schema import keys
from schema.messages import Trade
from spot import db
from spot.audit import audit, caught_up
from spot.market import list_symbol
from tests.integration.flow import SPEC, never_crashed, random_flow
from workers.consumer import Worker

SHARDS = 10
TABLES = ("orders", "trades", "balances", "ledger", "consumer_offsets", "symbols")


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
def pool(migrated: str, aio: asyncio.Runner):
    async def setup() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(migrated, min_size=1, max_size=3)
        await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
        return pool

    pool = aio.run(setup())
    yield pool
    aio.run(pool.close())


@pytest.fixture
def market(redis, aio):
    async def setup():
        shard = await list_symbol(redis, SPEC, SHARDS)
        router = Router(redis)
        for user in ("alice", "bob"):
            await router.transfer(user, "USD", 1_000_000_000, "seed")
            await router.transfer(user, "AAPL", 1_000_000, "seed")
        worker = Worker(redis, [shard], batch=50)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        return router, shard, worker

    return aio.run(setup())


async def drain(worker: Worker, batcher: Batcher, redis, conn) -> None:
    """Step the worker and the batcher until nothing is left behind."""
    for _ in range(1_000):
        await worker.step()
        await batcher.step()
        if not await caught_up(redis, conn, SHARDS):
            return
    raise AssertionError("never caught up")


async def test_trades_land_once_and_the_database_agrees_with_redis(redis, pool, market):
    router, shard, worker = market
    batcher = Batcher(redis, pool, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    sent: list = []
    await random_flow(router, random.Random(3), sent, lambda n: n >= 400)
    async with pool.acquire() as conn:
        await drain(worker, batcher, redis, conn)
        _, expected, _ = never_crashed(sent)
        trades = [e for e in expected if type(e) is Trade]
        assert len(trades) > 20
        rows = await conn.fetch("SELECT symbol, seq, price, quantity FROM trades ORDER BY seq")
        assert [tuple(r) for r in rows] == [(t.symbol, t.seq, t.price, t.quantity) for t in trades]
        assert await audit(redis, conn) == {name: [] for name in await audit(redis, conn)}

        # A redelivery (positions rewound, as after a crash before the offsets were read)
        # is refused against the offsets in the database: nothing is written twice.
        batcher.positions = dict.fromkeys(batcher.positions, "0-0")
        await redis.xadd(keys.events(shard), {"id": "0-1", "first": "0-1", "events": b"\x90",
                                              "balances": b"\x90"})  # fmt: skip
        await batcher.step()
        await batcher.step()
        assert await conn.fetchval("SELECT count(*) FROM trades") == len(trades)


async def test_audit_catches_a_corrupted_balance(redis, pool, market):
    router, _, worker = market
    batcher = Batcher(redis, pool, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await random_flow(router, random.Random(5), [], lambda n: n >= 100)
    async with pool.acquire() as conn:
        await drain(worker, batcher, redis, conn)
        assert not any((await audit(redis, conn)).values())
        await redis.hincrby(keys.balance("bob"), keys.available("USD"), 7)
        found = await audit(redis, conn)
        assert any("('bob', 'USD')" in p for p in found["balances"])
        assert any("USD" in p for p in found["conservation"])


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spot.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_batcher_killed_before_during_and_after_commits(
    redis, redis_url, migrated, pool, market
):
    router, shard, worker = market
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPOT_")},
        "SPOT_REDIS_URL": redis_url,
        "SPOT_DATABASE_URL": migrated,
        "SPOT_SHARDS": str(SHARDS),
        "SPOT_BATCHER_BATCH": "20",  # many small flushes: kills land in every phase
        "SPOT_BATCHER_INTERVAL_S": "0.02",
    }
    rng = random.Random(11)
    sent: list = []
    kills = 0
    flow = asyncio.create_task(
        random_flow(router, rng, sent, lambda n: kills >= 4 and n % 200 == 0)
    )
    applying = asyncio.create_task(_keep_stepping(worker, flow))
    batcher = start("batcher", env=env)
    try:
        while kills < 4:
            flushes = await redis.hget(keys.BATCHER_STATS, "flushes")
            while await redis.hget(keys.BATCHER_STATS, "flushes") == flushes:
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0, 0.03))
            batcher.send_signal(signal.SIGKILL)
            batcher.wait()
            kills += 1
            batcher = start("batcher", env=env)
        await flow
        await applying
        async with pool.acquire() as conn:
            for _ in range(600):
                if not await caught_up(redis, conn, SHARDS):
                    break
                await asyncio.sleep(0.05)
            _, expected, _ = never_crashed(sent)
            trades = [(e.symbol, e.seq) for e in expected if type(e) is Trade]
            rows = await conn.fetch("SELECT symbol, seq FROM trades ORDER BY seq")
            assert [tuple(r) for r in rows] == trades
            orders = {c.order_id for c, _ in sent if hasattr(c, "side")}
            assert await conn.fetchval("SELECT count(*) FROM orders") == len(orders)
            assert not any((await audit(redis, conn)).values())
    finally:
        flow.cancel()
        applying.cancel()
        batcher.terminate()
        batcher.wait(timeout=30)


async def _keep_stepping(worker: Worker, flow: asyncio.Task) -> None:
    stop = asyncio.Event()
    renewing = asyncio.create_task(worker._renew_leases(stop))  # the test outlives a lease
    try:
        while not flow.done():
            await worker.step(block_ms=10)
        while await worker.step(block_ms=10):
            pass
    finally:
        stop.set()
        renewing.cancel()
