"""One Redis connection shared by every concurrent request of an API process, pipelined.

Requests arriving together share one round trip (`PipelinedRedis`): on this machine that
was worth about 2x in orders per second. It runs the order scripts (store/lua/, by
their SHA) and the few plain reads of the request path. A matching worker reads its
streams and settles its batches through one too (workers/worker.py): a round trip through
redis-py cost it two to three times what it costs here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any

import hiredis
from hiredis import pack_command
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.scripts import Script


class PipelinedRedis:
    """Calls of concurrent requests share one round trip: many orders per write to Redis.

    While a batch is in flight, new calls queue up and go together in the next. A batch is
    packed by hiredis and written straight to the socket of a connection it keeps; its
    replies are parsed by hiredis as they arrive and handed to their callers in order.
    redis-py's pipeline (arguments packed in Python, a timeout and a response
    callback per reply) took more of the API's CPU than everything else an order costs
    it; at a few thousand requests a second most batches hold one call, and a task, a
    pool checkout, a timer and redis-py's stream reads per batch were a third of the
    API's Python time. Scripts (store.scripts.Script) run by their SHA1; one Redis lost (a
    restart, a SCRIPT FLUSH) is loaded again from its source on NOSCRIPT.
    """

    def __init__(self, redis: Redis, max_batch: int = 512) -> None:
        self.redis = redis
        self.max_batch = max_batch
        # (packed command, its script or None, future); a cancelled caller's reply is
        # read and dropped, so the connection stays in step.
        self._queue: list[_Call] = []
        self._scheduled = False
        self._sent: deque[_Call] = deque()  # the batch in flight, oldest reply first
        self._sent_at = 0.0
        self._retry: list[_Call] = []  # of the batch in flight: NOSCRIPT, to send again
        self._reloading = False
        self._link: _Link | None = None
        self._connecting = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._timeout: float | None = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._bound: asyncio.AbstractEventLoop | None = None

    def call(self, script: Script, *keys_and_args: Any) -> Awaitable[Any]:
        """EVALSHA of `script`, its `numkeys` keys first: its reply, or a ResponseError
        raised. The key count is not checked here, per call: the contract tests check
        each caller's."""
        return self._enqueue(
            pack_command(("EVALSHA", script.sha, script.numkeys, *keys_and_args)), script
        )

    def command(self, *args: Any) -> Awaitable[Any]:
        """Any other command; the reply as the connection's protocol gives it."""
        return self._enqueue(pack_command(args), None)

    # Reads of the request path ride the same round trips as the order scripts: a command
    # of its own through redis-py cost the API about twice what it costs here.

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        reply = await self.command("HGETALL", key)
        if isinstance(reply, dict):  # RESP3, redis-py's default: a map
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    def hmget(self, key: str, *fields: str) -> Awaitable[list[bytes | None]]:
        return self.command("HMGET", key, *fields)

    def get(self, key: str) -> Awaitable[bytes | None]:
        return self.command("GET", key)

    def lrange(self, key: str, start: int, end: int) -> Awaitable[list[bytes]]:
        return self.command("LRANGE", key, start, end)

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once per loop: CPython 3.11's get_running_loop()
        calls getpid() each time (a syscall, to notice a fork), and the order path asked it
        about once per request and once per batch. The connection belongs to one loop
        anyway; a new running loop (tests run several) is looked up again."""
        loop = self._bound
        if loop is None or loop.is_closed():
            loop = self._bound = asyncio.get_running_loop()
        return loop

    def _enqueue(self, packed: bytes, script: Script | None) -> asyncio.Future[Any]:
        loop = self._loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((packed, script, future))
        if not self._scheduled:
            # After the callbacks already due: requests that arrived together go together.
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._sent or self._reloading or not self._queue:
            return  # the batch in flight sends the next when its last reply is in
        link = self._link
        if link is None:
            if not self._connecting:
                self._connecting = True
                asyncio.get_running_loop().create_task(self._connect())
            return
        batch = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        self._sent.extend(batch)
        link.transport.write(b"".join([item[0] for item in batch]))
        if self._timeout is not None:
            loop = self._loop()
            self._sent_at = loop.time()
            if self._watchdog is None:  # one timer, not one per batch
                self._watchdog = loop.call_later(self._timeout, self._check)

    async def _connect(self) -> None:
        """A connection of redis-py's pool (its handshake: TLS, AUTH, SELECT), kept out of
        the pool and read from here on by a _Link instead of redis-py's stream reader."""
        pool: Any = self.redis.connection_pool  # redis-py leaves get_connection untyped
        try:
            conn = await pool.get_connection()
        except Exception as exc:  # every caller waiting hears of it
            queued, self._queue = self._queue, []
            _fail(queued, exc)
            return
        finally:
            self._connecting = False
        transport = conn._writer.transport
        self._link = _Link(self, conn, transport)
        transport.set_protocol(self._link)
        self._flush()

    def _received(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        reader = link.reader
        reader.feed(data)
        sent = self._sent
        try:
            while (reply := reader.gets()) is not _MORE:
                if _PUSH is not None and isinstance(reply, _PUSH):
                    continue  # not a reply to a command of ours
                item = sent.popleft()  # IndexError: a reply nobody asked for
                future = item[2]
                # Not only ResponseError: LOADING (Redis loading its AOF) parses as a
                # BusyLoadingError, a ConnectionError, and was handed over as a reply.
                if isinstance(reply, RedisError):
                    if item[1] is not None and isinstance(reply, NoScriptError):
                        self._retry.append(item)  # Redis restarted and lost the scripts
                    elif not future.done():
                        future.set_exception(reply)
                elif not future.done():
                    future.set_result(reply)
        # InvalidResponse: what the reader raises on bytes that are not RESP.
        except (InvalidResponse, IndexError) as exc:
            self._drop(RedisConnectionError(f"Redis sent what was not asked for: {exc!r}"))
            return
        if sent:
            return
        if self._retry:
            self._reloading = True
            asyncio.get_running_loop().create_task(self._reload())
        elif self._queue:
            self._flush()

    async def _reload(self) -> None:
        retry, self._retry = self._retry, []
        try:
            for script in {item[1] for item in retry if item[1] is not None}:
                await self.redis.script_load(script.source)
        except Exception as exc:  # every retried caller hears of it
            _fail(retry, exc)
        else:
            self._queue[:0] = retry
        finally:
            self._reloading = False
        self._flush()

    def _check(self) -> None:
        self._watchdog = None
        if not self._sent or self._timeout is None:
            return
        loop = asyncio.get_running_loop()
        late = loop.time() - self._sent_at
        if late >= self._timeout:
            self._drop(RedisTimeoutError(f"no reply from Redis in {self._timeout} s"))
        else:
            self._watchdog = loop.call_later(self._timeout - late, self._check)

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is self._link:
            self._drop(RedisConnectionError(f"Redis closed the connection: {exc or 'EOF'}"))

    def _drop(self, exc: Exception) -> None:
        """The connection is out of step or gone: its batch fails, the next connects anew."""
        link, self._link = self._link, None
        sent, self._sent = list(self._sent), deque()
        retry, self._retry = self._retry, []
        _fail(sent + retry, exc)
        if link is not None:
            link.transport.abort()
            asyncio.get_running_loop().create_task(self._retire(link.conn))
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _retire(self, conn: Any) -> None:
        pool = self.redis.connection_pool
        try:
            await conn.disconnect(nowait=True)
        finally:
            await pool.release(conn)


_Call = tuple[bytes, Script | None, asyncio.Future[Any]]
_MORE = object()  # hiredis: no complete reply buffered yet
_PUSH = getattr(hiredis, "PushNotification", None)


class _Link(asyncio.Protocol):
    """The PipelinedRedis's side of a redis-py connection's socket. redis-py's own protocol
    (its stream reader) still hears of the socket closing, so the pool can close and
    release the connection as usual."""

    def __init__(self, owner: PipelinedRedis, conn: Any, transport: Any) -> None:
        self.owner = owner
        self.conn = conn
        self.transport = transport
        self.streams = transport.get_protocol()
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_MORE,
        )

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self, exc)
        self.streams.connection_lost(exc)


def _fail(batch: list[_Call], exc: Exception) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)


class Batch:
    """The few pipeline calls of redis-py's a matching worker makes, queued on a
    PipelinedRedis instead: they go out in one write with whatever else is queued there,
    in the order they were made, and `execute` waits for every reply, raising the first
    error among them once all are in (as redis-py's pipeline does)."""

    __slots__ = ("_redis", "_replies")

    def __init__(self, redis: PipelinedRedis) -> None:
        self._redis = redis
        self._replies: list[Awaitable[Any]] = []

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> None:
        self._replies.append(self._redis.command("EVALSHA", sha, numkeys, *keys_and_args))

    def set(self, key: str, value: Any) -> None:
        self._replies.append(self._redis.command("SET", key, value))

    def lpush(self, key: str, *values: Any) -> None:
        self._replies.append(self._redis.command("LPUSH", key, *values))

    def ltrim(self, key: str, start: int, end: int) -> None:
        self._replies.append(self._redis.command("LTRIM", key, start, end))

    async def execute(self) -> list[Any]:
        replies, self._replies = self._replies, []
        results = await asyncio.gather(*replies, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


async def xread(
    redis: PipelinedRedis, streams: dict[str, bytes], count: int, block_ms: int | None
) -> list[tuple[bytes, StreamEntries]]:
    """XREAD through `redis`, in redis-py's shape: [(stream, [(id, fields), ...]), ...],
    empty when nothing came within `block_ms` (None: no wait)."""
    args: list[Any] = ["XREAD", "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    reply = await redis.command(*args, "STREAMS", *streams, *streams.values())
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply  # RESP3: a map
    return [
        (stream, [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in entries])
        for stream, entries in items
    ]
