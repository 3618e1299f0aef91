"""Binance's public market data, from what /v1 reads: the listing (api/market.py), the
workers' depth and last-price caches, the trades table and the batcher's candles
(api/candles.py).

Depth is the workers' cache: the top 50 levels a side (DEPTH_LEVELS), whatever `limit`
asks beyond that, with the symbol's event seq as `lastUpdateId`. Trades, klines and the
24 h ticker come from the database, which the batcher writes every 100 ms.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import msgspec

from api import candles
from api.binance.errors import Binance, BinanceError
from api.binance.signing import Params
from api.binance.translate import (
    MAX_TIME_MS,
    SELF_TRADE,
    SELF_TRADE_DEFAULT,
    Scale,
    moment,
)
from api.history import History, ms
from api.market import Listing, Market
from api.request import now_ms
from schema import keys
from schema.symbols import SymbolSpec
from schema.wire import MAX_INTEGER, NO_DEPTH, DepthCache
from store.pipeline import PipelinedRedis

DEPTH_LIMIT = (1, 5000, 100)  # Binance's
TRADES_LIMIT = (1, 1000, 500)
KLINES_LIMIT = (1, 1000, 500)
# What a client may place (api/binance/trading.py); the stop types are refused by /v1 until
# their holds are settled, and translate to STOP_LIMIT / STOP_MARKET once they are.
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"]

_depth = msgspec.json.Decoder(DepthCache)

TRADE_COLUMNS = "seq, price, quantity, taker_side, created_at"
RECENT_TRADES = f"SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = $1 ORDER BY seq DESC LIMIT $2"
TRADES_FROM = (
    f"SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
)
TRADES_BETWEEN = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE symbol = $1 AND seq BETWEEN $2 AND $3 AND created_at >= $4 AND created_at <= $5
ORDER BY seq LIMIT $6"""


def symbol_of(params: Params, market: Market) -> SymbolSpec:
    name = params.required("symbol")
    spec = market.specs.get(name)
    if spec is None:
        raise BinanceError(Binance.BAD_SYMBOL)
    return spec


def symbols_of(params: Params, market: Market) -> list[SymbolSpec] | None:
    """`symbol`, or `symbols` (a JSON array of names), or None: every symbol."""
    one, many = params.get("symbol"), params.get("symbols")
    if one is not None and many is not None:
        both = "Parameters 'symbol' and 'symbols' cannot be sent together."
        raise BinanceError(Binance.TOO_MANY_PARAMETERS, both)
    if one is not None:
        return [symbol_of(params, market)]
    if many is None:
        return None
    try:
        names = json.loads(many)
    except ValueError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BinanceError(Binance.ILLEGAL_CHARS, param="symbols")
    found = [market.specs.get(name) for name in names]
    if any(spec is None for spec in found):
        raise BinanceError(Binance.BAD_SYMBOL)
    return [spec for spec in found if spec is not None]


def _limit(params: Params, limits: tuple[int, int, int]) -> int:
    low, high, default = limits
    value = params.integer("limit", low, high, default)
    assert value is not None
    return value


def symbol_info(spec: SymbolSpec, market: Market) -> dict[str, Any]:
    """A symbol as exchangeInfo lists it: its assets' decimals and its rules as filters."""
    scale = Scale(spec, market.decimals)
    filters: list[dict[str, Any]] = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": scale.px(spec.tick),
            "maxPrice": scale.px(MAX_INTEGER - MAX_INTEGER % spec.tick),
            "tickSize": scale.px(spec.tick),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": scale.qty(spec.min_qty),
            "maxQty": scale.qty(spec.max_qty),
            "stepSize": scale.qty(spec.lot),
        },
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": scale.qty(spec.min_qty),
            "maxQty": scale.qty(spec.max_qty),
            "stepSize": scale.qty(spec.lot),
        },
        {
            # No minimum; the maximum is what the order scripts hold exactly (2^53 units).
            "filterType": "NOTIONAL",
            "minNotional": scale.amount(0),
            "applyMinToMarket": False,
            "maxNotional": scale.amount(MAX_INTEGER),
            "applyMaxToMarket": False,
            "avgPriceMins": 0,
        },
    ]
    if spec.band_bps is not None:
        # The band: a price within band_bps of the last trade (the reference before one).
        up = str(1 + Decimal(spec.band_bps) / 10_000)
        down = str(1 - Decimal(spec.band_bps) / 10_000)
        filters.append(
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": up,
                "bidMultiplierDown": down,
                "askMultiplierUp": up,
                "askMultiplierDown": down,
                "avgPriceMins": 0,
            }
        )
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": scale.base,
        "quoteAsset": spec.quote,
        "quotePrecision": scale.quote,
        "quoteAssetPrecision": scale.quote,
        "baseCommissionPrecision": scale.base,
        "quoteCommissionPrecision": scale.quote,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": SELF_TRADE_DEFAULT,
        "allowedSelfTradePreventionModes": list(SELF_TRADE),
    }


class PublicRoutes:
    """ping, time, exchangeInfo, depth, trades, aggTrades, klines and the tickers."""

    def __init__(self, listing: Listing, reads: PipelinedRedis, history: History) -> None:
        self.listing = listing
        self.reads = reads
        self.history = history
        self._info: tuple[Market, bytes] | None = None

    async def ping(self, params: Params) -> Any:
        return {}

    async def time(self, params: Params) -> Any:
        return {"serverTime": now_ms()}

    async def exchange_info(self, params: Params) -> Any:
        market = self.listing.market
        chosen = symbols_of(params, market)
        if chosen is None:
            chosen = sorted(market.specs.values(), key=_by_name)
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [symbol_info(spec, market) for spec in chosen],
        }

    async def depth(self, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        limit = _limit(params, DEPTH_LIMIT)
        book = await self._book(spec.symbol)
        scale = Scale(spec, market.decimals)
        return {
            "lastUpdateId": book.seq,
            "bids": [[scale.px(p), scale.qty(q)] for p, q in book.bids[:limit]],
            "asks": [[scale.px(p), scale.qty(q)] for p, q in book.asks[:limit]],
        }

    async def _book(self, symbol: str) -> DepthCache:
        raw = await self.reads.get(keys.depth(symbol))
        return NO_DEPTH if raw is None else _depth.decode(raw)

    async def trades(self, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        limit = _limit(params, TRADES_LIMIT)
        rows = await self.history.fetch(RECENT_TRADES, spec.symbol, limit)
        scale = Scale(spec, market.decimals)
        return [
            {
                "id": row["seq"],
                "price": scale.px(row["price"]),
                "qty": scale.qty(row["quantity"]),
                "quoteQty": scale.amount(row["price"] * row["quantity"]),
                "time": ms(row["created_at"]),
                "isBuyerMaker": row["taker_side"] == "SELL",
                "isBestMatch": True,
            }
            for row in reversed(rows)
        ]

    async def agg_trades(self, params: Params) -> Any:
        """Each trade its own aggregate (a = f = l = its seq): the ids ccxt reads are then
        the same as myTrades' and trades'."""
        market = self.listing.market
        spec = symbol_of(params, market)
        limit = _limit(params, TRADES_LIMIT)
        rows = await self._trade_rows(spec.symbol, params, limit)
        scale = Scale(spec, market.decimals)
        return [
            {
                "a": row["seq"],
                "p": scale.px(row["price"]),
                "q": scale.qty(row["quantity"]),
                "f": row["seq"],
                "l": row["seq"],
                "T": ms(row["created_at"]),
                "m": row["taker_side"] == "SELL",
                "M": True,
            }
            for row in rows
        ]

    async def _trade_rows(self, symbol: str, params: Params, limit: int) -> list[Any]:
        from_id = params.integer("fromId", 0, 2**63 - 1)
        start = params.integer("startTime", 0, MAX_TIME_MS)
        end = params.integer("endTime", 0, MAX_TIME_MS)
        if from_id is not None:
            return await self.history.fetch(TRADES_FROM, symbol, from_id, limit)
        if start is None and end is None:
            return list(reversed(await self.history.fetch(RECENT_TRADES, symbol, limit)))
        low, high = start or 0, now_ms() if end is None else end
        seqs = await candles.seq_range(self.history, symbol, low, high)
        if seqs is None:
            return []
        return await self.history.fetch(
            TRADES_BETWEEN, symbol, seqs[0], seqs[1], moment(low), moment(high), limit
        )

    async def klines(self, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        interval = params.required("interval")
        if interval not in candles.INTERVALS and interval != candles.MONTH:
            raise BinanceError(Binance.BAD_INTERVAL)
        if params.get("timeZone") not in (None, "0", "+0", "0:00", "+00:00"):
            raise BinanceError(Binance.INVALID_PARAMETER, "Only timeZone 0 (UTC) is served.")
        limit = _limit(params, KLINES_LIMIT)
        start = params.integer("startTime", 0, MAX_TIME_MS)
        end = params.integer("endTime", 0, MAX_TIME_MS)
        rows = await candles.klines(
            self.history, spec.symbol, interval, start, end, limit, now_ms()
        )
        scale = Scale(spec, market.decimals)
        return [
            [
                row["open_time"],
                scale.px(row["open"]),
                scale.px(row["high"]),
                scale.px(row["low"]),
                scale.px(row["close"]),
                scale.qty(int(row["volume"])),
                candles.bucket_end(row["open_time"], interval) - 1,
                scale.amount(int(row["quote_volume"])),
                int(row["trades"]),  # a numeric sum: a Decimal from the database
                scale.qty(int(row["taker_buy_volume"])),
                scale.amount(int(row["taker_buy_quote_volume"])),
                "0",
            ]
            for row in rows
        ]

    async def ticker_24hr(self, params: Params) -> Any:
        market = self.listing.market
        chosen = symbols_of(params, market)
        specs = chosen if chosen is not None else sorted(market.specs.values(), key=_by_name)
        now = now_ms()
        days = await candles.day_summaries(self.history, [s.symbol for s in specs], now)
        tops = await self._tops(specs)
        tickers = [
            day_ticker(spec, Scale(spec, market.decimals), days[spec.symbol], top, now)
            for spec, top in zip(specs, tops, strict=True)
        ]
        return tickers[0] if params.get("symbol") is not None else tickers

    async def _tops(self, specs: list[SymbolSpec]) -> list[tuple[DepthCache, int | None]]:
        """Each symbol's book and last trade price, from the workers' caches (the reads
        issued together share the pipelined client's round trips)."""
        books = await asyncio.gather(*(self._book(spec.symbol) for spec in specs))
        lasts = await asyncio.gather(*(self.reads.get(keys.last_price(s.symbol)) for s in specs))
        return [
            (book, int(last) if last else None) for book, last in zip(books, lasts, strict=True)
        ]

    async def ticker_price(self, params: Params) -> Any:
        market = self.listing.market
        chosen = symbols_of(params, market)
        specs = chosen if chosen is not None else sorted(market.specs.values(), key=_by_name)
        tickers = [
            {"symbol": spec.symbol, "price": Scale(spec, market.decimals).px(last or 0)}
            for spec, (_, last) in zip(specs, await self._tops(specs), strict=True)
        ]
        return tickers[0] if params.get("symbol") is not None else tickers

    async def book_ticker(self, params: Params) -> Any:
        market = self.listing.market
        chosen = symbols_of(params, market)
        specs = chosen if chosen is not None else sorted(market.specs.values(), key=_by_name)
        tickers = [
            {"symbol": spec.symbol, **_best(Scale(spec, market.decimals), book)}
            for spec, (book, _) in zip(specs, await self._tops(specs), strict=True)
        ]
        return tickers[0] if params.get("symbol") is not None else tickers


def _by_name(spec: SymbolSpec) -> str:
    return spec.symbol


def _best(scale: Scale, book: DepthCache) -> dict[str, str]:
    bid = book.bids[0] if book.bids else (0, 0)
    ask = book.asks[0] if book.asks else (0, 0)
    return {
        "bidPrice": scale.px(bid[0]),
        "bidQty": scale.qty(bid[1]),
        "askPrice": scale.px(ask[0]),
        "askQty": scale.qty(ask[1]),
    }


def day_ticker(
    spec: SymbolSpec, scale: Scale, day: Any, top: tuple[DepthCache, int | None], now: int
) -> dict[str, Any]:
    """Binance's 24 h ticker from the minute candles of the last day. The last price is
    the workers' (fresher than the database by a flush)."""
    book, last = top
    trades = int(day["trades"] or 0)  # a numeric sum: a Decimal from the database
    open_ = day["open"] if trades else None
    last = last if last is not None else day["close"]
    volume, quote_volume = int(day["volume"] or 0), int(day["quote_volume"] or 0)
    change = (last or 0) - (open_ or last or 0)
    percent = Decimal(change * 100) / open_ if open_ else Decimal(0)
    # quote units per base unit: Spot's price units, shown in the price's decimals
    average = (Decimal(quote_volume) / volume).scaleb(-scale.price) if volume else Decimal(0)
    return {
        "symbol": spec.symbol,
        "priceChange": scale.px(change),
        "priceChangePercent": f"{percent:.3f}",
        "weightedAvgPrice": f"{average:.{max(scale.price, 0)}f}",
        "prevClosePrice": scale.px(day["prev_close"] or 0),
        "lastPrice": scale.px(last or 0),
        **_best(scale, book),
        "openPrice": scale.px(open_ or 0),
        "highPrice": scale.px(day["high"] or 0),
        "lowPrice": scale.px(day["low"] or 0),
        "volume": scale.qty(volume),
        "quoteVolume": scale.amount(quote_volume),
        "openTime": now - candles.DAY_MS,
        "closeTime": now,
        "firstId": day["first_seq"] if trades else -1,
        "lastId": day["last_seq"] if trades else -1,
        "count": trades,
    }
