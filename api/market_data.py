"""Market data over WebSocket: `GET /v1/ws`, fed by the workers' `events:{shard}` streams.

Protocol (JSON text frames both ways):

    -> {"op": "auth", "token": "<JWT>"}           or an Authorization: Bearer header on
                                                  the upgrade; needed for `orders` and
                                                  `balances` only
    <- {"type": "authenticated", "user_id": ...}
    -> {"op": "subscribe", "channels": ["trades:AAPL", "depth:AAPL", "orders", "balances"]}
    <- {"type": "subscribed", "channels": [...]}  the channels this request added
    -> {"op": "unsubscribe", "channels": [...]}
    <- {"type": "unsubscribed", "channels": [...]}

Data, each with the event's `symbol` and its `seq` (the symbol's gap-free sequence over
all its events; a trade or depth stream skips the numbers of the other events):

    trades:{symbol}  {"type": "trade", "channel", "symbol", "seq", "price", "quantity",
                      "taker_side"}
    depth:{symbol}   {"type": "depth", "channel", "symbol", "seq", "bids", "asks"}: the top
                     50 levels a side, [[price, quantity], ...], best first; one snapshot on
                     subscribing, then whenever the book changed, at most every DEPTH_S
    orders           {"type": "order", "channel", "symbol", "seq", "event", "order_id", ...}:
                     the user's own ACCEPTED, REJECTED, FILL (price, quantity, side,
                     liquidity MAKER|TAKER, fee, fee_asset: what the fill cost, in what
                     it received, negative for a rebate), TRIGGERED (a stop), REPLACED,
                     CANCELED and DONE
    klines:{symbol}:{interval}
                     {"type": "kline", "channel", "symbol", "interval", "closed", open_time,
                     close_time, open, high, low, close, volume, ...: schema.wire.Candle}:
                     the interval's newest candle (1m .. 1M, as GET /v1/klines) on
                     subscribing, then as it changes, at most every second, and once more
                     with "closed": true when its interval is over (api/candles.py
                     CandleFeed: read back from the batcher's candles, no seq)
    balances         {"type": "balance", "channel", "snapshot", "balances": [{"asset",
                     "available", "locked"}, ...], "time_ms"}: the user's own balances,
                     absolute amounts as GET /v1/balances gives them, as they were read at
                     time_ms. On subscribing a snapshot (`snapshot` true: every asset the
                     user has); then, whenever something moved them (a fill and its fee, a
                     placement's or a replace's hold, its release by a cancel, a rejection,
                     an expiry or a better price, a deposit, a withdrawal), the assets it
                     moved (`snapshot` false): at most one message per user for each read
                     of the streams, however many changes it held. A hold taken at the door
                     shows once the order's worker has settled it, with its ACCEPTED (or
                     REJECTED) on `orders`, which comes first; so does every FILL before
                     the balances it moved. Carries no `seq`: the amounts are the latest,
                     and a later message supersedes an earlier one.

Errors are {"type": "error", "error": CODE, "message": ...} and leave the connection
usable: MALFORMED, MESSAGE_TOO_LARGE, UNKNOWN_OP, UNKNOWN_CHANNEL, UNKNOWN_SYMBOL,
TOO_MANY_CHANNELS, UNAUTHENTICATED, INVALID_TOKEN, TOKEN_EXPIRED, ALREADY_AUTHENTICATED.
SLOW_CONSUMER is the last message of a connection that fell QUEUE_SIZE messages behind:
the server closes it rather than let it hold up the others.

Limits (schema/settings.py, per API process): past SPOT_WS_MAX_CONNECTIONS in all or
SPOT_WS_CONNECTIONS_PER_IP from one address outside SPOT_RATE_LIMIT_TRUSTED, the upgrade is
refused (HTTP 503, 429). These end a connection with an error message, then a close:
TOO_MANY_CONNECTIONS, a token whose user has SPOT_WS_CONNECTIONS_PER_USER connections
already; IDLE_TIMEOUT, no subscription and nothing sent for SPOT_WS_IDLE_TIMEOUT_S (what
closes a client that holds a socket open, or trickles a frame in, for nothing);
TOKEN_EXPIRED, when the token of an authenticated connection expires. Channels per
connection are at most SPOT_WS_MAX_CHANNELS (TOO_MANY_CHANNELS, the connection stays).

Granian's RSGI closes an accepted WebSocket without a close code (its close(status) sets
the HTTP status of a refused upgrade only), so the error message is what says why. It also
buffers a whole frame before the app sees it (up to 16 MB, tungstenite's default, which
Granian does not let us lower): the connection limits bound how many such buffers exist.

One fan-out task per API process, started by the first subscription and ended once nobody
is subscribed (so it costs the order path nothing while nobody listens): one blocking
XREAD over every `events:{n}` and the `ledger`, each batch decoded once and pushed into
the subscribed connections' bounded queues, each connection drained by a writer task of its
own. While some user listens on `balances`, each read's entries name whose balances moved
(store/balances.py Moves) and one pipeline reads those users' amounts back from Redis;
a snapshot and those reads take turns (one lock), so a connection never gets an older
amount after a newer one. Depth
is not in the events: a symbol whose events arrive while someone watches its depth is
read back from the workers' `depth:{symbol}` cache (one MGET every DEPTH_S for all such
symbols) until the cache has caught up with the events' seq.

Binance's streams (`/ws`, `/ws/<stream>`, `/stream?streams=...`: api/binance/streams.py) are
served by the same connections, limits, fan-out and depth reads: only the protocol and the
message shapes are theirs (api/sockets.py `Streams` is what this module asks of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Container
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import KeyT, StreamIdT

from api.auth import Authenticator, AuthError
from api.candles import CandleFeed, is_interval
from api.history import History
from api.limits import Trusted, client_address
from api.rsgi import ProtocolClosed, ProtocolError, Scope, WebsocketMessageType, WebsocketProtocol
from api.sockets import (
    MAX_MESSAGE_BYTES,
    Connection,
    SocketLimits,
    Streams,
    count_down,
    wire_error,
)
from schema import keys
from schema.codes import ApiError, SocketError
from schema.fees import fee_asset
from schema.messages import Event, Side, Trade
from schema.symbols import SymbolSpec
from schema.wire import NO_DEPTH, Balance, Candle, DepthCache
from store.balances import Moves, balance_list

log = logging.getLogger("spot.api.ws")

BLOCK_MS = 1_000  # one XREAD waits this long; also how late the fan-out notices it is unused
READ_COUNT = 1_000  # stream entries per XREAD (each a worker batch's events)
RETRY_S = 1.0  # after Redis failed the fan-out or the depth reads
READY_WAIT_S = 5.0  # a subscription waits at most this long for the fan-out to start
DEPTH_S = 0.05  # the workers' own depth throttle: reading faster finds nothing new
DEPTH_PATIENCE_S = 2.0  # a depth cache that never catches up with the events is let be
CLIENT_NAME = "spot-market-data"  # the fan-out's Redis connection, in CLIENT LIST

TRADES = "trades:"
DEPTH = "depth:"
KLINES = "klines:"
ORDERS = "orders"
BALANCES = "balances"

_encode = msgspec.json.Encoder().encode
_events = msgspec.msgpack.Decoder(list[Event])


class _Request(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    op: str
    channels: list[str] = []
    token: str | None = None


_request = msgspec.json.Decoder(_Request)
_depth = msgspec.json.Decoder(DepthCache)


class MarketData:
    def __init__(
        self,
        redis_url: str,
        redis: Redis,
        shards: int,
        auth: Authenticator,
        listed: Callable[[str], bool],
        spec_of: Callable[[str], SymbolSpec | None],
        *,
        limits: SocketLimits = SocketLimits(),  # noqa: B008  (frozen: shared safely)
        trusted: Trusted | None = None,
        history: History | None = None,
    ) -> None:
        self._limits = limits
        self._trusted = trusted if trusted is not None else Trusted("")
        self._open = 0  # connections of this process
        self._per_address: dict[str, int] = {}  # of addresses outside the trusted networks
        self._per_user: dict[str, int] = {}  # authenticated connections
        self._url = redis_url
        self._redis = redis  # the API's pool: short reads (depth)
        self._shards = shards
        self._auth = auth
        self._listed = listed
        self._spec_of = spec_of  # a fill's fee asset is the base or quote of its symbol
        self._channels: dict[str, set[Connection]] = {}  # public channel -> listeners
        self._users: dict[str, set[Connection]] = {}  # user id -> `orders` listeners
        self._holders: dict[str, set[Connection]] = {}  # user id -> `balances` listeners
        # Held while balances are read and pushed: one read's push before the next read.
        self._balance_turn = asyncio.Lock()
        self._fan_out: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()  # set once the fan-out knows where the streams end
        self._depth_task: asyncio.Task[None] | None = None
        # symbol -> (seq of its last event, loop time it came): depth to read back
        self._depth_wanted: dict[str, tuple[int, float]] = {}
        self._depth_sent: dict[str, tuple[int, bytes]] = {}  # symbol -> seq, levels pushed
        self._candles = None if history is None else CandleFeed(history, self._on_candle)
        self._streams: Streams | None = None
        self.reading_since = math.inf  # loop time the fan-out began reading, inf if not

    @property
    def redis(self) -> Redis:
        """The API's pool, for short reads (depth)."""
        return self._redis

    @property
    def candles(self) -> CandleFeed | None:
        return self._candles

    def attach(self, streams: Streams) -> None:
        self._streams = streams

    # -- a connection ---------------------------------------------------------------------

    async def serve(self, scope: Scope, proto: WebsocketProtocol) -> None:
        """Run one WebSocket connection until the client leaves or is closed: /v1/ws, or
        Binance's /ws... and /stream... when their streams are attached."""
        binance = scope.path != "/v1/ws"
        if binance and self._streams is None:
            proto.close(404)
            return
        address = client_address(scope)
        counted = address not in self._trusted
        refused = self._admit(address if counted else None)
        if refused is not None:
            proto.close(refused)  # before the upgrade: an HTTP status
            return
        try:
            await self._serve(scope, proto, binance)
        finally:
            self._open -= 1
            if counted:
                count_down(self._per_address, address)

    def _admit(self, address: str | None) -> int | None:
        """Count a new connection in, or the HTTP status that refuses it."""
        if self._open >= self._limits.total:
            return 503
        if address is not None:
            if self._per_address.get(address, 0) >= self._limits.per_address:
                return 429
            self._per_address[address] = self._per_address.get(address, 0) + 1
        self._open += 1
        return None

    async def _serve(self, scope: Scope, proto: WebsocketProtocol, binance: bool) -> None:
        try:
            transport = await proto.accept()
        except (ProtocolClosed, ProtocolError):  # gone during the handshake
            return
        conn = Connection(scope.path.startswith("/stream") if binance else None)
        writer = asyncio.create_task(self._write(conn, transport, proto))
        streams = self._streams
        handle = self._handle if streams is None or not binance else streams.handle
        try:
            await self._begin(conn, scope, binance)
            self._arm(conn)
            while not conn.closing:
                message = await transport.receive()
                if message.kind == WebsocketMessageType.close:
                    break
                try:
                    await handle(conn, message.data)
                except (RedisConnectionError, RedisTimeoutError):
                    conn.push(wire_error(SocketError.UNAVAILABLE, "market data unavailable, retry"))
                except Exception:
                    log.exception("WebSocket message failed")
                    conn.push(wire_error(SocketError.INTERNAL, "internal error"))
                self._arm(conn)
        except ProtocolClosed:
            pass
        except Exception:
            log.exception("WebSocket handler failed")
        finally:
            if conn.timer is not None:
                conn.timer.cancel()
            self._forget(conn)
            if conn.principal is not None:
                count_down(self._per_user, conn.principal.user_id)
            if conn.closing:  # the writer sends the error and closes
                await asyncio.wait([writer], timeout=RETRY_S)
            writer.cancel()
            proto.close(None)

    async def _begin(self, conn: Connection, scope: Scope, binance: bool) -> None:
        """What the upgrade request says: Binance's streams in its URL, a /v1 token."""
        if binance:
            if self._streams is not None:
                await self._streams.open(conn, scope)
            return
        authorization = scope.headers.get("authorization")
        if authorization is not None:
            self._authenticate(conn, authorization)

    async def _write(self, conn: Connection, transport: Any, proto: WebsocketProtocol) -> None:
        try:
            while (message := await conn.queue.get()) is not None:
                await transport.send_str(message)
        except (ProtocolClosed, ProtocolError):  # the client is gone
            return
        proto.close(None)

    def _arm(self, conn: Connection) -> None:
        """(Re)set the connection's one timer: the idle timeout while it has no
        subscription (from its last message), its token's expiry once authenticated."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.closing:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        when, expired = math.inf, False
        if not conn.channels:
            when = now + self._limits.idle_s
        if conn.principal is not None:
            expiry = now + conn.principal.expires - time.time()
            if expiry < when:
                when, expired = expiry, True
        if when < math.inf:
            conn.timer = loop.call_at(when, self._expire, conn, expired)

    def _expire(self, conn: Connection, token: bool) -> None:
        if token:
            conn.close_with(wire_error(ApiError.TOKEN_EXPIRED.code, "the token has expired"))
        else:
            idle = self._limits.idle_s
            conn.close_with(
                wire_error(
                    SocketError.IDLE_TIMEOUT, f"no subscription and nothing sent for {idle:g} s"
                )
            )

    async def _handle(self, conn: Connection, data: bytes | str) -> None:
        if len(data if isinstance(data, bytes) else data.encode()) > MAX_MESSAGE_BYTES:
            limit = f"a message is at most {MAX_MESSAGE_BYTES} bytes"
            conn.push(wire_error(SocketError.MESSAGE_TOO_LARGE, limit))
            return
        try:
            request = _request.decode(data)
        except msgspec.DecodeError as exc:
            conn.push(wire_error(SocketError.MALFORMED, str(exc)))
            return
        if request.op in ("subscribe", "unsubscribe") and not request.channels:
            conn.push(wire_error(SocketError.MALFORMED, f"{request.op} needs channels"))
        elif request.op == "subscribe":
            await self._subscribe(conn, request.channels)
        elif request.op == "unsubscribe":
            gone = [c for c in request.channels if c in conn.channels]
            for channel in gone:
                self._unsubscribe(conn, channel)
            conn.push(_encode({"type": "unsubscribed", "channels": gone}).decode())
        elif request.op == "auth":
            if request.token is None:
                conn.push(wire_error(SocketError.MALFORMED, "auth needs a token"))
            else:
                self._authenticate(conn, f"Bearer {request.token}")
        else:
            conn.push(wire_error(SocketError.UNKNOWN_OP, f"unknown op {request.op!r}"))

    def _authenticate(self, conn: Connection, authorization: str) -> None:
        if conn.principal is not None:
            conn.push(
                wire_error(SocketError.ALREADY_AUTHENTICATED, "this connection is authenticated")
            )
            return
        try:
            principal = self._auth.principal(authorization)
        except AuthError as exc:
            conn.push(wire_error(exc.code, exc.message))
            return
        user = principal.user_id
        if self._per_user.get(user, 0) >= self._limits.per_user:
            limit = self._limits.per_user
            conn.close_with(
                wire_error(
                    SocketError.TOO_MANY_CONNECTIONS, f"{user} has {limit} connections already"
                )
            )
            return
        self._per_user[user] = self._per_user.get(user, 0) + 1
        conn.principal = principal
        conn.push(_encode({"type": "authenticated", "user_id": user}).decode())

    async def _subscribe(self, conn: Connection, channels: list[str]) -> None:
        added: list[str] = []
        for channel in channels:
            if channel in conn.channels:
                continue
            refused = self._refusal(conn, channel)
            if refused is not None:
                conn.push(refused)
                continue
            conn.channels.add(channel)
            added.append(channel)
            table, key = self._listeners(conn, channel)
            table.setdefault(key, set()).add(conn)
            if channel.startswith(KLINES) and self._candles is not None:
                self._candles.watch(*_kline_channel(channel))
        if not added:
            return
        await self.ensure_reading()
        conn.push(_encode({"type": "subscribed", "channels": added}).decode())
        for channel in added:
            if channel.startswith(DEPTH):
                await self._depth_snapshot(conn, channel.removeprefix(DEPTH))
            elif channel == BALANCES:
                await self._balance_snapshot(conn)

    async def ensure_reading(self) -> None:
        """Start the fan-out if it is not running, and wait until it reads: a subscription
        promises every event from its reply on, so not before the fan-out has read where
        the streams end (unless Redis is down; it starts from there once back)."""
        if self._fan_out is None:
            self._reading = asyncio.Event()
            self._fan_out = asyncio.create_task(self._fan_out_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reading.wait(), READY_WAIT_S)

    def read_depth(self) -> None:
        """Make sure the depth reads run (Streams.depth_symbols says what they read)."""
        if self._depth_task is None:
            self._depth_task = asyncio.create_task(self._depth_forever())

    def _refusal(self, conn: Connection, channel: str) -> str | None:
        """The error message that refuses this subscription, or None."""
        if len(conn.channels) >= self._limits.channels:
            most = self._limits.channels
            return wire_error(SocketError.TOO_MANY_CHANNELS, f"at most {most} channels", channel)
        if channel in (ORDERS, BALANCES):
            if conn.principal is None:
                return wire_error(
                    SocketError.UNAUTHENTICATED, f"{channel} needs a token (op auth)", channel
                )
            return None
        kind, _, symbol = channel.partition(":")
        if kind + ":" == KLINES:
            symbol, _, interval = symbol.rpartition(":")
            if not is_interval(interval):
                return wire_error(SocketError.UNKNOWN_CHANNEL, "klines:SYMBOL:1m .. 1M", channel)
            if self._candles is None:
                return wire_error(SocketError.UNAVAILABLE, "klines need a database", channel)
        elif kind + ":" not in (TRADES, DEPTH) or not symbol:
            return wire_error(
                SocketError.UNKNOWN_CHANNEL,
                "channels: trades:SYMBOL, depth:SYMBOL, klines:SYMBOL:INTERVAL",
                channel,
            )
        if not self._listed(symbol):
            return wire_error(SocketError.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}", channel)
        return None

    def _listeners(self, conn: Connection, channel: str) -> tuple[dict[str, set[Connection]], str]:
        """The table a subscription to `channel` is kept in, and its key there."""
        if channel == ORDERS or channel == BALANCES:
            assert conn.principal is not None
            table = self._users if channel == ORDERS else self._holders
            return table, conn.principal.user_id
        return self._channels, channel

    def _unsubscribe(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        table, key = self._listeners(conn, channel)
        if channel.startswith(KLINES) and self._candles is not None:
            self._candles.unwatch(*_kline_channel(channel))
        listeners = table.get(key)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del table[key]
                if channel.startswith(DEPTH):
                    symbol = channel.removeprefix(DEPTH)
                    self._depth_sent.pop(symbol, None)
                    self._depth_wanted.pop(symbol, None)

    def _forget(self, conn: Connection) -> None:
        if conn.combined is not None:
            if self._streams is not None:
                self._streams.forget(conn)
            return
        for channel in list(conn.channels):
            self._unsubscribe(conn, channel)

    # -- the fan-out ----------------------------------------------------------------------

    def _listening(self) -> bool:
        streams = self._streams
        listening = self._channels or self._users or self._holders
        return bool(listening or (streams and streams.listening()))

    async def _fan_out_forever(self) -> None:
        client = Redis.from_url(
            self._url,
            socket_connect_timeout=RETRY_S * 5,
            socket_timeout=BLOCK_MS / 1000 + 5,
            client_name=CLIENT_NAME,
        )
        ids: dict[KeyT, StreamIdT] | None = None
        moves = Moves()  # kept across a failed read of the balances, to be read again
        try:
            while self._listening():
                try:
                    if ids is None:
                        ids = await self._tails(client)
                        self.reading_since = asyncio.get_running_loop().time()
                        self._reading.set()
                    reply = await client.xread(ids, count=READ_COUNT, block=BLOCK_MS)
                    self._deliver(reply, ids, moves)
                    if moves:
                        await self._push_balances(moves)
                        moves = Moves()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("market data: Redis unavailable, retrying: %r", exc)
                    await asyncio.sleep(RETRY_S)
                except Exception:
                    log.exception("market data fan-out failed, retrying")
                    await asyncio.sleep(RETRY_S)
            # Synchronously with the check above: a subscription from here on starts anew.
            self._fan_out = None
            self.reading_since = math.inf
        finally:
            await client.aclose()

    async def _tails(self, client: Redis) -> dict[KeyT, StreamIdT]:
        """Each events stream's last id, and the ledger's: the fan-out reads what comes after."""
        pipe = client.pipeline(transaction=False)
        names = [keys.events(n) for n in range(self._shards)] + [keys.LEDGER]
        for name in names:
            pipe.xrevrange(name, count=1)
        lasts = await pipe.execute()
        return {n: last[0][0] if last else "0-0" for n, last in zip(names, lasts, strict=True)}

    def _deliver(self, reply: Any, ids: dict[KeyT, StreamIdT], moves: Moves) -> None:
        """Publish one read's events; add to `moves` whose watched balances they moved."""
        streams = reply.items() if isinstance(reply, dict) else reply or ()
        holders = self._balance_watchers()
        for stream, entries in streams:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                ids[name] = entry_id
                if holders:
                    try:
                        moves.add(name, fields, holders)
                    except (msgspec.DecodeError, KeyError, ValueError):
                        log.error("market data: undecodable balances in %s %s", name, entry_id)
                raw = fields.get(b"events")
                if not raw:
                    continue
                try:
                    events = _events.decode(raw)
                except msgspec.DecodeError:
                    log.error("market data: undecodable events in %s %s", name, entry_id)
                    continue
                for event in events:
                    self._publish(event)
        streams = self._streams
        if self._depth_wanted or (streams is not None and streams.depth_symbols()):
            self.read_depth()

    def _publish(self, event: Event) -> None:
        symbol = event.symbol
        if isinstance(event, Trade):
            channel = TRADES + symbol
            listeners = self._channels.get(channel)
            if listeners:
                message = _encode(
                    {
                        "type": "trade",
                        "channel": channel,
                        "symbol": symbol,
                        "seq": event.seq,
                        "price": event.price,
                        "quantity": event.quantity,
                        "taker_side": event.taker_side,
                    }
                ).decode()
                for conn in listeners:
                    conn.push(message)
            if self._candles is not None:
                self._candles.traded(symbol, event.seq)
        if self._users:
            self._publish_private(event)
        if DEPTH + symbol in self._channels:
            self._depth_wanted[symbol] = (event.seq, asyncio.get_running_loop().time())
        streams = self._streams
        if streams is not None and streams.listening():
            streams.publish(event)

    def _publish_private(self, event: Event) -> None:
        if isinstance(event, Trade):
            maker_side = Side.SELL if event.taker_side is Side.BUY else Side.BUY
            for user, order_id, side, liquidity, fee in (
                (event.maker_user_id, event.maker_order_id, maker_side, "MAKER", event.maker_fee),
                (event.taker_user_id, event.taker_order_id, event.taker_side, "TAKER",
                 event.taker_fee),
            ):  # fmt: skip
                listeners = self._users.get(user)
                if listeners:
                    # None only for a symbol listed so lately that this process has not
                    # loaded its spec yet (api/market.py refreshes every 0.2 s).
                    spec = self._spec_of(event.symbol)
                    fill = {
                        "event": "FILL",
                        "order_id": order_id,
                        "side": side,
                        "price": event.price,
                        "quantity": event.quantity,
                        "liquidity": liquidity,
                        "fee": fee,
                        "fee_asset": None if spec is None else fee_asset(spec, side),
                    }
                    _push_order(listeners, event, fill)
            return
        listeners = self._users.get(event.user_id)
        if listeners:
            fields = msgspec.to_builtins(event)
            fields["event"] = fields.pop("type")
            del fields["user_id"], fields["symbol"], fields["seq"]
            _push_order(listeners, event, fields)

    # -- balances -------------------------------------------------------------------------

    def _balance_watchers(self) -> Container[str]:
        """The users whose balances someone listens to: on `balances`, or on a Binance user
        data stream."""
        streams = self._streams
        theirs = streams.balance_users() if streams is not None else ()
        return self._holders.keys() | theirs if theirs else self._holders

    async def _push_balances(self, moves: Moves) -> None:
        """Read the moved balances of the users who listen and push one message to each."""
        async with self._balance_turn:
            amounts = await moves.read(self._redis)
            time_ms = int(time.time() * 1000)
            for user, moved in amounts.items():
                listeners = self._holders.get(user)
                if listeners:
                    message = _balance_message(moved, time_ms, snapshot=False)
                    for conn in listeners:
                        conn.push(message)
            if self._streams is not None:
                self._streams.on_balances(amounts, moves.transfers, time_ms)

    async def _balance_snapshot(self, conn: Connection) -> None:
        assert conn.principal is not None
        async with self._balance_turn:
            raw = await self._redis.hgetall(keys.balance(conn.principal.user_id))
            fields = cast(dict[bytes, bytes], raw)  # the client does not decode replies
            conn.push(
                _balance_message(balance_list(fields), int(time.time() * 1000), snapshot=True)
            )

    # -- depth ----------------------------------------------------------------------------

    def _binance_depth(self) -> list[str]:
        return [] if self._streams is None else self._streams.depth_symbols()

    async def _depth_forever(self) -> None:
        """While some watched symbol's depth cache is behind its events (or Binance's
        streams want one read): one MGET of those symbols every DEPTH_S, and a push of each
        that changed."""
        loop = asyncio.get_running_loop()
        try:
            while self._depth_wanted or self._binance_depth():
                await asyncio.sleep(DEPTH_S)
                symbols = list(self._depth_wanted.keys() | self._binance_depth())
                if not symbols:
                    continue
                try:
                    raws = await self._redis.mget([keys.depth(s) for s in symbols])
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("market data: depth unavailable, retrying: %r", exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                now = loop.time()
                for symbol, raw in zip(symbols, raws, strict=True):
                    try:
                        self._read_back(symbol, raw, now)
                    except Exception:  # one symbol's failure must not end every depth feed
                        log.exception("market data: depth of %s", symbol)
                        self._depth_wanted.pop(symbol, None)
        finally:
            self._depth_task = None

    def _read_back(self, symbol: str, raw: bytes | str | None, now: float) -> None:
        depth = None if raw is None else _depth.decode(raw)
        if self._streams is not None:  # no cache yet: no event yet
            self._streams.on_depth(symbol, depth or NO_DEPTH)
        wanted = self._depth_wanted.get(symbol)
        if wanted is None:
            return
        seq = 0 if depth is None else self._push_depth(symbol, depth)
        if seq >= wanted[0] or now - wanted[1] > DEPTH_PATIENCE_S:
            del self._depth_wanted[symbol]

    def _push_depth(self, symbol: str, depth: DepthCache) -> int:
        """Push the cached depth to the symbol's listeners if it changed; its seq."""
        levels = _encode((depth.bids, depth.asks))
        sent = self._depth_sent.get(symbol)
        if sent is not None and (depth.seq <= sent[0] or levels == sent[1]):
            return depth.seq
        self._depth_sent[symbol] = (depth.seq, levels)
        message = _depth_message(symbol, depth)
        for conn in self._channels.get(DEPTH + symbol, ()):
            conn.push(message)
        return depth.seq

    async def _depth_snapshot(self, conn: Connection, symbol: str) -> None:
        raw = await self._redis.get(keys.depth(symbol))
        depth = NO_DEPTH if raw is None else _depth.decode(raw)
        conn.push(_depth_message(symbol, depth))

    # -- lifecycle ------------------------------------------------------------------------

    def _on_candle(self, symbol: str, interval: str, candle: Candle, closed: bool) -> None:
        channel = f"{KLINES}{symbol}:{interval}"
        listeners = self._channels.get(channel)
        if listeners:
            message = _encode(
                {
                    "type": "kline",
                    "channel": channel,
                    "symbol": symbol,
                    "interval": interval,
                    "closed": closed,
                    **msgspec.to_builtins(candle),
                }
            ).decode()
            for conn in listeners:
                conn.push(message)
        if self._streams is not None:
            self._streams.on_candle(symbol, interval, candle, closed)

    async def close(self) -> None:
        if self._streams is not None:
            await self._streams.close()
        if self._candles is not None:
            await self._candles.close()
        tasks = [t for t in (self._fan_out, self._depth_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _kline_channel(channel: str) -> tuple[str, str]:
    symbol, _, interval = channel.removeprefix(KLINES).rpartition(":")
    return symbol, interval


def _push_order(listeners: set[Connection], event: Event, fields: dict[str, Any]) -> None:
    message = _encode(
        {"type": "order", "channel": ORDERS, "symbol": event.symbol, "seq": event.seq, **fields}
    ).decode()
    for conn in listeners:
        conn.push(message)


def _balance_message(moved: list[Balance], time_ms: int, *, snapshot: bool) -> str:
    return _encode(
        {
            "type": "balance",
            "channel": BALANCES,
            "snapshot": snapshot,
            "balances": moved,
            "time_ms": time_ms,
        }
    ).decode()


def _depth_message(symbol: str, depth: DepthCache) -> str:
    return _encode(
        {
            "type": "depth",
            "channel": DEPTH + symbol,
            "symbol": symbol,
            "seq": depth.seq,
            "bids": depth.bids,
            "asks": depth.asks,
        }
    ).decode()
