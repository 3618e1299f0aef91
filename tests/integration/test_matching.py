"""The order path below HTTP, on real Redis: router scripts, shard workers, settlement,
and recovery from kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

import msgspec
import pytest

from api.order_gateway import OrderGateway
from schema import keys
from schema.messages import Cancel, Event, Place, Replace, Side, Triggered
from store.symbols import list_symbol
from tests.integration.flow import SPEC, never_crashed, random_flow
from workers.engine import MatchingEngine
from workers.snapshots import decode_books
from workers.worker import Worker

SHARDS = 10
events_decoder = msgspec.msgpack.Decoder(list[Event])


async def balance(redis, user: str, asset: str) -> tuple[int, int]:
    avail, locked = await redis.hmget(keys.balance(user), keys.available(asset), keys.locked(asset))
    return int(avail or 0), int(locked or 0)


async def stream_events(redis, shard: int) -> list[Event]:
    out: list[Event] = []
    for _, fields in await redis.xrange(keys.events(shard)):
        out.extend(events_decoder.decode(fields[b"events"]))
    return out


@pytest.fixture
def market(redis, aio):
    """AAPL listed, alice and bob funded; returns the router and AAPL's shard."""

    async def setup():
        shard = await list_symbol(redis, SPEC, SHARDS)
        router = OrderGateway(redis)
        for user in ("alice", "bob"):
            await router.transfer(user, "USD", 10_000_000, "seed")
            await router.transfer(user, "AAPL", 10_000, "seed")
        return router, shard

    return aio.run(setup())


async def place(router: OrderGateway, user: str, side: Side, price: int, qty: int, **kw) -> int:
    order_id = await router.order_ids.take()
    command = Place(
        order_id=order_id, user_id=user, symbol="AAPL", side=side, price=price, quantity=qty, **kw
    )
    result = await router.place(SPEC, command, created_ms=0)
    assert result.status == "OK", result
    return order_id


async def test_a_crossing_order_trades_and_balances_move_by_exactly_the_trade(redis, market):
    router, shard = market
    worker = Worker(redis, [shard])
    await worker._acquire_leases(asyncio.Event())
    await worker.load_specs()

    sell = await place(router, "bob", Side.SELL, 10_000, 30)
    assert await balance(redis, "bob", "AAPL") == (10_000 - 30, 30)
    await worker.step()
    assert (await redis.hget(keys.order(sell), "status")) == b"OPEN"

    buy = await place(router, "alice", Side.BUY, 10_100, 20)  # trades at the maker's 10,000
    assert await balance(redis, "alice", "USD") == (10_000_000 - 20 * 10_100, 20 * 10_100)
    await worker.step()

    assert await balance(redis, "alice", "USD") == (10_000_000 - 20 * 10_000, 0)
    assert await balance(redis, "alice", "AAPL") == (10_000 + 20, 0)
    assert await balance(redis, "bob", "USD") == (10_000_000 + 20 * 10_000, 0)
    assert await balance(redis, "bob", "AAPL") == (10_000 - 30, 10)
    record = await redis.hgetall(keys.order(sell))
    assert (record[b"status"], record[b"filled"], record[b"remaining"]) == (
        b"PARTIALLY_FILLED",
        b"20",
        b"10",
    )
    assert (await redis.hget(keys.order(buy), "status")) == b"FILLED"

    # A cancel releases exactly the rest of the hold.
    assert (await router.cancel(Cancel(order_id=sell, user_id="bob", symbol="AAPL"))).status == "OK"
    await worker.step()
    assert await balance(redis, "bob", "AAPL") == (10_000 - 20, 0)
    assert (await redis.hget(keys.order(sell), "status")) == b"CANCELED"
    kinds = [type(e).__name__ for e in await stream_events(redis, shard)]
    assert kinds == ["Accepted", "Accepted", "Trade", "Done", "Canceled"]


async def test_router_refusals_change_nothing(redis, market):
    router, shard = market
    first = await place(router, "alice", Side.BUY, 10_000, 5, client_order_id="c-1")
    again = Place(
        order_id=await router.order_ids.take(),
        user_id="alice",
        symbol="AAPL",
        side=Side.BUY,
        price=10_000,
        quantity=5,
        client_order_id="c-1",
    )
    assert await router.place(SPEC, again, 0) == type(await router.place(SPEC, again, 0))(
        "DUPLICATE", str(first)
    )
    too_big = msgspec.structs.replace(again, client_order_id=None, quantity=10_000)
    result = await router.place(SPEC, too_big, 0)
    assert result.status == "INSUFFICIENT_BALANCE"
    assert await balance(redis, "alice", "USD") == (10_000_000 - 50_000, 50_000)
    assert await redis.xlen(keys.orders(shard)) == 1
    # Someone else's order cannot be touched, and says no more than "not found".
    assert (await router.cancel(Cancel(order_id=first, user_id="bob", symbol="AAPL"))).status == (
        "NOT_FOUND"
    )
    steal = Replace(order_id=first, user_id="bob", symbol="AAPL", quantity=1)
    assert (await router.replace(steal)).status == "NOT_FOUND"


async def test_replace_moves_the_hold_and_one_replace_at_a_time(redis, market):
    router, shard = market
    worker = Worker(redis, [shard])
    await worker._acquire_leases(asyncio.Event())
    await worker.load_specs()
    order = await place(router, "alice", Side.BUY, 10_000, 10)
    await worker.step()
    bigger = Replace(order_id=order, user_id="alice", symbol="AAPL", price=10_050, quantity=12)
    assert (await router.replace(bigger)).status == "OK"
    assert (await router.replace(bigger)).status == "PENDING"
    await worker.step()
    assert await balance(redis, "alice", "USD") == (10_000_000 - 12 * 10_050, 12 * 10_050)
    record = await redis.hgetall(keys.order(order))
    assert (record[b"price"], record[b"remaining"], record[b"pending"]) == (b"10050", b"12", b"0")
    # Price-only: the router sizes the hold from the record, the book keeps the remaining.
    cheaper = Replace(order_id=order, user_id="alice", symbol="AAPL", price=9_000)
    assert (await router.replace(cheaper)).status == "OK"
    await worker.step()
    assert await balance(redis, "alice", "USD") == (10_000_000 - 12 * 9_000, 12 * 9_000)


# -- crash recovery -----------------------------------------------------------------------


def start_worker(redis_url: str, shard: int) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPOT_")},
        "SPOT_REDIS_URL": redis_url,
        "SPOT_SHARDS": str(SHARDS),
        "SPOT_SNAPSHOT_INTERVAL_S": "0.3",
        "SPOT_WORKER_BATCH": "50",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "worker", "--shards", str(shard)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until_applied(redis, shard: int, timeout: float = 30.0) -> None:
    last = (await redis.xrevrange(keys.orders(shard), count=1))[0][0]
    for _ in range(int(timeout / 0.05)):
        if await redis.get(keys.applied(shard)) == last:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never caught up")


def hold_asset(command) -> str | None:
    if isinstance(command, Place):
        return SPEC.quote if command.side is Side.BUY else SPEC.base
    return None


async def test_kill_9_at_any_moment_loses_and_duplicates_nothing(redis, redis_url, market):
    router, shard = market
    for user in ("alice", "bob"):  # enough that no hold is ever refused while a worker is down
        await router.transfer(user, "USD", 990_000_000, "more")
        await router.transfer(user, "AAPL", 990_000, "more")
    rng = random.Random(7)
    kills = 0
    sent: list[tuple[Place | Cancel, int]] = []

    async def progress() -> bytes | None:
        return await redis.get(keys.applied(shard))

    # A steady flow of orders until the last worker has been killed, and a bit more.
    sender = asyncio.create_task(
        random_flow(router, random.Random(7), sent, lambda n: kills >= 3 and n % 300 == 0)
    )
    worker = start_worker(redis_url, shard)
    try:
        while kills < 3:
            # Kill only once the new worker has recovered and is settling batches again,
            # at a random moment while orders keep arriving.
            before = await progress()
            while await progress() == before:
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0, 0.1))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            worker = start_worker(redis_url, shard)
        await sender
        await wait_until_applied(redis, shard)
    finally:
        sender.cancel()
        worker.terminate()
        worker.wait(timeout=30)
    assert len(sent) > 1_000
    assert await redis.hget(keys.snapshot(shard), "id") == await progress()

    engine, expected, settlement = never_crashed(sent)
    assert await stream_events(redis, shard) == expected
    # Stops rode through the kills: some triggered (those still waiting, if the flow left
    # any, are in the book the snapshot is compared with below).
    assert any(type(e) is Triggered for e in expected)
    for user in ("alice", "bob"):
        for asset, funded in (("USD", 1_000_000_000), ("AAPL", 1_000_000)):
            d_avail, d_locked = settlement.balances.get((user, asset), [0, 0])
            held = sum(hold for c, hold in sent if c.user_id == user and hold_asset(c) == asset)
            assert await balance(redis, user, asset) == (funded - held + d_avail, held + d_locked)

    # The snapshot taken on SIGTERM holds the very book that never crashed.
    books = decode_books(await redis.hget(keys.snapshot(shard), "books"))
    restored = MatchingEngine([SPEC]).book("AAPL")
    restored.restore(books["AAPL"])
    expected_book = engine.books["AAPL"]
    assert (restored.seq, restored.last_price) == (expected_book.seq, expected_book.last_price)
    for side in Side:
        assert restored.resting(side) == expected_book.resting(side)
    assert restored.state_hash() == expected_book.state_hash()
