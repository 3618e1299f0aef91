"""PipelinedRedis on its own connection: replies go to their callers in order, scripts
Redis lost are loaded again from their source, and a connection that breaks or stalls
fails its batch and is replaced by the next call."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import scripts
from store.pipeline import PipelinedRedis
from store.scripts import Script


@pytest.fixture
def echo(tmp_path, monkeypatch) -> Script:
    """A script of the registry's kind (a file, its SHA, its key count) that replies ARGV[1]."""
    (tmp_path / "echo-0.lua").write_text("return ARGV[1]\n")
    monkeypatch.setattr(scripts, "LUA", tmp_path)
    return Script("echo")


async def test_concurrent_calls_get_their_own_replies(redis: Redis, echo: Script) -> None:
    calls = PipelinedRedis(redis, max_batch=7)
    await redis.set("k", "v")
    replies = await asyncio.gather(
        *(calls.call(echo, str(n)) for n in range(50)),
        calls.command("GET", "k"),
        calls.command("GET", "missing"),
    )
    assert replies == [str(n).encode() for n in range(50)] + [b"v", None]


async def test_an_error_reply_fails_its_caller_only(redis: Redis) -> None:
    calls = PipelinedRedis(redis)
    first, bad, last = await asyncio.gather(
        calls.command("SET", "x", "1"),
        calls.command("INCRBY", "x", "not-a-number"),
        calls.command("GET", "x"),
        return_exceptions=True,
    )
    assert first in (b"OK", True, "OK") and last == b"1"
    assert isinstance(bad, ResponseError)


async def test_scripts_redis_lost_are_loaded_again(redis: Redis, echo: Script) -> None:
    calls = PipelinedRedis(redis)
    assert await calls.call(echo, "a") == b"a"
    await redis.script_flush()
    assert await asyncio.gather(*(calls.call(echo, n) for n in "bcd")) == [
        b"b",
        b"c",
        b"d",
    ]


async def test_a_killed_connection_fails_its_batch_and_the_next_call_reconnects(
    redis: Redis, echo: Script
) -> None:
    calls = PipelinedRedis(redis)
    assert await calls.command("PING") in (b"PONG", True)
    # The pipeline's connection blocks in BLPOP while it is killed.
    blocked = asyncio.ensure_future(calls.command("BLPOP", "nothing", "5"))
    await asyncio.sleep(0.1)
    await redis.client_kill_filter(skipme=True, _type="normal")
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await calls.call(echo, "again") == b"again"


async def test_a_stalled_connection_times_out(redis_url: str, echo: Script) -> None:
    client = Redis.from_url(redis_url, socket_timeout=0.2)
    try:
        calls = PipelinedRedis(client)
        with pytest.raises(RedisTimeoutError):
            await calls.command("BLPOP", "nothing", "2")
        assert await calls.call(echo, "after") == b"after"
    finally:
        await client.aclose()


async def test_a_reply_out_of_protocol_drops_the_connection(redis: Redis, echo: Script) -> None:
    calls = PipelinedRedis(redis)
    assert await calls.command("PING") in (b"PONG", True)
    blocked = asyncio.ensure_future(calls.command("BLPOP", "nothing", "5"))
    await asyncio.sleep(0.1)
    assert calls._link is not None
    calls._received(calls._link, b"?not RESP\r\n")  # as if Redis had sent it
    with pytest.raises(RedisConnectionError, match="not asked for"):
        await blocked
    assert await calls.call(echo, "again") == b"again"
