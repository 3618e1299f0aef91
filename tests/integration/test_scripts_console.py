"""The operator console's Redis script (store/lua/shard_lag-2.lua) held to its header on
real Redis, independent of api/console.py: the backlog of a shard is what its stream holds
after its worker's watermark, counted up to the cap, with the oldest entry's id."""

from __future__ import annotations

from redis.asyncio import Redis

from schema import keys
from store import scripts

SHARD = 6
STREAM, APPLIED = keys.orders(SHARD), keys.applied(SHARD)


async def lag(redis: Redis, cap: int = 100) -> list[object]:
    return list(await scripts.SHARD_LAG.run(redis, [STREAM, APPLIED], [cap]))


async def test_an_empty_or_missing_stream_has_no_backlog(redis: Redis) -> None:
    assert await lag(redis) == [0, b""]
    await redis.set(APPLIED, "5-0")
    assert await lag(redis) == [0, b""]


async def test_without_a_watermark_every_entry_waits(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM, {"n": n}) for n in range(3)]
    assert await lag(redis) == [3, ids[0]]


async def test_entries_after_the_watermark_wait_and_the_oldest_is_named(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM, {"n": n}) for n in range(5)]
    await redis.set(APPLIED, ids[1])
    assert await lag(redis) == [3, ids[2]]
    await redis.set(APPLIED, ids[4])
    assert await lag(redis) == [0, b""]


async def test_the_count_stops_at_the_cap(redis: Redis) -> None:
    ids = [await redis.xadd(STREAM, {"n": n}) for n in range(7)]
    assert await lag(redis, cap=4) == [4, ids[0]]


async def test_a_trimmed_stream_counts_what_is_left(redis: Redis) -> None:
    # The watermark may name an entry trimmed away since (snapshots trim the stream).
    ids = [await redis.xadd(STREAM, {"n": n}) for n in range(4)]
    await redis.set(APPLIED, ids[1])
    await redis.xtrim(STREAM, minid=ids[3], approximate=False)
    assert await lag(redis) == [1, ids[3]]


def test_the_header_lists_its_inputs_and_output() -> None:
    (path,) = scripts.LUA.glob(f"{scripts.SHARD_LAG.name}-{scripts.SHARD_LAG.numkeys}.lua")
    header = path.read_text().split("]]", 1)[0]
    assert "Input:" in header and "Output:" in header
    assert [n for n in range(1, 5) if f"KEYS[{n}]" in header] == [1, 2]
    assert "ARGV[1]" in header and "ARGV[2]" not in header
