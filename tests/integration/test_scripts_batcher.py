"""The batcher's Redis script (store/lua/expire_orders-0.lua) held to its header on real
Redis, independent of batcher/batcher.py: the records named get the expiry given, a
record already gone is counted out and not made again, and nothing else is touched."""

from __future__ import annotations

from redis.asyncio import Redis

from schema import keys
from store.scripts import EXPIRE_ORDERS


async def test_the_named_records_get_the_expiry_and_others_keep_theirs(redis: Redis) -> None:
    for order_id in (1, 2, 3):
        await redis.hset(keys.order(order_id), "status", "FILLED")
        await redis.expire(keys.order(order_id), 86_400)
    assert await EXPIRE_ORDERS.run(redis, [], [keys.ORDER, 10, 1, 3]) == 2
    assert 0 < await redis.ttl(keys.order(1)) <= 10
    assert 0 < await redis.ttl(keys.order(3)) <= 10
    assert await redis.ttl(keys.order(2)) > 10


async def test_a_record_already_gone_is_not_made_again(redis: Redis) -> None:
    await redis.hset(keys.order(5), "status", "CANCELED")
    assert await EXPIRE_ORDERS.run(redis, [], [keys.ORDER, 10, 4, 5]) == 1
    assert not await redis.exists(keys.order(4))
    assert await redis.hget(keys.order(5), "status") == b"CANCELED"


async def test_no_ids_is_nothing_done(redis: Redis) -> None:
    assert await EXPIRE_ORDERS.run(redis, [], [keys.ORDER, 10]) == 0
