"""Binance's market streams over WebSocket, on api/sockets.py's connections and limits and
api/market_data.py's fan-out (one XREAD of `events:{n}` per API process) and depth reads.

Endpoints: `/ws` and `/ws/<stream>` (raw: each message is the stream's payload),
`/stream?streams=<a>/<b>/...` (combined: `{"stream": name, "data": payload}`). A name in the
URL that is no stream is ignored, as Binance does (ccxt connects to `/ws/0` and subscribes
after). Then, in JSON text frames, Binance's methods with their `id` echoed:

    {"method": "SUBSCRIBE", "params": ["btcusdt@trade", ...], "id": 1}  -> {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": [...], "id": 2}                 -> {"result": null, "id": 2}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}              -> {"result": ["btcusdt@trade"], "id": 3}
    {"method": "SET_PROPERTY", "params": ["combined", true], "id": 4}, GET_PROPERTY ["combined"]

and errors as Binance words them, the connection kept: `{"error": {"code": 2, "msg":
"Invalid request: ..."}, "id": ...}` (unknown method, stream or symbol, bad params or id,
too many streams, a message over MAX_MESSAGE_BYTES), code 3 for JSON that does not parse.
A SUBSCRIBE with one bad name subscribes none of its names.

Streams (symbols lower case, as Binance writes them; amounts as decimal strings by each
asset's decimals, api/binance/translate.py; `E` and trade times are when the API read the
event, the events carry no clock):

    <symbol>@trade, @aggTrade      each trade; its id is the symbol's event seq, as in
                                   /api/v3/trades and aggTrades (one trade, one aggregate)
    <symbol>@kline_<interval>      1m .. 1M: the newest candle read back from the batcher's
                                   candles (api/candles.py CandleFeed), at most every second
    <symbol>@depth[@1000ms]        diffs, every second
    <symbol>@depth@100ms           diffs, at most every 100 ms
    <symbol>@depth<5|10|20>[@100ms]  the top levels, {"lastUpdateId", "bids", "asks"}
    <symbol>@bookTicker            the best bid and ask when either changes, `u` its seq
    <symbol>@ticker, @miniTicker   the rolling 24 h, every second (GET /api/v3/ticker/24hr's)

Depth diffs: their update ids are the symbol's event seq, the same as GET
/api/v3/depth's lastUpdateId, and they are made from the same cache; which levels each
holds, and why a local book kept by Binance's procedure equals the snapshot after every
diff, is api/binance/depth_diffs.py's. A SUBSCRIBE to a diff stream is answered once the
cache has reached the chain's start, so a snapshot fetched after the reply (ccxt fetches it
then) is never older than the first diff; a symbol the fan-out read nothing of since it
started begins its chain from the cache once it has been quiet QUIET_S (the cache then
holds its last event).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from api import candles
from api.binance.depth_diffs import Chain, next_diff, touches
from api.binance.market import day_ticker
from api.binance.translate import Scale
from api.binance.user_stream import WS_API_PATH, UserStreams
from api.errors import HTTPError
from api.history import History
from api.market import Listing
from api.market_data import DEPTH_S, READY_WAIT_S, MarketData
from api.request import now_ms
from api.rsgi import Scope
from api.sockets import MAX_MESSAGE_BYTES, Connection
from schema import keys
from schema.messages import Event, Side, Trade
from schema.streams import LedgerEntry
from schema.wire import NO_DEPTH, Balance, Candle, DepthCache

log = logging.getLogger("spot.api.binance.streams")

FAST_S = 0.1  # the @100ms streams' period
SLOW_S = 1.0  # the others'
QUIET_S = 0.3  # a symbol idle this long has its last event in the depth cache
PARTIAL_LEVELS = (5, 10, 20)

_encode = msgspec.json.Encoder().encode
_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


class StreamError(IntEnum):
    """Binance's error codes of the stream endpoints (a space of their own, apart from the
    REST codes of api/binance/errors.py)."""

    UNKNOWN_PROPERTY = 0
    INVALID_VALUE = 1
    INVALID_REQUEST = 2
    INVALID_JSON = 3


# -- stream names --------------------------------------------------------------------------

TRADE, AGG_TRADE, KLINE, DIFF, PARTIAL, BOOK_TICKER, TICKER, MINI_TICKER = (
    "trade", "aggTrade", "kline", "diff", "partial", "bookTicker", "ticker", "miniTicker",
)  # fmt: skip
_PLAIN = {TRADE, AGG_TRADE, BOOK_TICKER, TICKER, MINI_TICKER}
_FROM_DATABASE = {KLINE, TICKER, MINI_TICKER}  # the candles
_PARTIAL = re.compile(r"depth(5|10|20)(@100ms|@1000ms)?")


@dataclass(frozen=True)
class Stream:
    name: str  # as subscribed: "<symbol lower case>@<kind>"
    symbol: str  # Spot's
    kind: str
    interval: str = ""  # KLINE
    levels: int = 0  # PARTIAL

    @property
    def book(self) -> bool:
        """Made from the depth cache."""
        return self.kind in (DIFF, PARTIAL, BOOK_TICKER)


# -- a symbol's depth ----------------------------------------------------------------------


@dataclass
class Book:
    """What the depth-shaped streams of one symbol share: the last cache read."""

    streams: int = 0  # subscriptions of a depth-shaped stream of the symbol
    seq: int = -1  # of the last cache read; -1 before the first
    bids: list[tuple[int, int]] = field(default_factory=list)
    asks: list[tuple[int, int]] = field(default_factory=list)
    chain: Chain | None = None  # while a diff stream is subscribed
    diffs: int = 0  # subscriptions of its diff streams
    best: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None  # bookTicker's
    partial_at: float = -math.inf  # loop time of the last @100ms partial
    partial_due: bool = False  # a change the @100ms partials have not been sent
    slow_partial: int = -1  # the seq of the last 1000 ms partial


# -- the streams ---------------------------------------------------------------------------


class BinanceStreams:
    """api.sockets.Streams for Binance's protocol; one per API process."""

    def __init__(
        self,
        market_data: MarketData,
        listing: Listing,
        history: History,
        *,
        max_streams: int = 100,
        users: UserStreams | None = None,
    ) -> None:
        self._md = market_data
        self.users = users  # the user data streams (api/binance/user_stream.py)
        if users is not None:
            users.start_reading = market_data.ensure_reading
        self._listing = listing
        self._history = history
        self._max_streams = max_streams
        self._subs: dict[str, set[Connection]] = {}  # stream name -> listeners
        self._parsed: dict[str, Stream] = {}
        # symbol -> seq of its last event read, of every event since `_since`: the loop time
        # a market stream was first subscribed while the events were handed here (cleared
        # when nothing listens, as the events are not handed here then)
        self._seen: dict[str, int] = {}
        self._since = math.inf
        self._last_qty: dict[str, int] = {}  # symbol -> quantity of its last trade read
        self._books: dict[str, Book] = {}
        self._tickers: dict[str, int] = {}  # symbol -> subscriptions of @ticker, @miniTicker
        self._market: object = None
        self._by_lower: dict[str, str] = {}
        self._second: asyncio.Task[None] | None = None

    # -- market_data.Streams ----------------------------------------------------------------

    def listening(self) -> bool:
        return bool(self._subs) or (self.users is not None and self.users.listening())

    def publish(self, event: Event) -> None:
        if self.users is not None and self.users.listening():
            self.users.publish(event)
        symbol = event.symbol
        seq = event.seq
        if seq > self._seen.get(symbol, -1):
            self._seen[symbol] = seq
        if type(event) is Trade:
            assert isinstance(event, Trade)
            self._last_qty[symbol] = event.quantity
            self._trade(event)
        book = self._books.get(symbol)
        if book is not None and book.chain is not None:
            book.chain.record(seq, touches(event))

    def depth_symbols(self) -> list[str]:
        wanted = []
        for symbol, book in self._books.items():
            chain = book.chain
            if (
                self._seen.get(symbol, -1) > book.seq
                or (chain is not None and (not chain.ready.is_set() or chain.last < book.seq))
                or book.seq < 0
                or book.partial_due
            ):
                wanted.append(symbol)
        return wanted

    def on_depth(self, symbol: str, depth: DepthCache) -> None:
        book = self._books.get(symbol)
        if book is None or depth.seq < book.seq:
            return
        changed = depth.seq != book.seq
        book.seq, book.bids, book.asks = depth.seq, depth.bids, depth.asks
        now = asyncio.get_running_loop().time()
        chain = book.chain
        if chain is not None:
            self._ready(book, chain)
            self._diff(symbol, book, chain, now)
        if changed:
            best = (book.bids[0] if book.bids else None, book.asks[0] if book.asks else None)
            if best != book.best:
                book.best = best
                self._book_ticker(symbol, book)
            lower = symbol.lower()
            book.partial_due = any(f"{lower}@depth{n}@100ms" in self._subs for n in PARTIAL_LEVELS)
        if book.partial_due and now - book.partial_at >= FAST_S:
            book.partial_due, book.partial_at = False, now
            for levels in PARTIAL_LEVELS:
                self._partial(symbol, book, levels, "@100ms")

    def on_candle(self, symbol: str, interval: str, candle: Candle, closed: bool) -> None:
        name = f"{symbol.lower()}@kline_{interval}"
        if name not in self._subs:
            return
        scale = self._scale(symbol)
        self._send(
            name,
            {
                "e": "kline",
                "E": now_ms(),
                "s": symbol,
                "k": {
                    "t": candle.open_time,
                    "T": candle.close_time,
                    "s": symbol,
                    "i": interval,
                    "f": candle.first_seq,
                    "L": candle.last_seq,
                    "o": scale.px(candle.open),
                    "c": scale.px(candle.close),
                    "h": scale.px(candle.high),
                    "l": scale.px(candle.low),
                    "v": scale.qty(candle.volume),
                    "n": candle.trades,
                    "x": closed,
                    "q": scale.amount(candle.quote_volume),
                    "V": scale.qty(candle.taker_buy_volume),
                    "Q": scale.amount(candle.taker_buy_quote_volume),
                    "B": "0",
                },
            },
        )

    def balance_users(self) -> Collection[str]:
        return () if self.users is None else self.users.balance_users()

    def on_balances(
        self, amounts: dict[str, list[Balance]], transfers: list[LedgerEntry], time_ms: int
    ) -> None:
        if self.users is not None:
            self.users.on_balances(amounts, transfers, time_ms)

    async def open(self, conn: Connection, scope: Scope) -> None:
        path = scope.path
        if path == WS_API_PATH and self.users is not None:
            self.users.open_api(conn)
            return self._start()
        if path.startswith("/stream"):
            values = [v for k, v in _pairs(scope.query_string) if k == "streams"]
            names = "/".join(values).split("/")
        else:
            names = path.removeprefix("/ws").strip("/").split("/")
        streams = [s for s in (self.parse(n) for n in names if n) if s is not None]
        if self._md.candles is None:  # no database: like any name that is no stream
            streams = [s for s in streams if s.kind not in _FROM_DATABASE]
        if streams:
            await self._subscribe(conn, streams[: self._max_streams])
        elif len(names) == 1 and self.users is not None and path.startswith("/ws/"):
            user = await self.users.listen_keys.user_of(names[0])
            if user is not None:  # a user data stream: /ws/<listenKey>
                self.users.open_key(conn, user, names[0])
                self._start()
                await self._md.ensure_reading()

    def _start(self) -> None:
        if self._second is None:
            self._second = asyncio.create_task(self._second_forever())

    async def handle(self, conn: Connection, data: bytes | str) -> None:
        if self.users is not None and self.users.is_api(conn):
            return await self.users.handle(conn, data)
        request = self._request(conn, data)
        if request is None:
            return
        rid, method, params = request
        if method == "LIST_SUBSCRIPTIONS":
            return self._reply(conn, rid, sorted(conn.channels))
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(conn, rid, method, params)
        if not params or not all(isinstance(p, str) for p in params):
            return self._invalid(conn, rid, "params must be a list of stream names")
        if method == "UNSUBSCRIBE":
            for name in params:
                self._unsubscribe(conn, name)
            return self._reply(conn, rid, None)
        streams = []
        for name in params:
            stream = self.parse(name)
            if stream is None:
                return self._invalid(conn, rid, f"unknown stream {name!r}")
            streams.append(stream)
        if len(conn.channels | {s.name for s in streams}) > self._max_streams:
            return self._invalid(conn, rid, f"at most {self._max_streams} streams a connection")
        if self._md.candles is None and any(s.kind in _FROM_DATABASE for s in streams):
            return self._invalid(conn, rid, "klines and tickers need a database: none here")
        await self._subscribe(conn, streams)
        self._reply(conn, rid, None)

    def _request(self, conn: Connection, data: bytes | str) -> tuple[Any, str, list[Any]] | None:
        """(id, method, params) of a well-formed request; else None, the error sent."""
        if len(data if isinstance(data, bytes) else data.encode()) > MAX_MESSAGE_BYTES:
            limit = f"a message is at most {MAX_MESSAGE_BYTES} bytes"
            self._invalid(conn, None, limit)
            return None
        try:
            request = json.loads(data)
        except ValueError as exc:
            self._fail(conn, None, StreamError.INVALID_JSON, f"Invalid JSON: {exc}")
            return None
        if not isinstance(request, dict):
            self._invalid(conn, None, "expected a JSON object")
            return None
        rid = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if not _valid_id(rid):
            self._invalid(conn, None, "request ID must be an unsigned integer")
        elif method is None:
            self._invalid(conn, rid, "missing field `method`")
        elif method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            self._invalid(conn, rid, f"unknown variant `{method}`, expected one of {expected}")
        elif not isinstance(params, list):
            self._invalid(conn, rid, "params must be a list")
        else:
            return rid, method, params
        return None

    def forget(self, conn: Connection) -> None:
        if self.users is not None:
            self.users.forget(conn)
            self._maybe_stopped()
        for name in list(conn.channels):
            self._unsubscribe(conn, name)

    def _maybe_stopped(self) -> None:
        """Once nothing listens, the events are no longer handed here: what was seen of
        them goes stale."""
        if not self.listening():
            self._seen.clear()
            self._since = math.inf

    async def close(self) -> None:
        if self._second is not None:
            self._second.cancel()
            await asyncio.gather(self._second, return_exceptions=True)

    # -- names ----------------------------------------------------------------------------

    def parse(self, name: str) -> Stream | None:
        """The stream `name` names, or None: no such stream, or no such symbol."""
        lower, at, rest = name.partition("@")
        symbol = self._symbol(lower) if at and lower == lower.lower() else None
        if symbol is None:
            return None
        if rest in _PLAIN:
            return Stream(name, symbol, rest)
        if rest.startswith("kline_"):
            interval = rest.removeprefix("kline_")
            return (
                Stream(name, symbol, KLINE, interval=interval)
                if candles.is_interval(interval)
                else None
            )
        if rest in ("depth", "depth@1000ms", "depth@100ms"):
            return Stream(name, symbol, DIFF)
        partial = _PARTIAL.fullmatch(rest)
        if partial is not None:
            return Stream(name, symbol, PARTIAL, levels=int(partial.group(1)))
        return None

    def _symbol(self, lower: str) -> str | None:
        market = self._listing.market
        if market is not self._market:  # swapped whole by each refresh that changed it
            self._market = market
            self._by_lower = {s.lower(): s for s in market.specs}
        return self._by_lower.get(lower)

    def _scale(self, symbol: str) -> Scale:
        market = self._listing.market
        return Scale(market.specs.get(symbol), market.decimals)

    # -- subscriptions --------------------------------------------------------------------

    async def _subscribe(self, conn: Connection, streams: list[Stream]) -> None:
        # Once each: a name given twice must not count its watch twice (one unsubscribe
        # would then leave the book or the candle feed watched for good).
        added = list({s.name: s for s in streams if s.name not in conn.channels}.values())
        if added and self._since == math.inf:
            self._since = asyncio.get_running_loop().time()
        for stream in added:
            conn.channels.add(stream.name)
            self._subs.setdefault(stream.name, set()).add(conn)
            self._parsed[stream.name] = stream
            self._watch(stream)
        if not added:
            return
        self._start()
        await self._md.ensure_reading()
        if any(s.book for s in added):
            self._md.read_depth()
            await self._until_ready({s.symbol for s in added if s.kind == DIFF})
        for stream in added:  # what the book looks like now, as /v1's depth does
            book = self._books.get(stream.symbol)
            if book is None or book.seq < 0 or stream.name not in conn.channels:
                continue
            if stream.kind == BOOK_TICKER:
                self._book_ticker(stream.symbol, book, conn)
            elif stream.kind == PARTIAL:
                self._partial(stream.symbol, book, stream.levels, "", conn, stream.name)

    def _watch(self, stream: Stream) -> None:
        symbol = stream.symbol
        if stream.book:
            book = self._books.setdefault(symbol, Book())
            book.streams += 1
            if stream.kind == DIFF:
                book.diffs += 1
                if book.chain is None:
                    book.chain = Chain(self._seen.get(symbol))
        elif stream.kind == KLINE:
            assert self._md.candles is not None
            self._md.candles.watch(symbol, stream.interval)
        elif stream.kind in (TICKER, MINI_TICKER):
            self._tickers[symbol] = self._tickers.get(symbol, 0) + 1

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        stream = self._parsed.get(name)
        if name not in conn.channels or stream is None:
            return  # not subscribed, or a user data stream's (api/binance/user_stream.py)
        conn.channels.discard(name)
        listeners = self._subs.get(name)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del self._subs[name]
                del self._parsed[name]
                self._maybe_stopped()
        symbol = stream.symbol
        if stream.book:
            book = self._books[symbol]
            book.streams -= 1
            if stream.kind == DIFF:
                book.diffs -= 1
                if not book.diffs:
                    book.chain = None
            if not book.streams:
                del self._books[symbol]
        elif stream.kind == KLINE and self._md.candles is not None:
            self._md.candles.unwatch(symbol, stream.interval)
        elif stream.kind in (TICKER, MINI_TICKER):
            left = self._tickers[symbol] - 1
            if left:
                self._tickers[symbol] = left
            else:
                del self._tickers[symbol]

    def _ready(self, book: Book, chain: Chain) -> bool:
        """Whether the chain's start is in the cache (else a snapshot may be older)."""
        if not chain.ready.is_set() and chain.origin is not None and book.seq >= chain.origin:
            chain.ready.set()
        return chain.ready.is_set()

    async def _until_ready(self, symbols: set[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT_S
        while True:
            waiting = False
            for symbol in symbols:
                book = self._books.get(symbol)
                chain = None if book is None else book.chain
                if book is None or chain is None or self._ready(book, chain):
                    continue
                # the symbol sent nothing since the fan-out read for these streams
                quiet = loop.time() - max(self._md.reading_since, self._since) >= QUIET_S
                if chain.origin is None and quiet and book.seq >= 0:
                    chain.start(book.seq)  # nothing read of it: the cache has its last event
                    chain.ready.set()
                    continue
                waiting = True
            if not waiting or loop.time() > deadline:
                return
            self._md.read_depth()
            await asyncio.sleep(DEPTH_S)

    # -- messages -------------------------------------------------------------------------

    def _send(self, name: str, payload: Any, only: Connection | None = None) -> None:
        listeners = self._subs.get(name) if only is None else (only,)
        if not listeners:
            return
        raw = _encode(payload).decode()
        wrapped = None
        for conn in listeners:
            if conn.combined:
                if wrapped is None:
                    wrapped = f'{{"stream":{_encode(name).decode()},"data":{raw}}}'
                conn.push(wrapped)
            else:
                conn.push(raw)

    def _trade(self, trade: Trade) -> None:
        lower = trade.symbol.lower()
        plain, aggregate = f"{lower}@trade", f"{lower}@aggTrade"
        if plain not in self._subs and aggregate not in self._subs:
            return
        scale = self._scale(trade.symbol)
        at = now_ms()
        price, quantity = scale.px(trade.price), scale.qty(trade.quantity)
        buyer_maker = trade.taker_side is Side.SELL
        self._send(
            plain,
            {"e": "trade", "E": at, "s": trade.symbol, "t": trade.seq, "p": price, "q": quantity,
             "T": at, "m": buyer_maker, "M": True},
        )  # fmt: skip
        self._send(
            aggregate,
            {"e": "aggTrade", "E": at, "s": trade.symbol, "a": trade.seq, "p": price,
             "q": quantity, "f": trade.seq, "l": trade.seq, "T": at, "m": buyer_maker, "M": True},
        )  # fmt: skip

    def _diff(self, symbol: str, book: Book, chain: Chain, now: float) -> None:
        """The next diff of the chain, at most every FAST_S."""
        if now - chain.sent_at < FAST_S:
            return
        diff = next_diff(chain, book.bids, book.asks, book.seq)
        if diff is None:
            return
        chain.sent_at = now
        first, bids, asks = diff
        if chain.slow_first is None:
            chain.slow_first = first
        chain.slow_bids.update(bids)
        chain.slow_asks.update(asks)
        chain.slow_last = book.seq
        self._send(
            f"{symbol.lower()}@depth@100ms", self._diff_payload(symbol, first, book.seq, bids, asks)
        )

    def _diff_payload(
        self, symbol: str, first: int, last: int, bids: dict[int, int], asks: dict[int, int]
    ) -> dict[str, Any]:
        scale = self._scale(symbol)
        return {
            "e": "depthUpdate",
            "E": now_ms(),
            "s": symbol,
            "U": first,
            "u": last,
            "b": [[scale.px(p), scale.qty(q)] for p, q in sorted(bids.items(), reverse=True)],
            "a": [[scale.px(p), scale.qty(q)] for p, q in sorted(asks.items())],
        }

    def _flush_slow(self, symbol: str, chain: Chain) -> None:
        if chain.slow_first is None:
            return
        payload = self._diff_payload(
            symbol, chain.slow_first, chain.slow_last, chain.slow_bids, chain.slow_asks
        )
        chain.slow_first = None
        chain.slow_bids, chain.slow_asks = {}, {}
        lower = symbol.lower()
        self._send(f"{lower}@depth", payload)
        self._send(f"{lower}@depth@1000ms", payload)

    def _partial(
        self,
        symbol: str,
        book: Book,
        levels: int,
        suffix: str,
        only: Connection | None = None,
        name: str | None = None,
    ) -> None:
        name = name or f"{symbol.lower()}@depth{levels}{suffix}"
        if only is None and name not in self._subs:
            return
        scale = self._scale(symbol)
        self._send(
            name,
            {
                "lastUpdateId": book.seq,
                "bids": [[scale.px(p), scale.qty(q)] for p, q in book.bids[:levels]],
                "asks": [[scale.px(p), scale.qty(q)] for p, q in book.asks[:levels]],
            },
            only,
        )

    def _book_ticker(self, symbol: str, book: Book, only: Connection | None = None) -> None:
        name = f"{symbol.lower()}@bookTicker"
        if only is None and name not in self._subs:
            return
        scale = self._scale(symbol)
        bid = book.bids[0] if book.bids else (0, 0)
        ask = book.asks[0] if book.asks else (0, 0)
        self._send(
            name,
            {"u": book.seq, "s": symbol, "b": scale.px(bid[0]), "B": scale.qty(bid[1]),
             "a": scale.px(ask[0]), "A": scale.qty(ask[1])},
            only,
        )  # fmt: skip

    # -- every second ---------------------------------------------------------------------

    async def _second_forever(self) -> None:
        try:
            while self.listening():
                await asyncio.sleep(SLOW_S)
                if self.users is not None:
                    try:
                        await self.users.check_keys(asyncio.get_running_loop().time())
                    except Exception:  # Redis away: the listen keys are checked next second
                        log.exception("listen keys not checked")
                for symbol, book in list(self._books.items()):
                    if book.chain is not None:
                        self._flush_slow(symbol, book.chain)
                    if book.seq != book.slow_partial and book.seq >= 0:
                        book.slow_partial = book.seq
                        for levels in PARTIAL_LEVELS:
                            self._partial(symbol, book, levels, "")
                            self._partial(symbol, book, levels, "@1000ms")
                if self._tickers:
                    try:
                        await self._push_tickers(list(self._tickers))
                    except HTTPError as exc:  # no database, or it is down: next second
                        log.warning("tickers unavailable: %s", exc.message)
                    except Exception:
                        log.exception("tickers failed")
        finally:
            self._second = None

    async def _push_tickers(self, symbols: list[str]) -> None:
        now = now_ms()
        days = await candles.day_summaries(self._history, symbols, now)
        redis = self._md.redis
        raws = await redis.mget(
            [keys.depth(s) for s in symbols] + [keys.last_price(s) for s in symbols]
        )
        books, lasts = raws[: len(symbols)], raws[len(symbols) :]
        for symbol, raw, last in zip(symbols, books, lasts, strict=True):
            spec = self._listing.spec(symbol)
            if spec is None or symbol not in days:
                continue
            depth = NO_DEPTH if raw is None else msgspec.json.decode(raw, type=DepthCache)
            scale = self._scale(symbol)
            day = day_ticker(spec, scale, days[symbol], (depth, int(last) if last else None), now)
            lower = symbol.lower()
            self._send(
                f"{lower}@ticker",
                {"e": "24hrTicker", "E": now, "s": symbol, "p": day["priceChange"],
                 "P": day["priceChangePercent"], "w": day["weightedAvgPrice"],
                 "x": day["prevClosePrice"], "c": day["lastPrice"],
                 "Q": scale.qty(self._last_qty.get(symbol, 0)), "b": day["bidPrice"],
                 "B": day["bidQty"], "a": day["askPrice"], "A": day["askQty"],
                 "o": day["openPrice"], "h": day["highPrice"], "l": day["lowPrice"],
                 "v": day["volume"], "q": day["quoteVolume"], "O": day["openTime"],
                 "C": day["closeTime"], "F": day["firstId"], "L": day["lastId"],
                 "n": day["count"]},
            )  # fmt: skip
            self._send(
                f"{lower}@miniTicker",
                {"e": "24hrMiniTicker", "E": now, "s": symbol, "c": day["lastPrice"],
                 "o": day["openPrice"], "h": day["highPrice"], "l": day["lowPrice"],
                 "v": day["volume"], "q": day["quoteVolume"]},
            )  # fmt: skip

    # -- replies --------------------------------------------------------------------------

    def _reply(self, conn: Connection, rid: Any, result: Any) -> None:
        conn.push(_encode({"result": result, "id": rid}).decode())

    def _fail(self, conn: Connection, rid: Any, code: StreamError, msg: str) -> None:
        conn.push(_encode({"error": {"code": int(code), "msg": msg}, "id": rid}).decode())

    def _invalid(self, conn: Connection, rid: Any, why: str) -> None:
        self._fail(conn, rid, StreamError.INVALID_REQUEST, f"Invalid request: {why}")

    def _property(self, conn: Connection, rid: Any, method: str, params: list[Any]) -> None:
        if not params or not isinstance(params[0], str):
            return self._invalid(conn, rid, "property name must be a string")
        if params[0] != "combined":
            return self._fail(conn, rid, StreamError.UNKNOWN_PROPERTY, "Unknown property")
        if method == "GET_PROPERTY":
            return self._reply(conn, rid, bool(conn.combined))
        if len(params) != 2 or not isinstance(params[1], bool):
            msg = "Invalid value type: expected Boolean"
            return self._fail(conn, rid, StreamError.INVALID_VALUE, msg)
        conn.combined = params[1]
        self._reply(conn, rid, None)


def _valid_id(rid: Any) -> bool:
    """Binance's: a 64-bit signed integer, up to 36 letters and digits, or null."""
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and _ID.fullmatch(rid) is not None


def _pairs(query_string: str) -> list[tuple[str, str]]:
    return parse_qsl(query_string, keep_blank_values=True)
