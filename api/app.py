"""The HTTP API v1 (DESIGN.md §2) as a Granian RSGI app: no framework, one dispatch.

RSGI over ASGI because it measured faster with the same handler (no per-message dicts);
routes are two dict lookups (exact paths, then "prefix/{param}"), bodies decode with
one typed msgspec decoder per type made at import. Every order-related request is at
most one Redis round trip of its own, shared with concurrent requests by one pipelined
connection (store/pipeline.py); the symbol specs and price bands come from a cache a
background task refreshes (api/market.py), never from Redis per request.

The handlers live by concern: api/orders.py, api/history.py (balances, fills, the
database), api/market.py (public market data), api/candles.py (klines), api/admin.py
(funds, migrations); GET /v1/ws is market data over WebSocket, api/market_data.py, which
has the protocol, and Binance's streams (/ws, /stream, /ws-api/v3) ride on it
(api/binance/streams.py, api/binance/user_stream.py).

Errors are `{"error": CODE, "message": ...}`, the status beside each code in
schema/codes.py. Whatever a client sends gets a 4xx; a 500 means a fault of ours
(logged), a 503 that Redis or the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from api import openapi
from api.admin import AdminRoutes
from api.apikeys import ApiKeyRoutes, ApiKeyStore, master_key
from api.auth import Authenticator, AuthError
from api.binance.routes import BinanceRoutes
from api.binance.streams import BinanceStreams
from api.binance.user_stream import WS_API_PATH, ListenKeys, UserStreams
from api.candles import KlineRoutes
from api.console import Console
from api.console_page import ConsolePage
from api.errors import HTTPError, Unavailable, redis_not_serving
from api.history import Accounts, History
from api.ledger import LedgerRoutes
from api.limits import RateLimits
from api.market import Listing, PublicMarketData
from api.market_data import MarketData
from api.metrics import Metrics, RouteStats
from api.order_gateway import OrderGateway
from api.orders import OrderRoutes
from api.request import JSON, TEXT, UNAUTHORIZED, UNAVAILABLE, Reply, encode, error_reply
from api.rsgi import HTTPProtocol, ProtocolClosed, Scope
from api.sockets import SocketLimits
from schema.codes import ApiError
from schema.settings import Settings
from schema.wire import Error, MigrationConflict

log = logging.getLogger("spot.api")

REDIS_POOL_SIZE = 64  # the pipeline needs one connection, the other reads one each
REDIS_WAIT_S = 5.0  # for a free pooled connection, then 503

Handler = Callable[[Scope, HTTPProtocol, str], Awaitable[Reply]]
# Operations (probes, scrapes) have no rate limit (api/limits.py); every other route has.
UNLIMITED = {"/healthz", "/readyz", "/metrics"}
Route = tuple[Handler, RouteStats, bool]  # the handler, its metrics, whether rate limited


class App:
    """The RSGI application. Granian calls `__rsgi_init__` in each worker process before
    serving, with the worker's event loop, and `__rsgi_del__` after."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._exact: dict[str, dict[str, Route]] = {}
        self._param: dict[str, dict[str, Route]] = {}
        self._unavailable = Unavailable()

    # -- lifecycle ------------------------------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Granian configures only its own loggers: without this, a migration's progress
        # and other INFO lines of the worker process go nowhere.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.configure(Settings.from_env())
        loop.run_until_complete(self.listing.first_refresh())
        loop.run_until_complete(self.gateway.fee_tiers.first_refresh())
        if self.settings.database_url is not None:
            loop.run_until_complete(self.history.open())
        self._tasks.add(loop.create_task(self.listing.refresh_forever()))
        self._tasks.add(loop.create_task(self.gateway.fee_tiers.refresh_forever()))

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in self._tasks:
            task.cancel()
        loop.run_until_complete(self.admin.stop_migrations())
        loop.run_until_complete(self.console.close())
        loop.run_until_complete(self.market_data.close())
        loop.run_until_complete(self.history.close())
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
        self.redis = redis = Redis(connection_pool=pool)
        self.gateway = gateway = OrderGateway(
            redis,
            max_open_per_symbol=settings.max_open_orders_per_symbol,
            max_open=settings.max_open_orders,
            client_order_id_window_s=settings.client_order_id_window_s,
        )
        self.limits = RateLimits.from_settings(settings)
        self.auth = auth = Authenticator(settings.jwt_secret, budget=self.limits)
        self.listing = listing = Listing(redis)
        self.history = history = History(settings.database_url, self._unavailable)
        self.market_data = MarketData(
            settings.redis_url,
            redis,
            settings.shards,
            auth,
            listing.is_listed,
            listing.spec,
            limits=SocketLimits(
                per_user=settings.ws_connections_per_user,
                per_address=settings.ws_connections_per_ip,
                total=settings.ws_max_connections,
                channels=settings.ws_max_channels,
                idle_s=settings.ws_idle_timeout_s,
            ),
            trusted=self.limits.trusted,
            history=history if settings.database_url is not None else None,
        )
        self.metrics = Metrics(redis, settings.shards)
        max_body = settings.max_body_bytes
        orders = OrderRoutes(
            auth=auth,
            gateway=gateway,
            listing=listing,
            history=history,
            redis=redis,
            max_body=max_body,
        )
        accounts = Accounts(auth, gateway.pipeline, history)
        ledger = LedgerRoutes(auth, history)
        public = PublicMarketData(listing, gateway.pipeline)
        klines = KlineRoutes(listing, history)
        self.admin = admin = AdminRoutes(
            auth=auth,
            gateway=gateway,
            listing=listing,
            redis=redis,
            settings=settings,
            max_body=max_body,
        )
        # Binance's API v3 (api/binance/): signed by API keys, answered in Binance's shape.
        keys = ApiKeyStore(
            redis, master_key(settings.api_key_secret, settings.jwt_secret), gateway.pipeline
        )
        api_keys = ApiKeyRoutes(auth, keys, max_body)
        listen_keys = ListenKeys(redis)
        # Binance's streams (/ws, /stream, /ws-api/v3) on the same connections and fan-out
        self.market_data.attach(
            BinanceStreams(
                self.market_data,
                listing,
                history,
                max_streams=settings.ws_max_channels,
                users=UserStreams(redis, listing, listen_keys, keys),
            )
        )
        binance = BinanceRoutes(
            orders=orders,
            listing=listing,
            reads=gateway.pipeline,
            history=history,
            keys=keys,
            max_body=max_body,
            unavailable=self._unavailable,
            budget=self.limits,
            listen_keys=listen_keys,
        )
        self.console = console = Console(
            auth=auth, redis=redis, listing=listing, metrics=self.metrics, shards=settings.shards
        )
        page = ConsolePage()
        self._unmatched = self.metrics.route("*", "unmatched")
        self._openapi = encode(openapi.document(settings.shards))
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/orders", orders.place),
            ("GET", "/v1/orders", orders.orders),
            ("DELETE", "/v1/orders", orders.cancel_all),
            ("GET", "/v1/orders/{id}", orders.order),
            ("DELETE", "/v1/orders/{id}", orders.cancel),
            ("PATCH", "/v1/orders/{id}", orders.replace),
            ("GET", "/v1/fills", accounts.fills),
            ("GET", "/v1/balances", accounts.balances),
            ("GET", "/v1/ledger", ledger.ledger),
            ("GET", "/v1/symbols", public.symbols),
            ("GET", "/v1/book/{symbol}", public.book),
            ("GET", "/v1/trades/{symbol}", public.trades),
            ("GET", "/v1/klines", klines.klines),
            ("GET", "/v1/ws", public.websocket_only),
            ("POST", "/v1/admin/deposits", admin.deposit),
            ("POST", "/v1/admin/withdrawals", admin.withdrawal),
            ("PUT", "/v1/admin/fee-tiers/{user_id}", admin.put_fee_tier),
            ("GET", "/v1/admin/fee-tiers/{user_id}", admin.get_fee_tier),
            ("DELETE", "/v1/admin/fee-tiers/{user_id}", admin.delete_fee_tier),
            ("POST", "/v1/admin/migrations", admin.start_migration),
            ("GET", "/v1/admin/migrations", admin.list_migrations),
            ("GET", "/v1/admin/migrations/{id}", admin.show_migration),
            ("POST", "/v1/api-keys", api_keys.create),
            ("GET", "/v1/api-keys", api_keys.list),
            ("DELETE", "/v1/api-keys/{key}", api_keys.revoke),
            *binance.routes(),
            ("GET", "/v1/admin/console", console.snapshot),
            ("GET", "/console", page.index),
            ("GET", "/console/{file}", page.asset),
            ("GET", "/healthz", self.healthz),
            ("GET", "/readyz", self.readyz),
            ("GET", "/metrics", self.prometheus),
            ("GET", "/openapi.json", self.openapi),
        ]
        for method, route, handler in routes:
            prefix, _, last = route.rpartition("/")
            table, path = (self._param, prefix) if last.startswith("{") else (self._exact, route)
            stats = self.metrics.route(method, route)
            table.setdefault(path, {})[method] = (handler, stats, route not in UNLIMITED)

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
                status, body, headers = error_reply(ApiError.NOT_FOUND, f"no such path: {path}")
            else:
                status, body, headers = error_reply(
                    ApiError.METHOD_NOT_ALLOWED,
                    f"{scope.method} {path}: allowed {sorted(methods)}",
                )
                headers = [*headers, ("allow", ", ".join(sorted(methods)))]
        else:
            handler, stats, limited = entry
            try:
                self.limits.admit(scope, limited)
                status, body, headers = await handler(scope, proto, param)
            except HTTPError as exc:
                status = exc.status
                headers = exc.headers or (UNAVAILABLE if status == 503 else JSON)
                if exc.migration_id is not None:
                    body = encode(
                        MigrationConflict(
                            error=exc.code, message=exc.message, migration_id=exc.migration_id
                        )
                    )
                else:
                    body = encode(Error(error=exc.code, message=exc.message, order_id=exc.order_id))
            except AuthError as exc:
                status, headers = exc.error.status, UNAUTHORIZED
                body = encode(Error(error=exc.code, message=exc.message))
            except RedisError as exc:
                if redis_not_serving(exc):
                    self._unavailable.warn("Redis", exc)
                    status, body, headers = error_reply(
                        ApiError.UNAVAILABLE, f"Redis is unavailable ({type(exc).__name__}), retry"
                    )
                else:
                    status, body, headers = self._internal(scope)
            except ProtocolClosed:  # the client went away mid-request: nobody to answer
                return
            except Exception:
                status, body, headers = self._internal(scope)
        proto.response_bytes(status, headers, body)
        stats.observe(status, time.perf_counter() - start)

    def _internal(self, scope: Scope) -> Reply:
        log.exception("%s %s failed", scope.method, scope.path)
        return error_reply(ApiError.INTERNAL, "internal error")

    async def _websocket(self, scope: Scope, proto: Any) -> None:
        path = scope.path
        if path == "/v1/ws" or _binance_stream(path):
            await self.market_data.serve(scope, proto)
        else:
            proto.close(404)

    # -- operations -----------------------------------------------------------------------

    async def healthz(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, b'{"status":"ok"}', JSON

    async def readyz(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        """200 once Redis answers, the database too (when configured), and the symbols are
        loaded; else a 503 that names what is missing."""
        missing = []
        try:
            await self.redis.ping()
        except RedisError as exc:
            if not redis_not_serving(exc):
                raise
            missing.append(f"Redis ({type(exc).__name__})")
        if self.settings.database_url is not None:
            try:
                await self.history.fetch("SELECT 1")
            except HTTPError:
                missing.append(self.history.name)
        if missing:
            return error_reply(ApiError.UNAVAILABLE, f"unavailable: {', '.join(missing)}")
        if not self.listing.market.specs:
            return error_reply(ApiError.NOT_READY, "no symbols loaded yet")
        return 200, b'{"status":"ready"}', JSON

    async def prometheus(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, (await self.metrics.render()).encode(), TEXT

    async def openapi(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, self._openapi, JSON


def _binance_stream(path: str) -> bool:
    """Binance's stream endpoints: /ws, /ws/<stream>, /stream (api/binance/streams.py)."""
    return path in ("/ws", "/stream", WS_API_PATH) or path.startswith(("/ws/", "/stream/"))


app = App()
