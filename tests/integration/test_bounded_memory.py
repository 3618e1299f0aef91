"""Bounded Redis memory (issue #19): what Redis holds grows with open orders and short
windows, not with traffic. A finished order's record leaves Redis once the batcher has
committed it (after SPOT_FINISHED_ORDER_KEPT_S), reads fall back to the database, and a
client_order_id is taken for SPOT_CLIENT_ORDER_ID_WINDOW_S. Real Redis and PostgreSQL,
the worker and the batcher stepped in-process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.order_gateway import OrderGateway
from batcher.batcher import Batcher
from schema import keys
from schema.messages import Cancel, Place, Side
from schema.tables import metadata
from spot.audit import caught_up
from store import db
from store.database import Database, empty, open_database
from store.symbols import list_symbol
from tests.integration.flow import SPEC
from tests.integration.http import Server, start_api, stop_api, until_listed, user_token
from workers.worker import Worker

SHARDS = 2
KEPT_S = 1  # a finished order's record, once committed; and a client order id's window
PRICE = 10_000


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    db.upgrade(database_url)
    return database_url


@pytest.fixture
def pool(migrated: str, aio: asyncio.Runner):
    async def setup() -> Database:
        pool = await open_database(migrated, min_size=1, max_size=2)
        await empty(pool, list(metadata.tables))
        return pool

    pool = aio.run(setup())
    yield pool
    aio.run(pool.close())


class Market:
    def __init__(self, redis: Any, pool: Database) -> None:
        self.redis = redis
        self.router = OrderGateway(redis, client_order_id_window_s=KEPT_S)
        self.pool = pool
        self.worker: Worker
        self.batcher = Batcher(
            redis, pool, list(range(SHARDS)), batch=500, interval_s=0.01,
            finished_order_kept_s=KEPT_S,
        )  # fmt: skip
        self.placed = 0

    async def start(self) -> None:
        shard = await list_symbol(self.redis, SPEC, SHARDS)
        for user in ("alice", "bob"):
            await self.router.transfer(user, "USD", 10**12, "seed")
            await self.router.transfer(user, "AAPL", 10**9, "seed")
        self.worker = Worker(self.redis, [shard], batch=500, lease_ms=600_000)  # not renewed
        await self.worker._acquire_leases(asyncio.Event())
        await self.worker.load_specs()
        await self.batcher.start()

    async def place(self, user: str, side: Side) -> int:
        self.placed += 1
        order = Place(
            order_id=await self.router.order_ids.take(),
            user_id=user,
            symbol=SPEC.symbol,
            side=side,
            price=PRICE,
            quantity=1,
            client_order_id=f"c{self.placed}",
        )
        assert (await self.router.place(SPEC, order, 0)).status == "OK"
        return order.order_id

    async def trade(self, rounds: int) -> None:
        """`rounds` times: a sell that rests and a buy that fills it, the same the other
        way round, and a sell that is canceled: five finished orders a round."""
        for _ in range(rounds):
            for maker, taker in (("bob", "alice"), ("alice", "bob")):
                side = Side.SELL if maker == "bob" else Side.BUY
                await self.place(maker, side)  # rests
                await self.place(taker, Side.BUY if side is Side.SELL else Side.SELL)  # fills it
            canceled = await self.place("bob", Side.SELL)
            await self.router.cancel(Cancel(order_id=canceled, user_id="bob", symbol=SPEC.symbol))
        await self.settle()

    async def settle(self) -> None:
        conn = self.pool
        for _ in range(10_000):
            await self.worker.step()
            await self.batcher.step()
            if not await caught_up(self.redis, conn, SHARDS):
                break
        for shard in self.worker.shards.values():
            await self.worker.snapshot(shard)  # trims what the snapshot covers
        await asyncio.sleep(KEPT_S + 1.5)  # past both windows

    async def held(self) -> int:
        """Bytes of every key in Redis (MEMORY USAGE): what the data set costs."""
        total = 0
        async for key in self.redis.scan_iter(count=1000):
            total += await self.redis.memory_usage(key, samples=0) or 0
        return total


async def test_memory_per_finished_order_tends_to_zero(redis, pool) -> None:
    market = Market(redis, pool)
    await market.start()
    await market.trade(100)  # warm: every list and stream at its bounded size
    before, orders_before = await market.held(), market.placed
    await market.trade(600)
    after, finished = await market.held(), market.placed - orders_before

    assert not [k async for k in redis.scan_iter(match=keys.ORDER + "*")]
    assert not [k async for k in redis.scan_iter(match=keys.CLIENT_ORDER + "*")]
    per_order = (after - before) / finished
    # A finished order's record alone is ~200 bytes, its client order id's key ~70.
    assert per_order < 10, f"{per_order:.1f} bytes per finished order ({before} -> {after})"
    conn = pool
    assert await conn.fetchval("SELECT count(*) FROM orders") == market.placed


@pytest.fixture(scope="module")
def api(redis_url: str, migrated: str, tmp_path_factory: pytest.TempPathFactory):
    server = start_api(
        tmp_path_factory.mktemp("api"),
        redis_url=redis_url,
        database_url=migrated,
        shards=str(SHARDS),
    )
    try:
        yield server
    finally:
        stop_api(server)


async def test_a_committed_order_is_read_from_the_database_once_gone_from_redis(
    redis, pool, api: Server
) -> None:
    """Once its record is gone the database answers for it: the order itself, the user's
    orders, and a cancel or replace of it (409, as while the record was there). The
    batcher lets a record go only after its commit, so no read finds nothing between."""
    market = Market(redis, pool)
    await market.start()
    await asyncio.to_thread(until_listed, api, {SPEC.symbol})
    alice, bob = user_token("alice"), user_token("bob")
    order = {"symbol": SPEC.symbol, "price": PRICE, "quantity": 1}
    status, sell = await asyncio.to_thread(
        api.request, "POST", "/v1/orders", order | {"side": "SELL"}, token=bob
    )
    assert status == 202, sell
    status, buy = await asyncio.to_thread(
        api.request, "POST", "/v1/orders", order | {"side": "BUY"}, token=alice
    )
    assert status == 202, buy
    buy_id = buy["order_id"]
    conn = pool
    for _ in range(1_000):
        await market.worker.step()
        await market.batcher.step()
        if not await caught_up(redis, conn, SHARDS):
            break
    assert await conn.fetchval("SELECT status FROM orders WHERE order_id = $1", buy_id) == (
        "FILLED"
    )
    assert 0 < await redis.ttl(keys.order(buy_id)) <= KEPT_S  # committed: going soon
    await asyncio.sleep(KEPT_S + 1)
    assert not await redis.exists(keys.order(buy_id), keys.order(sell["order_id"]))

    def read_back() -> None:
        status, view = api.request("GET", f"/v1/orders/{buy_id}", token=alice)
        assert (status, view["status"], view["filled"]) == (200, "FILLED", 1), view
        status, listed = api.request("GET", "/v1/orders", token=alice)
        assert [o["order_id"] for o in listed["orders"]] == [buy_id], listed
        for method, body in (("DELETE", None), ("PATCH", {"price": PRICE + 10})):
            status, reply = api.request(method, f"/v1/orders/{buy_id}", body, token=alice)
            assert (status, reply["error"]) == (409, "ORDER_NOT_OPEN"), (method, reply)
            assert "FILLED" in reply["message"]
            # someone else's order is still no order of theirs
            status, reply = api.request(method, f"/v1/orders/{buy_id}", body, token=bob)
            assert status == 404, reply

    await asyncio.to_thread(read_back)


async def test_a_client_order_id_is_taken_for_its_window_then_free_again(redis, pool) -> None:
    """Within the window a repeat names the first order (409 at the API); after it the id
    may be used again, and the batcher commits both orders (the table's unique constraint
    once refused such a batch, and every order after it waited)."""
    market = Market(redis, pool)
    await market.start()

    def place(order_id: int) -> Place:
        return Place(order_id=order_id, user_id="alice", symbol=SPEC.symbol, side=Side.BUY,
                     price=PRICE, quantity=1, client_order_id="reused")  # fmt: skip

    first, second, third = [await market.router.order_ids.take() for _ in range(3)]
    assert (await market.router.place(SPEC, place(first), 0)).status == "OK"
    repeat = await market.router.place(SPEC, place(second), 0)
    assert (repeat.status, repeat.detail) == ("DUPLICATE", str(first))
    await asyncio.sleep(KEPT_S + 0.5)
    assert (await market.router.place(SPEC, place(third), 0)).status == "OK"
    await market.settle()
    conn = pool
    rows = await conn.fetch("SELECT order_id, client_order_id FROM orders ORDER BY order_id")
    assert [tuple(r) for r in rows] == [(first, "reused"), (third, "reused")]
