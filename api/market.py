"""The market as the API knows it, and public market data over HTTP.

`Listing` holds what validation needs of every symbol (specs, price bands), refreshed
from Redis by a background task every REFRESH_S and swapped in whole, never read from
Redis per request. GET /v1/symbols, /v1/book/{symbol} and /v1/trades/{symbol} answer
from it and from the workers' caches (depth:{symbol}, trades:{symbol}); the WebSocket
market data is api/market_data.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import HTTPError, symbol_not_listed
from api.request import JSON, Reply, encode, query, query_int
from api.rsgi import HTTPProtocol, Scope
from schema import keys
from schema.codes import ApiError
from schema.symbols import SymbolSpec
from schema.wire import Book, DepthCache, PublicTrade, Symbols, Trades
from store.pipeline import PipelinedRedis

log = logging.getLogger("spot.api")

REFRESH_S = 0.2  # how stale a price band may be; the book checks it again anyway
BOOK_DEPTH = (1, 50, 20)  # min, max, default of ?depth=
TRADES_LIMIT = (1, 100, 50)  # of ?limit=; the workers keep the last 100

_depth_decoder = msgspec.json.Decoder(DepthCache)
_trade_decoder = msgspec.json.Decoder(PublicTrade)  # drops the user and order ids


class Market:
    """What validation needs of every symbol, swapped in whole by each refresh."""

    def __init__(
        self,
        specs: dict[str, SymbolSpec],
        bands: dict[str, tuple[int, int] | None],
        references: dict[str, int | None] | None = None,
        decimals: dict[str, int] | None = None,
    ) -> None:
        self.specs = specs
        self.bands = bands
        # the last trade price, or the spec's reference before the first: what a stop that
        # would trigger on arrival is told by (as the book's reference_price)
        self.references = references or {}
        # each asset's declared decimals (keys.ASSETS); an undeclared asset's are 0
        self.decimals = decimals or {}
        self.assets = {a for s in specs.values() for a in (s.base, s.quote)}
        self.symbols_body = encode(Symbols(symbols=sorted(specs.values(), key=_by_symbol)))


def _by_symbol(spec: SymbolSpec) -> str:
    return spec.symbol


class Listing:
    """The current `Market`, kept fresh from Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.market = Market({}, {})
        self._raw_specs: dict[bytes, bytes] = {}

    def is_listed(self, symbol: str) -> bool:
        return symbol in self.market.specs  # the market is swapped whole by each refresh

    def spec(self, symbol: str) -> SymbolSpec | None:
        return self.market.specs.get(symbol)

    def listed(self, symbol: str) -> None:
        if symbol not in self.market.specs:
            raise symbol_not_listed(symbol)

    async def first_refresh(self) -> None:
        try:
            await self.refresh()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("Redis unreachable at start (%s); /readyz says 503 until it is", exc)

    async def refresh_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if not failing:
                    log.warning("symbol refresh failed, keeping the last known specs: %s", exc)
                failing = True
            except Exception:
                log.exception("symbol refresh failed, keeping the last known specs")
            else:
                failing = False

    async def refresh(self) -> None:
        # The API's client leaves replies as bytes (no decode_responses).
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(keys.SYMBOLS))
        raw_decimals = cast(dict[bytes, bytes], await self.redis.hgetall(keys.ASSETS))
        decimals = {name.decode(): int(value) for name, value in raw_decimals.items()}
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
        references = {
            name: int(last) if last else specs[name].reference_price
            for name, last in zip(names, lasts, strict=True)
        }
        bands = {name: specs[name].band(reference) for name, reference in references.items()}
        if (
            raw != self._raw_specs
            or references != self.market.references
            or decimals != self.market.decimals
        ):
            self.market = Market(specs, bands, references, decimals)
            self._raw_specs = raw


class PublicMarketData:
    """GET /v1/symbols, /v1/book/{symbol}, /v1/trades/{symbol}; /v1/ws without upgrade."""

    def __init__(self, listing: Listing, reads: PipelinedRedis) -> None:
        self.listing = listing
        self.reads = reads

    async def symbols(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return 200, self.listing.market.symbols_body, JSON

    async def book(self, scope: Scope, proto: HTTPProtocol, symbol: str) -> Reply:
        self.listing.listed(symbol)
        depth = query_int(query(scope), "depth", BOOK_DEPTH)
        raw = await self.reads.get(keys.depth(symbol))
        if raw is None:
            book = Book(symbol=symbol, bids=[], asks=[], seq=0)
        else:
            cached = _depth_decoder.decode(raw)
            book = Book(
                symbol=symbol, bids=cached.bids[:depth], asks=cached.asks[:depth], seq=cached.seq
            )
        return 200, encode(book), JSON

    async def trades(self, scope: Scope, proto: HTTPProtocol, symbol: str) -> Reply:
        self.listing.listed(symbol)
        limit = query_int(query(scope), "limit", TRADES_LIMIT)
        raw = await self.reads.lrange(keys.trades(symbol), 0, limit - 1)
        recent = [_trade_decoder.decode(t) for t in raw]
        return 200, encode(Trades(symbol=symbol, trades=recent)), JSON

    async def websocket_only(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        raise HTTPError(ApiError.UPGRADE_REQUIRED, "/v1/ws speaks WebSocket only")
