"""The batcher's Lua script against real Redis, independent of the Python that calls it:
for given ARGV, what it writes and returns (its header in store/lua/)."""

from __future__ import annotations

from schema import keys
from store.scripts import EXPIRE_RECORDS

KEPT_S = 10
DAY_S = 86_400


async def test_expire_records_gives_each_listed_record_its_time_and_counts_those_found(redis):
    for order_id in (11, 12, 13):
        await redis.hset(keys.order(order_id), "status", "FILLED")
        await redis.expire(keys.order(order_id), DAY_S)  # as the SETTLE script leaves it
    await redis.hset(keys.order(14), "status", "OPEN")  # not listed: left alone

    found = await EXPIRE_RECORDS.run(redis, args=[keys.ORDER, KEPT_S, "11 12 99 13"])

    assert found == 3  # 99 has no record, and none is made for it
    for order_id in (11, 12, 13):
        assert 0 < await redis.ttl(keys.order(order_id)) <= KEPT_S
    assert await redis.exists(keys.order(99)) == 0
    assert await redis.ttl(keys.order(14)) == -1


async def test_expire_records_takes_one_id_and_no_id(redis):
    await redis.hset(keys.order(7), "status", "CANCELED")
    assert await EXPIRE_RECORDS.run(redis, args=[keys.ORDER, KEPT_S, "7"]) == 1
    assert 0 < await redis.ttl(keys.order(7)) <= KEPT_S
    assert await EXPIRE_RECORDS.run(redis, args=[keys.ORDER, KEPT_S, ""]) == 0


def test_the_script_has_a_header_naming_its_arguments_and_reply():
    text = EXPIRE_RECORDS.source
    assert text.startswith("-- ") and "Returns:" in text
    assert EXPIRE_RECORDS.numkeys == 0
    for n in (1, 2, 3):
        assert f"ARGV[{n}]" in text
