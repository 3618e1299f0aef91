"""The router: one atomic Redis round trip per order.

Each script does, in one step that nothing can interleave with: the duplicate
`client_order_id` check, the balance hold, the route lookup and the enqueue. Route
lookup and enqueue must be atomic (DESIGN.md §4): an order that read the route as
ACTIVE just before a migration paused it would otherwise land behind the drain
marker on the old shard.

Requests arriving together share one pipeline (`Coalescer`): on this machine that
was worth about 2× in orders per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

import hiredis
import msgspec
from hiredis import pack_command
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schema import keys
from schema.messages import Cancel, OrderType, Place, Replace, Side
from schema.symbols import SymbolSpec

# Amounts travel through Lua as doubles: exact up to 2^53 minor units.
MAX_AMOUNT = 2**53
RECENT_ORDERS = 200  # per user, kept in Redis for read-your-writes

TERMINAL = "status == 'FILLED' or status == 'CANCELED' or status == 'REJECTED'"

_ENQUEUE = """
local function route_of(route_key)
  return redis.call('HMGET', route_key, 'shard', 'status', 'epoch')
end
local function enqueue(route, pending_prefix, symbol, orders_prefix, ...)
  local stream
  if route[2] == 'MIGRATING' then stream = pending_prefix .. symbol
  else stream = orders_prefix .. route[1] end
  redis.call('XADD', stream, '*', 'e', route[3] or '0', ...)
end
"""

# KEYS: route, balance, order record, client-order key ('' for none), rate, user's orders
# ARGV: orders prefix, pending prefix, command (msgpack), hold, avail field, locked field,
#       asset the order pays with, created ms
# The order record is built here from the command itself: fewer arguments to pack and
# send per order was worth ~20 µs of the API's CPU per order.
PLACE = (
    _ENQUEUE
    + """
local route = route_of(KEYS[1])
if not route[1] then return {'NO_ROUTE'} end
local c = cmsgpack.unpack(ARGV[3])
local order_id = string.format('%d', c.order_id)
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'DUPLICATE', existing} end
end
local hold = tonumber(ARGV[4])
if hold > 0 then
  local available = redis.call('HGET', KEYS[2], ARGV[5]) or '0'
  if tonumber(available) < hold then return {'INSUFFICIENT_BALANCE', available} end
  redis.call('HINCRBY', KEYS[2], ARGV[5], '-' .. ARGV[4])
  redis.call('HINCRBY', KEYS[2], ARGV[6], ARGV[4])
end
enqueue(route, ARGV[2], c.symbol, ARGV[1], 'c', ARGV[3], 'h', ARGV[4], 's', c.side)
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], order_id, 'EX', 86400) end
local quantity = string.format('%d', c.quantity)
redis.call('HSET', KEYS[3], 'user_id', c.user_id, 'symbol', c.symbol, 'side', c.side,
  'type', c.type, 'price', c.price and string.format('%d', c.price) or '',
  'quantity', quantity, 'remaining', quantity, 'filled', '0', 'notional', '0',
  'time_in_force', c.time_in_force, 'post_only', c.post_only and '1' or '0',
  'client_order_id', c.client_order_id or '', 'status', 'NEW', 'pays_with', ARGV[7],
  'created_ms', ARGV[8])
if redis.call('HINCRBY', KEYS[5], c.symbol, 1) == 1 then redis.call('EXPIRE', KEYS[5], 120) end
-- The user's newest orders, for reads that must see an order before the batcher has
-- written it (read-your-writes). Trimmed back to RECENT_ORDERS once it holds twice that:
-- one LTRIM per 200 orders, not one per order; readers take the first RECENT_ORDERS.
if redis.call('LPUSH', KEYS[6], order_id) > 400 then redis.call('LTRIM', KEYS[6], 0, 199) end
return {'OK', route[1]}
"""
)

# KEYS: order record. ARGV: orders prefix, pending prefix, route prefix, user, order id
CANCEL = (
    _ENQUEUE
    + f"""
local o = redis.call('HMGET', KEYS[1], 'user_id', 'symbol', 'status')
if o[1] ~= ARGV[4] then return {{'NOT_FOUND'}} end
local status = o[3]
if {TERMINAL} then return {{'NOT_OPEN', status}} end
local command = cmsgpack.pack({{
  action = 'CANCEL', order_id = tonumber(ARGV[5]), user_id = ARGV[4], symbol = o[2]}})
enqueue(route_of(ARGV[3] .. o[2]), ARGV[2], o[2], ARGV[1], 'c', command, 'h', '0', 's', '')
return {{'OK'}}
"""
)

# KEYS: order record, balance. ARGV: orders prefix, pending prefix, route prefix, user,
#       order id, new price or '', new quantity or '', avail prefix, locked prefix
# One replace at a time per order: the hold of a second one could not be sized right
# while the first may still change the order's price (FIX's PendingReplace).
REPLACE = (
    _ENQUEUE
    + f"""
local o = redis.call('HMGET', KEYS[1], 'user_id', 'symbol', 'status', 'side', 'price',
                     'remaining', 'pending', 'pays_with', 'type')
if o[1] ~= ARGV[4] then return {{'NOT_FOUND'}} end
local status = o[3]
if {TERMINAL} or o[9] == 'MARKET' then return {{'NOT_OPEN', status}} end
if o[7] == '1' then return {{'PENDING'}} end
local price = tonumber(ARGV[6] ~= '' and ARGV[6] or o[5])
local quantity = tonumber(ARGV[7] ~= '' and ARGV[7] or o[6])
local hold = quantity
if o[4] == 'BUY' then hold = price * quantity end
if hold >= {MAX_AMOUNT} then return {{'TOO_LARGE'}} end
local held = string.format('%d', hold)
local available = redis.call('HGET', KEYS[2], ARGV[8] .. o[8]) or '0'
if tonumber(available) < hold then return {{'INSUFFICIENT_BALANCE', available}} end
redis.call('HINCRBY', KEYS[2], ARGV[8] .. o[8], '-' .. held)
redis.call('HINCRBY', KEYS[2], ARGV[9] .. o[8], held)
redis.call('HSET', KEYS[1], 'pending', '1')
local command = cmsgpack.pack({{
  action = 'REPLACE', order_id = tonumber(ARGV[5]), user_id = ARGV[4], symbol = o[2],
  price = tonumber(ARGV[6]), quantity = tonumber(ARGV[7])}})
enqueue(route_of(ARGV[3] .. o[2]), ARGV[2], o[2], ARGV[1], 'c', command, 'h', held, 's', o[4])
return {{'OK'}}
"""
)

# KEYS: balance, ledger. ARGV: avail field, amount (negative: a withdrawal), user, asset,
#       reference. Deposits and withdrawals take this one path, so the ledger stream the
#       batcher persists always agrees with Redis.
TRANSFER = """
local available = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if tonumber(available) + tonumber(ARGV[2]) < 0 then return {'INSUFFICIENT_BALANCE', available} end
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'user', ARGV[3], 'asset', ARGV[4],
                      'amount', ARGV[2], 'ref', ARGV[5])
return {'OK', string.format('%d', after), id}
"""


class RouteResult(msgspec.Struct, frozen=True):
    """`status` is OK or a refusal code; `detail` carries what goes with it (the
    original order id of a duplicate, the available balance of a refused hold)."""

    status: str
    detail: str | None = None


class Coalescer:
    """Calls of concurrent requests share one round trip: many orders per write to Redis.

    While a batch is in flight, new calls queue up and go together in the next. A batch is
    packed by hiredis and written straight to the socket of a connection the Coalescer
    keeps; its replies are parsed by hiredis as they arrive and handed to their callers in
    order. redis-py's pipeline (arguments packed in Python, a timeout and a response
    callback per reply) took more of the API's CPU than everything else an order costs
    it; at a few thousand requests a second most batches hold one call, and a task, a
    pool checkout, a timer and redis-py's stream reads per batch were a third of the
    API's Python time. Scripts run by their SHA1, computed here; one Redis lost (a
    restart) is loaded again on NOSCRIPT.
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
        self._shas: dict[str, str] = {}
        self._timeout: float | None = redis.connection_pool.connection_kwargs.get("socket_timeout")

    def call(self, script: str, *keys_and_args: Any, numkeys: int) -> Awaitable[Any]:
        """EVALSHA of `script`: its reply, or a ResponseError raised."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        return self._enqueue(pack_command(("EVALSHA", sha, numkeys, *keys_and_args)), script)

    def command(self, *args: Any) -> Awaitable[Any]:
        """Any other command; the reply as the connection's protocol gives it."""
        return self._enqueue(pack_command(args), None)

    def _enqueue(self, packed: bytes, script: str | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
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
            loop = asyncio.get_running_loop()
            self._sent_at = loop.time()
            if self._watchdog is None:  # one timer, not one per batch
                self._watchdog = loop.call_later(self._timeout, self._check)

    async def _connect(self) -> None:
        """A connection of redis-py's pool (its handshake: TLS, AUTH, SELECT), kept out of
        the pool and read from here on by a _Link instead of redis-py's stream reader."""
        pool = self.redis.connection_pool
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
                if isinstance(reply, ResponseError):
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
                await self.redis.script_load(script)
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


_Call = tuple[bytes, str | None, asyncio.Future[Any]]
_MORE = object()  # hiredis: no complete reply buffered yet
_PUSH = getattr(hiredis, "PushNotification", None)


class _Link(asyncio.Protocol):
    """The Coalescer's side of a redis-py connection's socket. redis-py's own protocol
    (its stream reader) still hears of the socket closing, so the pool can close and
    release the connection as usual."""

    def __init__(self, owner: Coalescer, conn: Any, transport: Any) -> None:
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


class OrderIds:
    """Order ids in blocks: one INCRBY per thousand orders instead of one per order."""

    def __init__(self, redis: Redis, block: int = 1000) -> None:
        self.redis = redis
        self.block = block
        self._next = self._end = 0
        self._lock = asyncio.Lock()

    async def take(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    end = await self.redis.incrby(keys.ORDER_IDS, self.block)
                    self._next, self._end = end - self.block + 1, end + 1
        order_id = self._next
        self._next += 1
        return order_id


def hold_for(spec: SymbolSpec, place: Place) -> tuple[str, int]:
    """The asset an order pays with and how much of it to lock."""
    if place.side is Side.SELL:
        return spec.base, place.quantity
    price = place.price if place.type is OrderType.LIMIT else place.protection_price
    return spec.quote, (price or 0) * place.quantity


class Router:
    def __init__(self, redis: Redis, max_batch: int = 512) -> None:
        self.redis = redis
        self.calls = Coalescer(redis, max_batch)
        self.order_ids = OrderIds(redis)
        self._encode = msgspec.msgpack.Encoder().encode

    async def place(self, spec: SymbolSpec, place: Place, created_ms: int) -> RouteResult:
        asset, hold = hold_for(spec, place)
        if hold >= MAX_AMOUNT:
            return RouteResult("TOO_LARGE")
        user = place.user_id
        reply = await self.calls.call(
            PLACE,
            keys.route(place.symbol),
            keys.balance(user),
            keys.order(place.order_id),
            "" if place.client_order_id is None else keys.client_order(user, place.client_order_id),
            f"{keys.RATE}{int(time.time())}",
            keys.user_orders(user),
            keys.ORDERS,
            keys.PENDING,
            self._encode(place),
            hold,
            keys.available(asset),
            keys.locked(asset),
            asset,
            created_ms,
            numkeys=6,
        )
        return _result(reply)

    async def cancel(self, cancel: Cancel) -> RouteResult:
        reply = await self.calls.call(
            CANCEL,
            keys.order(cancel.order_id),
            keys.ORDERS,
            keys.PENDING,
            keys.ROUTE,
            cancel.user_id,
            cancel.order_id,
            numkeys=1,
        )
        return _result(reply)

    async def replace(self, replace: Replace) -> RouteResult:
        reply = await self.calls.call(
            REPLACE,
            keys.order(replace.order_id),
            keys.balance(replace.user_id),
            keys.ORDERS,
            keys.PENDING,
            keys.ROUTE,
            replace.user_id,
            replace.order_id,
            "" if replace.price is None else replace.price,
            "" if replace.quantity is None else replace.quantity,
            keys.available(""),
            keys.locked(""),
            numkeys=2,
        )
        return _result(reply)

    # Reads of the request path ride the same round trips as the order scripts: a command
    # of its own through redis-py cost the API about twice what it costs here.

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        reply = await self.calls.command("HGETALL", key)
        if isinstance(reply, dict):  # RESP3, redis-py's default: a map
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    def hmget(self, key: str, *fields: str) -> Awaitable[list[bytes | None]]:
        return self.calls.command("HMGET", key, *fields)

    def get(self, key: str) -> Awaitable[bytes | None]:
        return self.calls.command("GET", key)

    def lrange(self, key: str, start: int, end: int) -> Awaitable[list[bytes]]:
        return self.calls.command("LRANGE", key, start, end)

    async def transfer(self, user: str, asset: str, amount: int, reference: str) -> RouteResult:
        """A deposit (amount > 0) or withdrawal (amount < 0) of available funds."""
        reply = await self.calls.call(
            TRANSFER,
            keys.balance(user),
            keys.LEDGER,
            keys.available(asset),
            amount,
            user,
            asset,
            reference,
            numkeys=2,
        )
        return _result(reply)


def _result(reply: list[bytes | str]) -> RouteResult:
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    detail = None
    if len(reply) > 1:
        detail = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    return RouteResult(status, detail)
