"""The servers everything else stands on: embedded by default, the machine's when
SPOT_REDIS_URL / SPOT_DATABASE_URL are set. Both ways must pass."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from schema.settings import Settings
from spot.stack import EmbeddedPostgres, EmbeddedRedis, Stack
from store import scripts

# What the order path relies on: XAUTOCLAIM is 6.2, and so is the oldest supported Redis.
MIN_REDIS = (6, 2)
MIN_POSTGRES = 14


async def test_redis_version(redis: Redis) -> None:
    info = await redis.info("server")
    version = tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
    assert version >= MIN_REDIS


async def test_redis_streams(redis: Redis) -> None:
    first = await redis.xadd("orders:0", {"order": b"\x01\x02"})
    await redis.xadd("orders:0", {"order": b"\x03"})

    streams = await redis.xread({"orders:0": "0"}, count=10)

    [(stream, entries)] = streams
    assert stream == b"orders:0"
    assert [fields for _, fields in entries] == [{b"order": b"\x01\x02"}, {b"order": b"\x03"}]
    assert entries[0][0] == first
    assert await redis.xread({"orders:0": entries[-1][0]}, count=10) == []


async def test_redis_consumer_group_autoclaim(redis: Redis) -> None:
    await redis.xadd("orders:1", {"order": b"a"})
    await redis.xgroup_create("orders:1", "workers", id="0")
    await redis.xreadgroup("workers", "crashed", {"orders:1": ">"})

    # XAUTOCLAIM answers 2 items on Redis 6.2, 3 (plus deleted ids) on 7: index, don't unpack.
    reply = await redis.xautoclaim("orders:1", "workers", "restarted", min_idle_time=0)

    assert [fields for _, fields in reply[1]] == [{b"order": b"a"}]


async def test_redis_runs_spot_scripts(redis: Redis) -> None:
    # Through a pipeline, as the router sends them (EVALSHA after SCRIPT LOAD), and alone.
    await redis.xadd("events:7", {"id": "1-1", "first": "1-0", "events": b"", "balances": b""})
    await scripts.load(redis, scripts.NEWEST_BATCH)
    async with redis.pipeline(transaction=False) as pipe:
        scripts.NEWEST_BATCH.queue(pipe, ["events:7"], ["first"])
        scripts.NEWEST_BATCH.queue(pipe, ["events:8"], ["first"])
        replies = await pipe.execute()
    assert replies[0][1] == b"1-0" and replies[1] == []
    assert await scripts.NEWEST_BATCH.run(redis, ["events:7"], ["first"]) == replies[0]


async def test_postgres_query(pg: asyncpg.Connection) -> None:
    assert await pg.fetchval("SELECT $1::bigint * 2", 21) == 42
    assert await pg.fetchval("SELECT current_database()") == "spot_test"
    version = await pg.fetchval("SHOW server_version_num")
    assert int(version) // 10000 >= MIN_POSTGRES


def test_embedded_redis_is_reused_and_stopped_by_its_starter(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path, durable=False)
    url = first.start()
    try:
        second = EmbeddedRedis(tmp_path, durable=False)
        assert second.start() == url
        assert first.started and not second.started
    finally:
        first.stop()
    assert not first.running()


def test_embedded_postgres_is_reused_and_stops_after_its_folder_was_locked() -> None:
    # Not tmp_path: see the database_url fixture.
    folder = Path(tempfile.mkdtemp(prefix="spot-test-pg-"))
    first = EmbeddedPostgres(folder / "cluster")
    try:
        url = first.start()
        assert EmbeddedPostgres(folder / "cluster").start() == url
        # What every pytest session does to /tmp/pytest-of-root: as root, the cluster's
        # unprivileged user is locked out until stop() lets it back in.
        folder.chmod(0o700)
    finally:
        first.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert first.port() is None


def test_stack_with_urls_starts_nothing() -> None:
    settings = Settings(redis_url="redis://example:6379/3", database_url="postgresql://x@y/z")

    with Stack(settings) as urls:
        assert urls == ("redis://example:6379/3", "postgresql://x@y/z")
