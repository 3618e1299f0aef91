# ruff: noqa: F811  (the spot fixture is test_binance_ccxt.py's, imported)
"""Binance's streams against a running Spot (the API, a matching worker process and the
batcher, on real Redis and PostgreSQL) under a background order generator:

- depth-diff clients that keep a local book by Binance's documented procedure (a snapshot
  from GET /api/v3/depth, the buffered diffs of /ws/<symbol>@depth..., U/u chained) through
  DEPTH_DIFF_SECONDS of trading (15 here; issue #15 asks for a minute:
  `DEPTH_DIFF_SECONDS=60 .venv/bin/pytest tests/e2e/test_binance_streams.py -k local_book`),
  and end equal to GET /api/v3/depth;
- the real ccxt pro client (`ccxt.pro.binance`, ccxt 4.5.90) with only its URLs pointed
  here: watch_order_book (which runs the same procedure itself), watch_trades,
  watch_ohlcv, watch_ticker and watch_bids_asks.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro
import pytest
import websocket

from tests.e2e.test_binance_ccxt import OPTIONS, Spot, eventually, spot  # noqa: F401
from tests.integration.http import admin, user_token

SECONDS = float(os.environ.get("DEPTH_DIFF_SECONDS", "15"))
MID = 3_000_000  # BTCUSDT's reference: 30,000.00 USDT
LEVELS = 50  # what GET /api/v3/depth serves (the workers' DEPTH_LEVELS)


class Generator:
    """Orders against BTCUSDT over /v1 from a few users until stopped: limits either side
    of the middle (some crossing, so they trade), cancels and replaces of their own."""

    def __init__(self, spot: Spot, users: int = 4, seed: int = 15) -> None:
        self.spot = spot
        self.rng = random.Random(seed)
        self.tokens = []
        for n in range(users):
            user = f"gen{seed}-{n}-{time.monotonic_ns()}"
            for asset, amount in (("BTC", 10**12), ("USDT", 10**15)):
                body = {"user_id": user, "asset": asset, "amount": amount}
                status, _ = spot.api.request("POST", "/v1/admin/deposits", body, token=admin())
                assert status == 200
            self.tokens.append(user_token(user))
        self.open: list[list[int]] = [[] for _ in range(users)]
        self.stop = threading.Event()
        self.sent = self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Generator:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        api, rng = self.spot.api, self.rng
        while not self.stop.is_set():
            n = rng.randrange(len(self.tokens))
            token, mine = self.tokens[n], self.open[n]
            roll = rng.random()
            if mine and (roll < 0.25 or len(mine) > 100):
                order_id = mine.pop(rng.randrange(len(mine)))
                api.request("DELETE", f"/v1/orders/{order_id}", token=token)
            elif mine and roll < 0.35:
                order_id = rng.choice(mine)
                change = {"quantity": rng.randrange(2, 30) * 10}
                api.request("PATCH", f"/v1/orders/{order_id}", change, token=token)
            else:
                side = rng.choice(("BUY", "SELL"))
                away = rng.randrange(1, 300) * (1 if side == "SELL" else -1)
                if roll > 0.85:
                    away = -away  # across the middle: it trades
                order = {"symbol": "BTCUSDT", "side": side, "price": MID + away,
                         "quantity": rng.randrange(2, 40) * 10}  # fmt: skip
                status, reply = api.request("POST", "/v1/orders", order, token=token)
                self.sent += 1
                if status == 202:
                    self.accepted += 1
                    mine.append(int(reply["order_id"]))
            time.sleep(0.005)


@dataclass
class Follower:
    """One client of Binance's diff stream keeping a local book by the documented procedure:
    buffer the events, fetch a snapshot (after `delay` more seconds of buffering), drop u <=
    lastUpdateId, the first kept has U <= lastUpdateId + 1 <= u, each next U = previous u +
    1, absolute quantities, 0 removes a level. A broken rule restarts it (counted)."""

    spot: Spot
    stream: str
    delay: float = 0.0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    nonce: int | None = None
    restarts: int = 0
    applied: int = 0
    matches: int = 0  # times the local book equalled a snapshot of the same id mid-run
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        url = f"ws://127.0.0.1:{self.spot.api.port}/ws/{self.stream}"
        self.ws = websocket.create_connection(url, timeout=10)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _recv(self) -> dict[str, Any] | None:
        try:
            message: dict[str, Any] = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        return message

    def _snapshot(self) -> dict[str, Any]:
        status, depth = self.spot.raw("GET", "/depth", query="symbol=BTCUSDT&limit=1000")
        assert status == 200, depth
        return dict(depth)

    def _run(self) -> None:
        try:
            self.ws.settimeout(0.2)
            while not self.done.is_set():
                self._follow()
        except Exception as exc:  # reported by the test
            self.error = repr(exc)
        finally:
            self.ws.close()

    def _follow(self) -> None:
        buffered = self._buffer()
        if not buffered:
            return
        snapshot = self._snapshot()
        if snapshot["lastUpdateId"] < buffered[0]["U"] - 1:
            self.restarts += 1  # the snapshot is older than the first event: a new one
            return
        self.bids = dict(snapshot["bids"])
        self.asks = dict(snapshot["asks"])
        self.nonce = snapshot["lastUpdateId"]
        self._keep(buffered)

    def _buffer(self) -> list[dict[str, Any]]:
        """The events from the first one received to `delay` seconds after it."""
        buffered: list[dict[str, Any]] = []
        while not buffered and not self.done.is_set():
            if (first := self._recv()) is not None:
                buffered.append(first)
        until = time.monotonic() + self.delay
        while buffered and time.monotonic() < until:
            if (message := self._recv()) is not None:
                buffered.append(message)
        return buffered

    def _keep(self, buffered: list[dict[str, Any]]) -> None:
        """Apply the buffered events, then each as it comes; every 0.5 s take a snapshot
        and compare it with the local book should the book reach its id."""
        checked_at = time.monotonic()
        pending: list[dict[str, Any]] = []
        while not self.done.is_set():
            for event in buffered:
                if not self._apply(event):
                    self.restarts += 1
                    return
            buffered = []
            if time.monotonic() - checked_at > 0.5:
                checked_at = time.monotonic()
                pending.append(self._snapshot())
            ahead = []
            for taken in pending:
                if taken["lastUpdateId"] == self.nonce:
                    self._compare(taken)
                elif taken["lastUpdateId"] > (self.nonce or 0):
                    ahead.append(taken)  # a diff may end at its id later; else it is passed
            pending = ahead
            if (message := self._recv()) is not None:
                buffered.append(message)

    def _apply(self, event: dict[str, Any]) -> bool:
        assert self.nonce is not None
        if event["u"] <= self.nonce:
            return True
        if event["U"] > self.nonce + 1:
            return False  # missed events: Binance says start again
        for book, levels in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, quantity in levels:
                if float(quantity) == 0:
                    book.pop(price, None)
                else:
                    book[price] = quantity
        self.nonce = event["u"]
        self.applied += 1
        return True

    def top(self) -> dict[str, list[list[str]]]:
        """The local book's best LEVELS a side, as GET /api/v3/depth lists them."""
        bids = sorted(self.bids.items(), key=lambda level: -float(level[0]))[:LEVELS]
        asks = sorted(self.asks.items(), key=lambda level: float(level[0]))[:LEVELS]
        return {"bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}

    def _compare(self, snapshot: dict[str, Any]) -> None:
        want = {"bids": snapshot["bids"][:LEVELS], "asks": snapshot["asks"][:LEVELS]}
        assert self.top() == want, f"at {self.nonce}: {self.top()} != {want}"
        self.matches += 1


@pytest.fixture
def followers(spot: Spot) -> Iterator[list[Follower]]:
    made: list[Follower] = []
    try:
        yield made
    finally:
        for follower in made:
            follower.done.set()
        for follower in made:
            follower.thread.join(10)


def test_a_local_book_kept_by_binances_procedure_ends_equal_to_depth(
    spot: Spot, followers: list[Follower]
) -> None:
    with Generator(spot) as generator:
        time.sleep(0.5)  # a book to start from
        followers += [
            Follower(spot, "btcusdt@depth@100ms"),
            Follower(spot, "btcusdt@depth@100ms", delay=1.5),  # a snapshot mid-chain
            Follower(spot, "btcusdt@depth"),  # the 1000 ms diffs
        ]
        time.sleep(SECONDS)
    assert generator.accepted > SECONDS * 20, (generator.sent, generator.accepted)

    def settled() -> bool:
        status, depth = spot.raw("GET", "/depth", query="symbol=BTCUSDT&limit=1000")
        return all(f.nonce == depth["lastUpdateId"] for f in followers)

    eventually(settled, timeout=15)
    status, final = spot.raw("GET", "/depth", query="symbol=BTCUSDT&limit=1000")
    assert len(final["bids"]) == LEVELS and len(final["asks"]) == LEVELS  # a deep book
    for follower in followers:
        assert follower.error is None, follower.error
        assert follower.restarts == 0, follower.stream
        assert follower.applied > SECONDS / 2, (follower.stream, follower.applied)
        assert follower.top() == {"bids": final["bids"], "asks": final["asks"]}
    print(
        f"\n{generator.accepted} orders in {SECONDS:g} s; diffs applied "
        f"{[f.applied for f in followers]}, mid-run equal snapshots "
        f"{[f.matches for f in followers]}"
    )


def _pro(spot: Spot, key: dict[str, Any] | None = None) -> Any:
    """ccxt pro's binance with only its URLs pointed here (and a key, for the private)."""
    ws = f"ws://127.0.0.1:{spot.api.port}"
    config: dict[str, Any] = {
        "urls": {
            "api": {
                "public": spot.base,
                "private": spot.base,
                "ws": {"spot": f"{ws}/ws", "ws-api": {"spot": f"{ws}/ws-api/v3"}},
            }
        },
        "options": OPTIONS,
    }
    if key is not None:
        config |= {"apiKey": key["api_key"], "secret": key["secret"]}
    return ccxt.pro.binance(config)


def test_ccxt_pro_watches_the_book_trades_candles_and_tickers(
    spot: Spot, aio: asyncio.Runner
) -> None:
    async def watch() -> dict[str, Any]:
        exchange = _pro(spot)
        seen: dict[str, Any] = {}
        try:
            await exchange.load_markets()
            book = await exchange.watch_order_book("BTC/USDT")
            updates = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                book = await exchange.watch_order_book("BTC/USDT")
                updates += 1
            seen["updates"] = updates
            seen["trades"] = await exchange.watch_trades("BTC/USDT")
            seen["ohlcv"] = await exchange.watch_ohlcv("BTC/USDT", "1m")
            seen["ticker"] = await exchange.watch_ticker("BTC/USDT")
            seen["bidsasks"] = await exchange.watch_bids_asks(["BTC/USDT"])
            seen["generator_stopped"] = stop()
            # once the trading stops, the book ccxt kept is the snapshot of its nonce
            for _ in range(50):
                status, depth = spot.raw("GET", "/depth", query="symbol=BTCUSDT&limit=50")
                if depth["lastUpdateId"] == book["nonce"]:
                    break
                try:
                    book = await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), 0.3)
                except TimeoutError:
                    pass
            seen["depth"] = depth
            seen["nonce"] = book["nonce"]
            seen["bids"] = [b[:2] for b in book["bids"][:LEVELS]]
            seen["asks"] = [a[:2] for a in book["asks"][:LEVELS]]
        finally:
            await exchange.close()
        return seen

    generator = Generator(spot, seed=16)

    def stop() -> bool:
        generator.stop.set()
        generator.thread.join(10)
        return True

    with generator:
        seen = aio.run(watch())
    depth = seen["depth"]
    assert seen["updates"] > 5
    assert seen["nonce"] == depth["lastUpdateId"]
    assert seen["bids"] == [[float(p), float(q)] for p, q in depth["bids"]]
    assert seen["asks"] == [[float(p), float(q)] for p, q in depth["asks"]]
    trade = seen["trades"][-1]
    assert trade["symbol"] == "BTC/USDT" and trade["price"] > 0 and trade["amount"] > 0
    assert trade["side"] in ("buy", "sell")
    candle = seen["ohlcv"][-1]
    assert len(candle) == 6 and candle[0] % 60_000 == 0 and candle[5] > 0
    assert seen["ticker"]["symbol"] == "BTC/USDT" and seen["ticker"]["last"] > 0
    quote = seen["bidsasks"]["BTC/USDT"]
    assert 0 < quote["bid"] < quote["ask"]


def test_ccxt_pro_watches_its_orders_trades_and_balance(spot: Spot, aio: asyncio.Runner) -> None:
    """On ETHUSDT: the generator's orders rest on BTCUSDT, in the way of a taker."""
    maker, taker = spot.trader(), spot.trader()

    async def watch() -> dict[str, Any]:
        mine = _pro(spot, maker.spot_key)
        seen: dict[str, Any] = {}
        try:
            await mine.load_markets()
            orders = asyncio.ensure_future(mine.watch_orders("ETH/USDT"))
            trades = asyncio.ensure_future(mine.watch_my_trades("ETH/USDT"))
            balances: list[dict[str, Any]] = []

            async def watch_balance() -> None:
                while True:
                    balance = await mine.watch_balance()
                    balances.append({c: dict(balance[c]) for c in ("ETH", "USDT") if c in balance})

            watching = asyncio.ensure_future(watch_balance())
            await asyncio.sleep(1)  # subscribed (userDataStream.subscribe.signature)
            ask = await asyncio.to_thread(
                maker.create_order, "ETH/USDT", "limit", "sell", 0.3, 2010.0
            )
            seen["ask"] = ask
            seen["new"] = dict((await asyncio.wait_for(orders, 10))[-1])  # ccxt updates it in place
            # each watch returns the next update: the next one is watched before it comes
            partial = asyncio.ensure_future(mine.watch_orders("ETH/USDT"))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(taker.create_order, "ETH/USDT", "limit", "buy", 0.1, 2010.0)
            seen["trade"] = (await asyncio.wait_for(trades, 10))[-1]
            seen["partial"] = dict((await asyncio.wait_for(partial, 10))[-1])
            deadline = time.monotonic() + 10  # the hold's update came first
            while not balances or balances[-1].get("ETH", {}).get("used") != 0.2:
                assert time.monotonic() < deadline, balances
                await asyncio.sleep(0.05)
            seen["balance"] = balances[-1]
            canceled = asyncio.ensure_future(mine.watch_orders("ETH/USDT"))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(maker.cancel_order, ask["id"], "ETH/USDT")
            seen["canceled"] = dict((await asyncio.wait_for(canceled, 10))[-1])
            watching.cancel()
        finally:
            await mine.close()
        return seen

    seen = aio.run(watch())
    new, partial, canceled = seen["new"], seen["partial"], seen["canceled"]
    assert (new["id"], new["status"], new["side"], new["price"]) == (
        seen["ask"]["id"], "open", "sell", 2010.0,
    )  # fmt: skip
    assert (new["amount"], new["filled"]) == (0.3, 0.0)
    assert (partial["id"], partial["filled"], partial["remaining"]) == (new["id"], 0.1, 0.2)
    assert (canceled["id"], canceled["status"]) == (new["id"], "canceled")
    trade = seen["trade"]
    assert (trade["order"], trade["side"], trade["takerOrMaker"]) == (new["id"], "sell", "maker")
    assert (trade["price"], trade["amount"]) == (2010.0, 0.1)
    assert trade["fee"]["currency"] == "USDT"
    # 0.1 ETH sold at 2010 less the maker's 10 bps, 0.2 ETH still held by the ask
    assert seen["balance"]["ETH"] | {"total": None} == {"free": 99.7, "used": 0.2, "total": None}
    assert seen["balance"]["USDT"]["free"] == 1_000_200.799
