"""The HTTP API v1 (DESIGN.md §2) as a Granian RSGI app: no framework, one dispatch.

RSGI over ASGI because it measured faster with the same handler (no per-message dicts);
routes are two dict lookups (exact paths, then "prefix/{param}"), bodies decode with
one typed msgspec decoder per type made at import. Every order-related request is at
most one Redis round trip of its own, shared with concurrent requests by the router's
coalesced pipelines; the symbol specs and price bands come from a cache a background
task refreshes every REFRESH_S, never from Redis per request.

Order history (GET /v1/orders, /v1/fills) reads PostgreSQL, which the batcher writes
every 100 ms, through a small asyncpg pool per worker process; what the batcher has not
written yet comes from Redis (read-your-writes), whose order records are never behind
the database's rows.

GET /v1/ws is market data over WebSocket: api/market_data.py, which has the protocol.

Errors are `{"error": CODE, "message": ...}`. Whatever a client sends gets a 4xx; a 500
means a fault of ours (logged), a 503 that Redis or the database cannot be reached.

POST /v1/admin/migrations starts a hot-shard migration (control/migration.py) and runs it
as a task of this process: the API process that created a migration is its orchestrator.
A migration left unfinished (this process stopped or died) is not resumed by other API
processes: two orchestrators advancing one migration are not safe (a step's end is not
claimed, so one orchestrator's late DRAIN end can overwrite the other's rollback); an
operator resumes it with `spot migrate SYMBOL --to SHARD`, the same target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote

import asyncpg
import msgspec
from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api import openapi
from api.auth import Authenticator, AuthError, Principal
from api.market_data import MarketData
from api.metrics import Metrics, RouteStats
from api.router import RECENT_ORDERS, Router, hold_for
from control import migration
from schema import keys
from schema.codes import HTTP_STATUS, RejectReason
from schema.messages import Cancel, OrderType, Place, Replace, Side, TimeInForce
from schema.settings import Settings
from schema.symbols import SymbolSpec
from schema.wire import (
    ORDER_STATUSES,
    Balance,
    Balances,
    Book,
    Deposit,
    Error,
    Fill,
    Fills,
    MigrationConflict,
    Migrations,
    MigrationStep,
    MigrationView,
    OrderAccepted,
    Orders,
    OrderView,
    PlaceOrder,
    PublicTrade,
    ReplaceOrder,
    StartMigration,
    Symbols,
    Trades,
    Transferred,
    Withdrawal,
)
from store.db import POOL_SETTINGS

log = logging.getLogger("spot.api")

REFRESH_S = 0.2  # how stale a price band may be; the book checks it again anyway
REDIS_POOL_SIZE = 64  # the router needs one connection per pipeline in flight, reads one each
REDIS_WAIT_S = 5.0  # for a free pooled connection, then 503
BOOK_DEPTH = (1, 50, 20)  # min, max, default of ?depth=
TRADES_LIMIT = (1, 100, 50)  # of ?limit=; the workers keep the last 100
HISTORY_LIMIT = (1, 500, 100)  # of ?limit= on GET /v1/orders and /v1/fills
MIGRATIONS_LIMIT = (1, 100, 20)  # of ?limit= on GET /v1/admin/migrations
MIGRATION_ID_LENGTH = 64  # a symbol (32), '-', a counter: anything longer names none
MIGRATION_RETRY_S = 1.0  # an orchestrator that lost Redis tries again this often
MIGRATION_STOP_WAIT_S = 2.0  # at shutdown, for cancelled migrations to stop
DB_POOL = (1, 4)  # connections per API process: history reads are few and short
DB_WAIT_S = 5.0  # to connect, for a pooled connection, for a query; then 503
DB_RETRY_S = 1.0  # while the database is down, one connection attempt a second at most
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

JSON = [("content-type", "application/json")]
TEXT = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
UNAUTHORIZED = [*JSON, ("www-authenticate", "Bearer")]

Reply = tuple[int, bytes, list[tuple[str, str]]]


class _Depth(msgspec.Struct, gc=False):
    """The workers' depth cache: top 50 levels a side (workers/worker.py)."""

    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    seq: int


Handler = Callable[[Scope, HTTPProtocol, str], Awaitable[Reply]]

ORDER_COLUMNS = (
    "order_id, user_id, symbol, side, type, price, quantity, filled, remaining, notional, "
    "status, reason, time_in_force, post_only, client_order_id, created_at"
)
ORDER_BY_ID = f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"


def _orders_query(symbol: bool, status: bool) -> str:
    """A user's orders newest first: a backward scan of (user_id, order_id), the symbol and
    status filters applied on the way. One text per combination of filters rather than
    `$3 IS NULL OR ...`, so that each gets its own plan."""
    where = "user_id = $1"
    if symbol:
        where += " AND symbol = $3"
    if status:
        where += f" AND status = ${4 if symbol else 3}"
    return f"SELECT {ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY order_id DESC LIMIT $2"


def _fills_query(symbol: bool) -> str:
    """A user's trades newest first: the newest `limit` as maker and as taker, each from
    its own index on (role_user_id, created_at), merged. Trades of one flush share their
    created_at; the symbol sequence orders them."""
    extra = " AND symbol = $3" if symbol else ""

    def role(name: str, side: str) -> str:
        return (
            f"(SELECT {name.lower()}_order_id AS order_id, symbol, {side} AS side, price, "
            f"quantity, '{name}' AS liquidity, seq, created_at FROM trades "
            f"WHERE {name.lower()}_user_id = $1{extra} "
            "ORDER BY created_at DESC, seq DESC LIMIT $2)"
        )

    maker = role("MAKER", "CASE taker_side WHEN 'BUY' THEN 'SELL' ELSE 'BUY' END")
    taker = role("TAKER", "taker_side")
    return f"{maker} UNION ALL {taker} ORDER BY created_at DESC, seq DESC LIMIT $2"


ORDERS_QUERIES = {(a, b): _orders_query(a, b) for a in (False, True) for b in (False, True)}
FILLS_QUERIES = {a: _fills_query(a) for a in (False, True)}
SYMBOL_LENGTH = 32  # schema.tables.SYMBOL
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)

_encode = msgspec.json.Encoder().encode
_place_decoder = msgspec.json.Decoder(PlaceOrder)
_replace_decoder = msgspec.json.Decoder(ReplaceOrder)
_deposit_decoder = msgspec.json.Decoder(Deposit)
_withdrawal_decoder = msgspec.json.Decoder(Withdrawal)
_start_migration_decoder = msgspec.json.Decoder(StartMigration)
_depth_decoder = msgspec.json.Decoder(_Depth)
_trade_decoder = msgspec.json.Decoder(PublicTrade)  # drops the user and order ids


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        order_id: int | None = None,
        migration_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.order_id = order_id
        self.migration_id = migration_id


def _rule(reason: RejectReason, message: str) -> HTTPError:
    return HTTPError(HTTP_STATUS[reason], reason.value, message)


class Market:
    """What validation needs of every symbol, swapped in whole by each refresh."""

    def __init__(self, specs: dict[str, SymbolSpec], bands: dict[str, tuple[int, int] | None]):
        self.specs = specs
        self.bands = bands
        self.assets = {a for s in specs.values() for a in (s.base, s.quote)}
        self.symbols_body = _encode(Symbols(symbols=sorted(specs.values(), key=_by_symbol)))


def _by_symbol(spec: SymbolSpec) -> str:
    return spec.symbol


class App:
    """The RSGI application. Granian calls `__rsgi_init__` in each worker process before
    serving, with the worker's event loop, and `__rsgi_del__` after."""

    def __init__(self) -> None:
        self.market = Market({}, {})
        self._raw_specs: dict[bytes, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The migrations this process orchestrates: task -> migration id.
        self._migrations: dict[asyncio.Task[None], str] = {}
        self._exact: dict[str, dict[str, tuple[Handler, RouteStats]]] = {}
        self._param: dict[str, dict[str, tuple[Handler, RouteStats]]] = {}
        self._unavailable_logged_at = 0.0
        self.db: asyncpg.Pool | None = None
        self._db_lock = asyncio.Lock()
        self._db_retry_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Granian configures only its own loggers: without this, a migration's progress
        # and other INFO lines of the worker process go nowhere.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.configure(Settings.from_env())
        loop.run_until_complete(self._first_refresh())
        if self.settings.database_url is not None:
            loop.run_until_complete(self._open_database())
        task = loop.create_task(self._refresh_forever())
        self._tasks.add(task)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in self._tasks:
            task.cancel()
        loop.run_until_complete(self._stop_migrations())
        loop.run_until_complete(self.market_data.close())
        if self.db is not None:
            loop.run_until_complete(self.db.close())
        loop.run_until_complete(self.redis.aclose(close_connection_pool=True))

    def configure(self, settings: Settings) -> None:
        if settings.redis_url is None:
            raise ValueError("the API needs SPOT_REDIS_URL (`spot up` sets it)")
        self.settings = settings
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_POOL_SIZE,
            timeout=REDIS_WAIT_S,
            socket_connect_timeout=REDIS_WAIT_S,
            socket_timeout=REDIS_WAIT_S,
        )
        self.redis = Redis(connection_pool=pool)
        self.router = Router(self.redis)
        self.auth = Authenticator(settings.jwt_secret)
        self.market_data = MarketData(
            settings.redis_url, self.redis, settings.shards, self.auth, self._is_listed
        )
        self.metrics = Metrics(self.redis, settings.shards)
        self.max_body = settings.max_body_bytes
        self._unmatched = self.metrics.route("*", "unmatched")
        self._openapi = _encode(openapi.document())
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/orders", self.place),
            ("GET", "/v1/orders", self.orders),
            ("GET", "/v1/orders/{id}", self.order),
            ("DELETE", "/v1/orders/{id}", self.cancel),
            ("PATCH", "/v1/orders/{id}", self.replace),
            ("GET", "/v1/fills", self.fills),
            ("GET", "/v1/balances", self.balances),
            ("GET", "/v1/symbols", self.symbols),
            ("GET", "/v1/book/{symbol}", self.book),
            ("GET", "/v1/trades/{symbol}", self.trades),
            ("GET", "/v1/ws", self.websocket_only),
            ("POST", "/v1/admin/deposits", self.deposit),
            ("POST", "/v1/admin/withdrawals", self.withdrawal),
            ("POST", "/v1/admin/migrations", self.start_migration),
            ("GET", "/v1/admin/migrations", self.list_migrations),
            ("GET", "/v1/admin/migrations/{id}", self.show_migration),
            ("GET", "/healthz", self.healthz),
            ("GET", "/readyz", self.readyz),
            ("GET", "/metrics", self.prometheus),
            ("GET", "/openapi.json", self.openapi),
        ]
        for method, route, handler in routes:
            prefix, _, last = route.rpartition("/")
            table, path = (self._param, prefix) if last.startswith("{") else (self._exact, route)
            table.setdefault(path, {})[method] = (handler, self.metrics.route(method, route))

    async def _open_database(self) -> None:
        url = self.settings.database_url
        low, high = DB_POOL
        try:
            self.db = await asyncpg.create_pool(
                url,
                min_size=low,
                max_size=high,
                timeout=DB_WAIT_S,
                command_timeout=DB_WAIT_S,
                server_settings=POOL_SETTINGS,
            )
        except DB_ERRORS as exc:
            self._db_retry_at = time.monotonic() + DB_RETRY_S
            self._unavailable("PostgreSQL", exc)

    async def _first_refresh(self) -> None:
        try:
            await self._refresh()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("Redis unreachable at start (%s); /readyz says 503 until it is", exc)

    async def _refresh_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self._refresh()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if not failing:
                    log.warning("symbol refresh failed, keeping the last known specs: %s", exc)
                failing = True
            except Exception:
                log.exception("symbol refresh failed, keeping the last known specs")
            else:
                failing = False

    async def _refresh(self) -> None:
        raw = await self.redis.hgetall(keys.SYMBOLS)
        specs = self.market.specs
        if raw != self._raw_specs:
            specs = {}
            for name, value in raw.items():
                try:
                    specs[name.decode()] = msgspec.json.decode(value, type=SymbolSpec)
                except (msgspec.DecodeError, ValueError) as exc:
                    log.error("symbol %r has a bad spec, ignored: %s", name, exc)
        names = list(specs)
        lasts = await self.redis.mget([keys.last_price(s) for s in names]) if names else []
        bands = {
            name: specs[name].band(int(last) if last else specs[name].reference_price)
            for name, last in zip(names, lasts, strict=True)
        }
        if raw != self._raw_specs or bands != self.market.bands:
            self.market = Market(specs, bands)
            self._raw_specs = raw

    # -- dispatch -------------------------------------------------------------------------

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto == "ws":
            return await self._websocket(scope, proto)
        start = time.perf_counter()
        path = scope.path
        param = ""
        methods = self._exact.get(path)
        if methods is None:
            prefix, _, param = path.rpartition("/")
            methods = self._param.get(prefix) if param else None
        entry = None if methods is None else methods.get(scope.method)
        if entry is None:
            stats = self._unmatched
            if methods is None:
                status, body, headers = _error(404, "NOT_FOUND", f"no such path: {path}")
            else:
                status, body, headers = _error(
                    405, "METHOD_NOT_ALLOWED", f"{scope.method} {path}: allowed {sorted(methods)}"
                )
                headers = [*headers, ("allow", ", ".join(sorted(methods)))]
        else:
            handler, stats = entry
            try:
                status, body, headers = await handler(scope, proto, param)
            except HTTPError as exc:
                status, headers = exc.status, JSON
                if exc.migration_id is not None:
                    body = _encode(
                        MigrationConflict(
                            error=exc.code, message=exc.message, migration_id=exc.migration_id
                        )
                    )
                else:
                    body = _encode(
                        Error(error=exc.code, message=exc.message, order_id=exc.order_id)
                    )
            except AuthError as exc:
                status, headers = 401, UNAUTHORIZED
                body = _encode(Error(error=exc.code, message=exc.message))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._unavailable("Redis", exc)
                status, body, headers = _error(503, "UNAVAILABLE", "storage unavailable, retry")
            except ProtocolClosed:  # the client went away mid-request: nobody to answer
                return
            except Exception:
                log.exception("%s %s failed", scope.method, path)
                status, body, headers = _error(500, "INTERNAL", "internal error")
        proto.response_bytes(status, headers, body)
        stats.observe(status, time.perf_counter() - start)

    def _unavailable(self, store: str, exc: Exception) -> None:
        # Once a second at most: while a store is down every request would log.
        now = time.monotonic()
        if now - self._unavailable_logged_at >= 1.0:
            self._unavailable_logged_at = now
            log.warning("%s unavailable, answering 503: %r", store, exc)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._database()
        try:
            async with pool.acquire(timeout=DB_WAIT_S) as conn:
                return await conn.fetch(query, *args, timeout=DB_WAIT_S)
        except DB_ERRORS as exc:
            self._unavailable("PostgreSQL", exc)
            raise HTTPError(503, "UNAVAILABLE", "the database is unavailable, retry") from None

    async def _database(self) -> asyncpg.Pool:
        if self.db is not None:
            return self.db
        if self.settings.database_url is None:
            raise HTTPError(
                503,
                "NO_DATABASE",
                "order history needs a database: this API has no SPOT_DATABASE_URL",
            )
        # Down at start, or since: one attempt at a time, one a second at most.
        async with self._db_lock:
            if self.db is None and time.monotonic() >= self._db_retry_at:
                await self._open_database()
        if self.db is None:
            raise HTTPError(503, "UNAVAILABLE", "the database is unavailable, retry")
        return self.db

    def _principal(self, scope: Scope) -> Principal:
        return self.auth.principal(scope.headers.get("authorization"))

    def _admin(self, scope: Scope) -> Principal:
        principal = self._principal(scope)
        if not principal.admin:
            raise HTTPError(403, "FORBIDDEN", "an admin token is needed")
        return principal

    async def _body(self, scope: Scope, proto: HTTPProtocol) -> bytes:
        length = scope.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HTTPError(400, "MALFORMED", "bad Content-Length")
            if int(length) > self.max_body:
                raise _too_large(self.max_body)
            return await proto()
        # Chunked: stop reading as soon as it is too much.
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    # -- orders ---------------------------------------------------------------------------

    async def place(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = self._principal(scope).user_id
        order = _decode(_place_decoder, await self._body(scope, proto))
        market = self.market
        symbol = order.symbol
        spec = market.specs.get(symbol)
        if spec is None:
            raise _rule(RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
        band = market.bands[symbol]
        protection = None
        if order.type is OrderType.LIMIT:
            if order.price is None:
                raise _rule(RejectReason.PRICE_REQUIRED, "a LIMIT order needs a price")
            _check_price(spec, order.price, band)
            if order.post_only and order.time_in_force is not TimeInForce.GTC:
                raise _rule(
                    RejectReason.POST_ONLY_NOT_GTC_LIMIT, "post_only needs time_in_force GTC"
                )
        else:
            if order.price is not None:
                raise _rule(RejectReason.PRICE_NOT_ALLOWED, "a MARKET order takes no price")
            if order.post_only:
                raise _rule(RejectReason.POST_ONLY_NOT_GTC_LIMIT, "post_only is for LIMIT orders")
            if order.side is Side.BUY:
                if band is None:
                    raise HTTPError(
                        422,
                        "MARKET_BUY_WITHOUT_BAND",
                        f"{symbol} has no price band, so a MARKET BUY cannot be funded; "
                        "place a LIMIT order instead",
                    )
                # The router holds the buyer's funds at this price; the book never goes past it.
                protection = band[1]
        _check_quantity(spec, order.quantity)
        order_id = await self.router.order_ids.take()
        command = Place(
            order_id=order_id,
            user_id=user,
            symbol=symbol,
            side=order.side,
            quantity=order.quantity,
            type=order.type,
            price=order.price,
            time_in_force=order.time_in_force,
            post_only=order.post_only,
            self_trade=order.self_trade,
            client_order_id=order.client_order_id,
            protection_price=protection,
        )
        result = await self.router.place(spec, command, time.time_ns() // 1_000_000)
        if result.status == "OK":
            accepted = OrderAccepted(
                order_id=order_id, status="NEW", client_order_id=order.client_order_id
            )
            return 202, _encode(accepted), JSON
        if result.status == "DUPLICATE":
            raise HTTPError(
                409,
                RejectReason.DUPLICATE_CLIENT_ORDER_ID.value,
                f"client_order_id {order.client_order_id!r} is taken by an earlier order",
                order_id=int(result.detail or 0),
            )
        if result.status == "INSUFFICIENT_BALANCE":
            asset, hold = hold_for(spec, command)
            raise _insufficient(asset, hold, result.detail)
        raise _route_failure(result.status, symbol)

    async def order(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = self._principal(scope).user_id
        order_id = _order_id(param)
        # Redis first: its record is never behind the database's row, and lasts until
        # 24 h after the order ended.
        record = await self.router.hgetall(keys.order(order_id))
        owner = record.get(b"user_id")
        if owner is not None:
            if owner.decode() != user:
                raise _unknown_order(order_id)
            return 200, _encode(_order_view(order_id, record)), JSON
        rows = await self._fetch(ORDER_BY_ID, order_id)
        if not rows or rows[0]["user_id"] != user:
            raise _unknown_order(order_id)
        return 200, _encode(_row_view(rows[0])), JSON

    async def orders(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = self._principal(scope).user_id
        query = _query(scope)
        symbol = _query_symbol(query)
        status = _query_text(query, "status")
        if status is not None and status not in ORDER_STATUSES:
            raise HTTPError(400, "MALFORMED", f"status must be one of {', '.join(ORDER_STATUSES)}")
        limit = _query_int(query, "limit", HISTORY_LIMIT)
        await self._database()  # no database: 503 before any work
        recent = await self._recent_orders(user)
        fresh = [
            view
            for view in recent.values()
            if (symbol is None or view.symbol == symbol)
            and (status is None or view.status == status)
        ]
        # A row whose newer Redis record no longer matches the filters is dropped: ask for
        # that many more, so that `limit` rows are still there to show.
        hidden = len(recent) - len(fresh)
        filters = [f for f in (symbol, status) if f is not None]
        rows = await self._fetch(
            ORDERS_QUERIES[symbol is not None, status is not None], user, limit + hidden, *filters
        )
        views = fresh + [_row_view(row) for row in rows if row["order_id"] not in recent]
        views.sort(key=_by_order_id, reverse=True)
        return 200, _encode(Orders(orders=views[:limit])), JSON

    async def _recent_orders(self, user: str) -> dict[int, OrderView]:
        """The user's newest orders as Redis holds them, which may be ahead of the database
        or not in it yet (the batcher writes every 100 ms). An id whose record has expired
        (24 h after the order ended) is left to the database."""
        recent = await self.redis.lrange(keys.user_orders(user), 0, RECENT_ORDERS - 1)
        ids = [int(i) for i in recent]
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for order_id in ids:
            pipe.hgetall(keys.order(order_id))
        owner = user.encode()
        return {
            order_id: _order_view(order_id, record)
            for order_id, record in zip(ids, await pipe.execute(), strict=True)
            if record.get(b"user_id") == owner
        }

    async def fills(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = self._principal(scope).user_id
        query = _query(scope)
        symbol = _query_symbol(query)
        limit = _query_int(query, "limit", HISTORY_LIMIT)
        filters = [symbol] if symbol is not None else []
        rows = await self._fetch(FILLS_QUERIES[symbol is not None], user, limit, *filters)
        return 200, _encode(Fills(fills=[_fill(row) for row in rows])), JSON

    async def cancel(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = self._principal(scope).user_id
        order_id = _order_id(param)
        # The router finds the symbol in the order record, atomically with the enqueue.
        result = await self.router.cancel(Cancel(order_id=order_id, user_id=user, symbol=""))
        if result.status == "OK":
            return 202, _encode(OrderAccepted(order_id=order_id, status="CANCEL_REQUESTED")), JSON
        if result.status == "NOT_FOUND":
            raise _unknown_order(order_id)
        if result.status == "NOT_OPEN":
            raise _not_open(order_id, result.detail)
        raise _route_failure(result.status, "")

    async def replace(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = self._principal(scope).user_id
        order_id = _order_id(param)
        change = _decode(_replace_decoder, await self._body(scope, proto))
        if change.price is None and change.quantity is None:
            raise _rule(RejectReason.REPLACE_WITHOUT_CHANGE, "give a new price and/or quantity")
        owner, symbol, kind = await self.router.hmget(
            keys.order(order_id), "user_id", "symbol", "type"
        )
        if owner is None or owner.decode() != user:
            raise _unknown_order(order_id)
        if kind == b"MARKET":
            raise HTTPError(409, "ORDER_NOT_OPEN", f"order {order_id} is a MARKET order")
        name = symbol.decode()
        spec = self.market.specs.get(name)
        if spec is None:
            raise _rule(RejectReason.UNKNOWN_SYMBOL, f"{name} is no longer listed")
        if change.price is not None:
            _check_price(spec, change.price, self.market.bands.get(name))
        if change.quantity is not None:
            _check_quantity(spec, change.quantity, replace=True)
        result = await self.router.replace(
            Replace(
                order_id=order_id,
                user_id=user,
                symbol=name,
                price=change.price,
                quantity=change.quantity,
            )
        )
        status = result.status
        if status == "OK":
            return 202, _encode(OrderAccepted(order_id=order_id, status="REPLACE_REQUESTED")), JSON
        if status == "NOT_FOUND":
            raise _unknown_order(order_id)
        if status == "NOT_OPEN":
            raise _not_open(order_id, result.detail)
        if status == "PENDING":
            raise HTTPError(
                409, "REPLACE_PENDING", f"an earlier replace of order {order_id} is still queued"
            )
        if status == "INSUFFICIENT_BALANCE":
            raise _insufficient("", None, result.detail)
        raise _route_failure(status, name)

    # -- accounts -------------------------------------------------------------------------

    async def balances(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = self._principal(scope).user_id
        fields = await self.router.hgetall(keys.balance(user))
        avail, held = keys.available(""), keys.locked("")
        amounts: dict[str, list[int]] = {}
        for field, value in fields.items():
            name = field.decode()
            if name.startswith(avail):
                amounts.setdefault(name[len(avail) :], [0, 0])[0] = int(value)
            elif name.startswith(held):
                amounts.setdefault(name[len(held) :], [0, 0])[1] = int(value)
        balances = [
            Balance(asset=a, available=v[0], locked=v[1]) for a, v in sorted(amounts.items())
        ]
        return 200, _encode(Balances(user_id=user, balances=balances)), JSON

    async def deposit(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return await self._transfer(scope, proto, _deposit_decoder, 1)

    async def withdrawal(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return await self._transfer(scope, proto, _withdrawal_decoder, -1)

    async def _transfer(
        self, scope: Scope, proto: HTTPProtocol, decoder: msgspec.json.Decoder[Any], sign: int
    ) -> Reply:
        admin = self._admin(scope)
        transfer: Deposit = _decode(decoder, await self._body(scope, proto))
        if transfer.asset not in self.market.assets:
            raise HTTPError(422, "UNKNOWN_ASSET", f"no listed symbol trades {transfer.asset!r}")
        kind = "deposit" if sign > 0 else "withdrawal"
        reference = transfer.reference or f"{kind} by {admin.user_id}"
        result = await self.router.transfer(
            transfer.user_id, transfer.asset, sign * transfer.amount, reference
        )
        if result.status == "INSUFFICIENT_BALANCE":
            raise _insufficient(transfer.asset, transfer.amount, result.detail)
        if result.status != "OK":
            raise _route_failure(result.status, "")
        done = Transferred(
            user_id=transfer.user_id, asset=transfer.asset, available=_amount(result.detail)
        )
        return 200, _encode(done), JSON

    # -- migrations -----------------------------------------------------------------------

    async def start_migration(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        self._admin(scope)
        request: StartMigration = _decode(_start_migration_decoder, await self._body(scope, proto))
        symbol, to_shard = request.symbol, request.to_shard
        self._listed(symbol)
        if not 0 <= to_shard < self.settings.shards:
            raise HTTPError(
                422,
                "SHARD_OUT_OF_RANGE",
                f"to_shard must be within 0..{self.settings.shards - 1}",
            )
        try:
            # exclusive: a migration running already has its own orchestrator somewhere,
            # which a second one here would race.
            migration_id = await migration.start(
                self.redis,
                symbol,
                to_shard,
                request.timeout_s,
                ttl_s=self.settings.migration_ttl_s,
                exclusive=True,
            )
        except migration.MigrationRunning as exc:
            raise HTTPError(
                409, "MIGRATION_RUNNING", str(exc), migration_id=exc.migration_id
            ) from None
        except migration.MigrationError as exc:
            raise _migration_refused(exc, symbol, to_shard) from None
        # Running before the reply is built: if that read fails, the migration still runs.
        self._orchestrate(migration_id)
        view = _migration_view(await migration.status(self.redis, migration_id))
        location = f"/v1/admin/migrations/{quote(migration_id, safe='')}"
        return 202, _encode(view), [*JSON, ("location", location)]

    async def list_migrations(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        self._admin(scope)
        limit = _query_int(_query(scope), "limit", MIGRATIONS_LIMIT)
        found = await migration.recent(self.redis, limit)
        return 200, _encode(Migrations(migrations=[_migration_view(m) for m in found])), JSON

    async def show_migration(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        self._admin(scope)
        if len(param) > MIGRATION_ID_LENGTH or not param.isprintable():
            raise _unknown_migration(param[:MIGRATION_ID_LENGTH])
        try:
            found = await migration.status(self.redis, param)
        except migration.MigrationError:
            raise _unknown_migration(param) from None
        return 200, _encode(_migration_view(found)), JSON

    def _orchestrate(self, migration_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run_migration(migration_id))
        self._migrations[task] = migration_id
        task.add_done_callback(self._migration_ended)

    def _migration_ended(self, task: asyncio.Task[None]) -> None:
        self._migrations.pop(task, None)

    async def _run_migration(self, migration_id: str) -> None:
        """To its end. Each step resumes from its persisted state, so after losing Redis
        the run starts over where it was; a step whose time ran out meanwhile rolls back."""
        while True:
            try:
                await migration.run(self.redis, migration_id)
                done = await migration.status(self.redis, migration_id)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("migration %s: Redis unavailable (%s), retrying", migration_id, exc)
                await asyncio.sleep(MIGRATION_RETRY_S)
                continue
            except Exception:
                log.exception(
                    "migration %s stopped; `spot migrate` with its symbol and target resumes it",
                    migration_id,
                )
                return
            log.info(
                "migration %s: %s shard %s -> %s %s, paused %s ms",
                migration_id,
                done["symbol"],
                done["from"],
                done["to"],
                done["state"],
                done.get("paused_for_ms"),
            )
            return

    async def _stop_migrations(self) -> None:
        """Shutdown: migrations stop at their persisted step, to be resumed (`spot migrate
        SYMBOL --to SHARD`); they are not waited for, as a step may wait seconds."""
        running = dict(self._migrations)
        if not running:
            return
        for task in running:
            task.cancel()
        # redis-py may finish the command it was in before the cancellation lands.
        await asyncio.wait(running, timeout=MIGRATION_STOP_WAIT_S)
        for task, migration_id in running.items():
            log.warning(
                "migration %s left unfinished at shutdown%s; resume it with "
                "`spot migrate SYMBOL --to SHARD`",
                migration_id,
                "" if task.done() else " (still stopping)",
            )

    # -- market data ----------------------------------------------------------------------

    async def symbols(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, self.market.symbols_body, JSON

    async def book(self, scope: Scope, proto: HTTPProtocol, symbol: str) -> Reply:
        self._listed(symbol)
        depth = _query_int(_query(scope), "depth", BOOK_DEPTH)
        raw = await self.router.get(keys.depth(symbol))
        if raw is None:
            book = Book(symbol=symbol, bids=[], asks=[], seq=0)
        else:
            cached = _depth_decoder.decode(raw)
            book = Book(
                symbol=symbol, bids=cached.bids[:depth], asks=cached.asks[:depth], seq=cached.seq
            )
        return 200, _encode(book), JSON

    async def trades(self, scope: Scope, proto: HTTPProtocol, symbol: str) -> Reply:
        self._listed(symbol)
        limit = _query_int(_query(scope), "limit", TRADES_LIMIT)
        raw = await self.router.lrange(keys.trades(symbol), 0, limit - 1)
        recent = [_trade_decoder.decode(t) for t in raw]
        return 200, _encode(Trades(symbol=symbol, trades=recent)), JSON

    async def websocket_only(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        raise HTTPError(426, "UPGRADE_REQUIRED", "/v1/ws speaks WebSocket only")

    async def _websocket(self, scope: Scope, proto: Any) -> None:
        if scope.path == "/v1/ws":
            await self.market_data.serve(scope, proto)
        else:
            proto.close(404)

    def _is_listed(self, symbol: str) -> bool:
        return symbol in self.market.specs  # the market is swapped whole by each refresh

    def _listed(self, symbol: str) -> None:
        if symbol not in self.market.specs:
            raise HTTPError(404, RejectReason.UNKNOWN_SYMBOL.value, f"unknown symbol {symbol!r}")

    # -- operations -----------------------------------------------------------------------

    async def healthz(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, b'{"status":"ok"}', JSON

    async def readyz(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        await self.redis.ping()
        if not self.market.specs:
            return _error(503, "NOT_READY", "no symbols loaded yet")
        return 200, b'{"status":"ready"}', JSON

    async def prometheus(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, (await self.metrics.render()).encode(), TEXT

    async def openapi(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, self._openapi, JSON


# -- validation and errors ------------------------------------------------------------------


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise HTTPError(400, "MALFORMED", str(exc)) from None


def _check_price(spec: SymbolSpec, price: int, band: tuple[int, int] | None) -> None:
    reason = spec.check_price(price, band)
    if reason is RejectReason.PRICE_NOT_POSITIVE:
        raise _rule(reason, f"price {price} must be positive")
    if reason is RejectReason.PRICE_OFF_TICK:
        raise _rule(reason, f"price {price} is not a multiple of the tick {spec.tick}")
    if reason is not None:
        assert band is not None
        raise _rule(reason, f"price {price} is outside the band {band[0]}..{band[1]}")


def _check_quantity(spec: SymbolSpec, quantity: int, *, replace: bool = False) -> None:
    reason = spec.check_quantity(quantity, replace=replace)
    if reason is RejectReason.QUANTITY_OFF_LOT:
        raise _rule(reason, f"quantity {quantity} is not a multiple of the lot {spec.lot}")
    if reason is RejectReason.QUANTITY_BELOW_MIN:
        raise _rule(reason, f"quantity {quantity} is below the minimum {spec.min_qty}")
    if reason is not None:
        raise _rule(reason, f"quantity {quantity} is above the maximum {spec.max_qty}")


def _order_id(param: str) -> int:
    # Anything that is not an order id names no order: 404, as for someone else's order.
    if not param.isdigit() or len(param) > 18:
        raise HTTPError(404, RejectReason.UNKNOWN_ORDER.value, f"no order {param!r}")
    return int(param)


def _order_view(order_id: int, r: dict[bytes, bytes]) -> OrderView:
    filled = int(r[b"filled"])
    price = r.get(b"price", b"")
    client_order_id = r.get(b"client_order_id", b"")
    reason = r.get(b"reason")
    return OrderView(
        order_id=order_id,
        symbol=r[b"symbol"].decode(),
        side=Side(r[b"side"].decode()),
        type=OrderType(r[b"type"].decode()),
        price=int(price) if price else None,
        quantity=int(r[b"quantity"]),
        remaining=int(r[b"remaining"]),
        filled=filled,
        average_price=int(r[b"notional"]) // filled if filled else None,
        time_in_force=TimeInForce(r[b"time_in_force"].decode()),
        post_only=r.get(b"post_only") == b"1",
        client_order_id=client_order_id.decode() if client_order_id else None,
        status=r[b"status"].decode(),
        created_ms=int(r[b"created_ms"]),
        replace_pending=r.get(b"pending") == b"1",
        reason=reason.decode() if reason else None,
    )


def _row_view(row: asyncpg.Record) -> OrderView:
    filled = row["filled"]
    return OrderView(
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        price=row["price"],
        quantity=row["quantity"],
        remaining=row["remaining"],
        filled=filled,
        average_price=row["notional"] // filled if filled else None,
        time_in_force=TimeInForce(row["time_in_force"]),
        post_only=row["post_only"],
        client_order_id=row["client_order_id"],
        status=row["status"],
        created_ms=_ms(row["created_at"]),
        reason=row["reason"],
    )


def _fill(row: asyncpg.Record) -> Fill:
    return Fill(
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        price=row["price"],
        quantity=row["quantity"],
        liquidity=row["liquidity"],
        seq=row["seq"],
        created_ms=_ms(row["created_at"]),
    )


def _by_order_id(view: OrderView) -> int:
    return view.order_id


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // MILLISECOND


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.query_string)


def _query_int(query: dict[str, list[str]], name: str, limits: tuple[int, int, int]) -> int:
    low, high, default = limits
    values = query.get(name)
    if not values:
        return default
    value = values[-1]
    if not value.isdigit() or not low <= int(value) <= high:
        raise HTTPError(400, "MALFORMED", f"{name} must be an integer in {low}..{high}")
    return int(value)


def _query_text(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _query_symbol(query: dict[str, list[str]]) -> str | None:
    # Not checked against the listed symbols: a delisted symbol still has its history.
    symbol = _query_text(query, "symbol")
    if symbol is not None and (len(symbol) > SYMBOL_LENGTH or not symbol.isprintable()):
        raise HTTPError(400, "MALFORMED", f"symbol must be 1..{SYMBOL_LENGTH} printable characters")
    return symbol


def _amount(detail: str | None) -> int:
    # The router's Lua formats a number with tostring(): past 14 digits that is "1e+15".
    try:
        return int(detail or 0)
    except ValueError:
        return int(float(detail or 0))


def _error(status: int, code: str, message: str) -> Reply:
    return status, _encode(Error(error=code, message=message)), JSON


def _migration_refused(exc: migration.MigrationError, symbol: str, to_shard: int) -> HTTPError:
    if exc.code == "NO_ROUTE":
        return HTTPError(404, RejectReason.UNKNOWN_SYMBOL.value, f"{symbol} has no route")
    if exc.code == "SAME_SHARD":
        return HTTPError(409, "ALREADY_ON_SHARD", f"{symbol} is on shard {to_shard} already")
    return HTTPError(409, exc.code or "MIGRATION_REFUSED", str(exc))


def _unknown_migration(migration_id: str) -> HTTPError:
    return HTTPError(404, "UNKNOWN_MIGRATION", f"no migration {migration_id!r}")


def _migration_view(m: dict[str, Any]) -> MigrationView:
    """control.migration.status() as the API shows it: every step that began, with its times."""

    def number(name: str) -> int | None:
        value = m.get(name)
        return None if value is None else int(value)

    steps = []
    for step in (*migration.STEPS, "ROLLBACK"):
        begin, end = number(f"{step}_start_ms"), number(f"{step}_end_ms")
        if begin is None and end is None:
            continue
        took = end - begin if begin is not None and end is not None else None
        steps.append(MigrationStep(step=step, start_ms=begin, end_ms=end, duration_ms=took))
    finished, ttl_s = number("finished_ms"), number("ttl_s")
    return MigrationView(
        id=m["id"],
        symbol=m["symbol"],
        from_shard=int(m["from"]),
        to_shard=int(m["to"]),
        state=m["state"],
        step=m["step"],
        created_ms=int(m["created_ms"]),
        timeout_ms=int(m["timeout_ms"]),
        steps=steps,
        epoch=number("epoch"),
        paused_ms=number("paused_ms"),
        switched_ms=number("switched_ms"),
        paused_for_ms=number("paused_for_ms"),
        pending=number("pending"),
        pending_waited_ms=number("pending_waited_ms"),
        pending_applied_ms=number("pending_applied_ms"),
        rolled_back_at=m.get("rolled_back_at"),
        rollback_reason=m.get("reason"),
        finished_ms=finished,
        expires_ms=finished + ttl_s * 1000 if finished is not None and ttl_s else None,
    )


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "BODY_TOO_LARGE", f"the body exceeds {limit} bytes")


def _unknown_order(order_id: int) -> HTTPError:
    return HTTPError(404, RejectReason.UNKNOWN_ORDER.value, f"no order {order_id}")


def _not_open(order_id: int, status: str | None) -> HTTPError:
    return HTTPError(409, "ORDER_NOT_OPEN", f"order {order_id} is {status}")


def _insufficient(asset: str, needed: int | None, available: str | None) -> HTTPError:
    what = f"{needed} {asset} needed, {available} available" if needed else f"{available} available"
    return _rule(RejectReason.INSUFFICIENT_BALANCE, f"insufficient balance: {what}")


def _route_failure(status: str, symbol: str) -> HTTPError:
    if status == "TOO_LARGE":
        return HTTPError(422, "AMOUNT_TOO_LARGE", "price × quantity is too large")
    if status == "NO_ROUTE":
        # A listed symbol always has a route (store.symbols.list_symbol): ours to fix.
        log.error("symbol %s is listed but has no route", symbol)
        return HTTPError(503, "NO_ROUTE", f"{symbol} cannot take orders right now")
    raise RuntimeError(f"unexpected router status {status}")


app = App()
