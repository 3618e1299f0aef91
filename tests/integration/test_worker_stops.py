"""The shard worker with stops and GTD orders, on real Redis: the worker's clock expires GTD
orders through the stream, what a stale EXPIRE or CANCEL_ALL turns into, and a recovered
worker that still knows its GTD deadlines."""

from __future__ import annotations

import asyncio
from typing import get_args

import msgspec
import pytest

from api.order_gateway import OrderGateway
from schema import keys
from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Action,
    CancelAll,
    Canceled,
    Command,
    Event,
    Expire,
    OrderType,
    Place,
    Rejected,
    Side,
    TimeInForce,
)
from schema.streams import CommandEntry
from store.symbols import list_symbol
from tests.integration.flow import SPEC
from workers.worker import _STALE, Worker

SHARDS = 10
events_decoder = msgspec.msgpack.Decoder(list[Event])


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def market(redis, aio):
    async def setup():
        shard = await list_symbol(redis, SPEC, SHARDS)
        router = OrderGateway(redis)
        await router.transfer("alice", "USD", 10_000_000, "seed")
        await router.transfer("alice", "AAPL", 10_000, "seed")
        return router, shard

    return aio.run(setup())


async def worker_on(redis, shard: int, clock: Clock) -> Worker:
    worker = Worker(redis, [shard], clock_ms=clock)
    await worker._acquire_leases(asyncio.Event())
    await worker.load_specs()
    await worker._recover(worker.shards[shard])
    return worker


async def place(router: OrderGateway, **fields) -> int:
    order_id = await router.order_ids.take()
    command = Place(order_id=order_id, user_id="alice", symbol="AAPL", **fields)
    assert (await router.place(SPEC, command, 0)).status == "OK"
    return order_id


async def balance(redis, asset: str) -> tuple[int, int]:
    avail, locked = await redis.hmget(keys.balance("alice"), keys.available(asset),
                                      keys.locked(asset))  # fmt: skip
    return int(avail), int(locked or 0)


async def events(redis, shard: int) -> list[Event]:
    out: list[Event] = []
    for _, fields in await redis.xrange(keys.events(shard)):
        out.extend(events_decoder.decode(fields[b"events"]))
    return out


async def commands(redis, shard: int) -> list:
    return [CommandEntry.from_fields(f).decode_command() for _, f in
            await redis.xrange(keys.orders(shard))]  # fmt: skip


async def test_the_workers_clock_expires_gtd_orders_and_stops_through_the_stream(redis, market):
    router, shard = market
    clock = Clock(1_000)
    worker = await worker_on(redis, shard, clock)
    gtd = await place(router, side=Side.BUY, price=9_000, quantity=3,
                      time_in_force=TimeInForce.GTD, expire_at_ms=5_000)  # fmt: skip
    stop = await place(router, side=Side.SELL, type=OrderType.STOP_LIMIT, stop_price=9_500,
                       price=9_400, quantity=4, time_in_force=TimeInForce.GTD,
                       expire_at_ms=6_000)  # fmt: skip
    await worker.step()
    assert await redis.hget(keys.order(gtd), "status") == b"OPEN"
    assert await redis.hget(keys.order(stop), "status") == b"UNTRIGGERED"
    assert await balance(redis, "USD") == (10_000_000 - 27_000, 27_000)
    assert await balance(redis, "AAPL") == (10_000 - 4, 4)

    clock.now_ms = 4_999
    await worker.step(block_ms=1)
    assert len(await commands(redis, shard)) == 2  # nothing due: no EXPIRE

    clock.now_ms = 5_000
    await worker.step(block_ms=1)  # the clock's turn: an EXPIRE into the stream
    assert (await commands(redis, shard))[-1] == Expire(symbol="AAPL", now_ms=5_000)
    await worker.step(block_ms=1)  # ...applied like any command
    assert await redis.hmget(keys.order(gtd), "status", "reason") == [b"CANCELED", b"EXPIRED"]
    assert await redis.hget(keys.order(stop), "status") == b"UNTRIGGERED"
    assert await balance(redis, "USD") == (10_000_000, 0)

    clock.now_ms = 7_000
    await worker.step(block_ms=1)
    await worker.step(block_ms=1)
    assert await redis.hmget(keys.order(stop), "status", "reason") == [b"CANCELED", b"EXPIRED"]
    assert await balance(redis, "AAPL") == (10_000, 0)
    expired = [e for e in await events(redis, shard) if type(e) is Canceled]
    assert [(e.order_id, e.reason) for e in expired] == [
        (gtd, CancelReason.EXPIRED),
        (stop, CancelReason.EXPIRED),
    ]
    # Nothing left to expire: the clock sends no more.
    clock.now_ms = 9_000
    await worker.step(block_ms=1)
    assert len(await commands(redis, shard)) == 4


async def test_a_recovered_worker_still_expires_what_its_snapshot_holds(redis, market):
    router, shard = market
    clock = Clock(1_000)
    worker = await worker_on(redis, shard, clock)
    gtd = await place(router, side=Side.BUY, price=9_000, quantity=3,
                      time_in_force=TimeInForce.GTD, expire_at_ms=5_000)  # fmt: skip
    await worker.step()
    await worker.snapshot(worker.shards[shard])
    later = await place(router, side=Side.SELL, price=11_000, quantity=2,
                        time_in_force=TimeInForce.GTD, expire_at_ms=6_000)  # fmt: skip
    await worker.step()  # applied after the snapshot: recovery re-applies it
    await redis.delete(keys.owner(shard))  # as if it had died and its lease run out

    clock.now_ms = 7_000
    again = await worker_on(redis, shard, clock)
    await again.step(block_ms=1)
    await again.step(block_ms=1)
    for order_id in (gtd, later):
        assert await redis.hmget(keys.order(order_id), "status", "reason") == [
            b"CANCELED",
            b"EXPIRED",
        ]


async def test_a_stale_cancel_all_is_rejected_and_a_stale_expire_is_nothing(redis, market):
    router, shard = market
    worker = await worker_on(redis, shard, Clock(1_000))
    worker.shards[shard].owners["AAPL"] = (False, 3)  # a migration took AAPL away at epoch 3
    for command in (CancelAll(user_id="alice", symbol="AAPL"), Expire(symbol="AAPL", now_ms=9)):
        entry = CommandEntry(epoch=2, command=msgspec.msgpack.encode(command), hold=0, side=None)
        await redis.xadd(keys.orders(shard), entry.to_fields())
    await worker.step()
    assert await events(redis, shard) == [
        Rejected("AAPL", 0, 0, "alice", Action.CANCEL_ALL, RejectReason.STALE_ROUTE)
    ]


def test_every_command_kind_says_what_a_stale_one_means():
    assert set(_STALE) == set(get_args(Command))
