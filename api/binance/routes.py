"""The /api/v3 routes: one table of endpoints (what api/app.py dispatches and
api/openapi.py lists), each handler wrapped so that whatever goes wrong is answered in
Binance's shape, `{"code", "msg"}`, never /v1's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec
from redis.exceptions import RedisError

from api.apikeys import READ, TRADE, ApiKey, ApiKeyStore
from api.auth import Budget
from api.binance.account import AccountRoutes
from api.binance.errors import Binance, BinanceError, reply, translate
from api.binance.market import PublicRoutes
from api.binance.replace import ReplaceRoutes
from api.binance.signing import Params, Signer, public
from api.binance.trading import TradingRoutes
from api.binance.user_stream import ListenKeys, UserStreamRoutes
from api.errors import HTTPError, Unavailable, redis_not_serving
from api.history import History
from api.market import Listing
from api.orders import OrderRoutes
from api.request import JSON, Reply
from api.rsgi import HTTPProtocol, Scope
from store.pipeline import PipelinedRedis

PREFIX = "/api/v3"
USER_STREAM = "user_stream"  # Binance's USER_STREAM security: an API key, no signature

Handler = Callable[[Scope, HTTPProtocol, str], Awaitable[Reply]]
PublicHandler = Callable[[Params], Awaitable[Any]]
SignedHandler = Callable[[ApiKey, Params], Awaitable[Any]]

_encode = msgspec.json.Encoder().encode


class Endpoint(NamedTuple):
    method: str
    path: str
    permission: str | None  # None: public; USER_STREAM: a key; else what it must be allowed
    summary: str


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/ping", None, "Connectivity: {}"),
    Endpoint("GET", "/time", None, "The server's clock, ms since the epoch"),
    Endpoint("GET", "/exchangeInfo", None, "Symbols, their assets' decimals, filters"),
    Endpoint("GET", "/depth", None, "Order book (the top 50 levels a side) and its update id"),
    Endpoint("GET", "/trades", None, "Recent trades"),
    Endpoint("GET", "/aggTrades", None, "Trades by id or time range (one aggregate a trade)"),
    Endpoint("GET", "/klines", None, "Candles, 1m to 1M, from the one-minute candles"),
    Endpoint("GET", "/ticker/24hr", None, "The last 24 hours, per symbol"),
    Endpoint("GET", "/ticker/price", None, "Last price, per symbol"),
    Endpoint("GET", "/ticker/bookTicker", None, "Best bid and ask, per symbol"),
    Endpoint("POST", "/order", TRADE, "Place an order (signed)"),
    Endpoint("GET", "/order", READ, "One order, by orderId or origClientOrderId (signed)"),
    Endpoint("DELETE", "/order", TRADE, "Cancel an order (signed)"),
    Endpoint("POST", "/order/cancelReplace", TRADE, "Cancel an order, place another (signed)"),
    Endpoint("GET", "/openOrders", READ, "Open orders, of a symbol or all (signed)"),
    Endpoint("DELETE", "/openOrders", TRADE, "Cancel every open order of a symbol (signed)"),
    Endpoint("GET", "/allOrders", READ, "A symbol's orders, by id or time range (signed)"),
    Endpoint("GET", "/account", READ, "Balances, free and locked; commission rates (signed)"),
    Endpoint("GET", "/account/commission", READ, "A symbol's commission rates (signed)"),
    Endpoint("GET", "/myTrades", READ, "The account's trades in a symbol (signed)"),
    Endpoint("POST", "/userDataStream", USER_STREAM, "A listen key for /ws/<listenKey> (API key)"),
    Endpoint("PUT", "/userDataStream", USER_STREAM, "Keep a listen key 60 min more (API key)"),
    Endpoint("DELETE", "/userDataStream", USER_STREAM, "Close a listen key (API key)"),
)


class BinanceRoutes:
    def __init__(
        self,
        *,
        orders: OrderRoutes,
        listing: Listing,
        reads: PipelinedRedis,
        history: History,
        keys: ApiKeyStore,
        max_body: int,
        unavailable: Unavailable,
        budget: Budget,
        listen_keys: ListenKeys,
    ) -> None:
        self.signer = Signer(keys, max_body)
        self.budget = budget  # the per-user rate limits /v1 charges (api/limits.py)
        self.unavailable = unavailable
        market = PublicRoutes(listing, reads, history)
        trading = TradingRoutes(orders, listing, reads, history)
        account = AccountRoutes(listing, reads, history, orders.gateway.fee_tiers)
        self.public: dict[tuple[str, str], PublicHandler] = {
            ("GET", "/ping"): market.ping,
            ("GET", "/time"): market.time,
            ("GET", "/exchangeInfo"): market.exchange_info,
            ("GET", "/depth"): market.depth,
            ("GET", "/trades"): market.trades,
            ("GET", "/aggTrades"): market.agg_trades,
            ("GET", "/klines"): market.klines,
            ("GET", "/ticker/24hr"): market.ticker_24hr,
            ("GET", "/ticker/price"): market.ticker_price,
            ("GET", "/ticker/bookTicker"): market.book_ticker,
        }
        self.signed: dict[tuple[str, str], SignedHandler] = {
            ("POST", "/order"): trading.new_order,
            ("GET", "/order"): trading.query_order,
            ("DELETE", "/order"): trading.cancel_order,
            ("POST", "/order/cancelReplace"): ReplaceRoutes(trading).cancel_replace,
            ("GET", "/openOrders"): trading.open_orders,
            ("DELETE", "/openOrders"): trading.cancel_open_orders,
            ("GET", "/allOrders"): trading.all_orders,
            ("GET", "/account"): account.account,
            ("GET", "/account/commission"): account.commission,
            ("GET", "/myTrades"): account.my_trades,
        }
        user_stream = UserStreamRoutes(listen_keys)
        self.keyed: dict[tuple[str, str], SignedHandler] = {
            ("POST", "/userDataStream"): user_stream.open,
            ("PUT", "/userDataStream"): user_stream.keep_alive,
            ("DELETE", "/userDataStream"): user_stream.close,
        }

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) for api/app.py's dispatch, one per ENDPOINTS entry."""
        served = []
        for endpoint in ENDPOINTS:
            where = (endpoint.method, endpoint.path)
            if endpoint.permission is None:
                handler = self._serve_public(self.public[where])
            elif endpoint.permission == USER_STREAM:
                handler = self._serve_keyed(self.keyed[where])
            else:
                # placing and cancelling are order commands, as on /v1
                order_command = endpoint.method != "GET" and endpoint.permission == TRADE
                handler = self._serve_signed(self.signed[where], endpoint.permission, order_command)
            served.append((endpoint.method, PREFIX + endpoint.path, handler))
        return served

    def _serve_public(self, handler: PublicHandler) -> Handler:
        async def serve(scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
            try:
                return 200, _encode(await handler(public(scope))), JSON
            except Exception as exc:
                return self._failed(exc)

        return serve

    def _serve_signed(
        self, handler: SignedHandler, permission: str, order_command: bool
    ) -> Handler:
        async def serve(scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
            try:
                key, params = await self.signer.signed(scope, proto, permission)
                self.budget.charge(key.user_id, order_command)
                return 200, _encode(await handler(key, params)), JSON
            except Exception as exc:
                return self._failed(exc)

        return serve

    def _serve_keyed(self, handler: SignedHandler) -> Handler:
        async def serve(scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
            try:
                key, params = await self.signer.keyed(scope, proto)
                self.budget.charge(key.user_id, False)
                return 200, _encode(await handler(key, params)), JSON
            except Exception as exc:
                return self._failed(exc)

        return serve

    def _failed(self, exc: Exception) -> Reply:
        """Binance's answer to what went wrong; anything else is a fault of ours, for the
        dispatch to log and answer."""
        if isinstance(exc, BinanceError):
            return reply(exc)
        if isinstance(exc, HTTPError):
            return reply(translate(exc))
        if isinstance(exc, RedisError) and redis_not_serving(exc):
            self.unavailable.warn("Redis", exc)
            return reply(BinanceError(Binance.DISCONNECTED))
        raise exc
