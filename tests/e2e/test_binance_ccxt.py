"""The real `ccxt.binance` class (ccxt 4.5.90, the dev extra), configured as issue #15 says,
trading on a running Spot: the API, a matching worker process and the batcher process, on
real Redis and PostgreSQL. Nothing between ccxt and the server but HTTP.

Each test makes its own users (deposits through the admin API, keys through /v1/api-keys)
and cancels what it leaves resting, so the tests share the book without leaning on it.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import ccxt
import pytest
from redis.asyncio import Redis

from api.binance.signing import sign
from api.candles import bucket_start
from schema.symbols import SymbolSpec
from store import db
from store.symbols import list_asset, list_symbol
from tests.integration.http import ROOT, SECRET, Server, admin, start_api, stop_api, user_token

SHARDS = 2
TABLES = (
    "orders", "trades", "balances", "ledger", "consumer_offsets", "symbols", "symbol_progress",
    "candles",
)  # fmt: skip
DECIMALS = {"BTC": 5, "USDT": 7, "ETH": 4}
# 0.0001 BTC steps from 0.0002, prices in cents of USDT within 10% of the last trade
BTC = SymbolSpec(
    symbol="BTCUSDT", base="BTC", quote="USDT", tick=1, lot=10, min_qty=20,
    max_qty=10**9, band_bps=1000, reference_price=3_000_000,
)  # fmt: skip
# with fees: a maker pays 10 bps of what it receives, a taker 20
ETH = SymbolSpec(
    symbol="ETHUSDT", base="ETH", quote="USDT", tick=100, lot=1, min_qty=1,
    max_qty=10**9, band_bps=1000, reference_price=2_000_000, maker_fee_bps=10,
    taker_fee_bps=20,
)  # fmt: skip
FUNDS = {"BTC": 10 * 10**5, "USDT": 1_000_000 * 10**7, "ETH": 100 * 10**4}  # 10 BTC, ...
WAIT_S = 15.0  # for the batcher's rows, the depth cache

# Issue #15's configuration, word for word but the address.
OPTIONS = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
    "createOrder": {"quoteOrderQty": False},
    "fetchOpenOrders": {"warnWithoutSymbol": False},
}

_users = itertools.count(1)
T = TypeVar("T")


@dataclass
class Spot:
    api: Server
    processes: list[subprocess.Popen[bytes]]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}/api/v3"

    def key(self, user: str, permissions: list[str]) -> dict[str, Any]:
        body = {"permissions": permissions}
        status, created = self.api.request("POST", "/v1/api-keys", body, token=user_token(user))
        assert status == 201, created
        return dict(created)

    def trader(self, *, trade: bool = True, funds: dict[str, int] | None = None) -> Any:
        """A new funded user's ccxt.binance, its markets loaded; `.key` is its API key."""
        user = f"ccxt{next(_users)}"
        for asset, amount in (FUNDS if funds is None else funds).items():
            transfer = {"user_id": user, "asset": asset, "amount": amount}
            status, reply = self.api.request("POST", "/v1/admin/deposits", transfer, token=admin())
            assert status == 200, reply
        key = self.key(user, ["read", "trade"] if trade else ["read"])
        exchange = self.exchange(key["api_key"], key["secret"])
        exchange.load_markets()
        exchange.spot_user, exchange.spot_key = user, key
        return exchange

    def exchange(self, api_key: str, secret: str, **options: Any) -> Any:
        return ccxt.binance(
            {
                "apiKey": api_key,
                "secret": secret,
                "urls": {"api": {"public": self.base, "private": self.base}},
                "options": OPTIONS | options,
            }
        )

    def raw(
        self, method: str, path: str, *, query: str = "", body: str = "", key: str | None = None
    ) -> tuple[int, Any]:
        """One request as sent, byte for byte, for what ccxt would never send."""
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=10)
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if key is not None:
                headers["X-MBX-APIKEY"] = key
            target = f"/api/v3{path}" + (f"?{query}" if query else "")
            conn.request(method, target, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


def _env(redis_url: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    return env | {
        "SPOT_REDIS_URL": redis_url,
        "SPOT_DATABASE_URL": database_url,
        "SPOT_SHARDS": str(SHARDS),
        "SPOT_JWT_SECRET": SECRET,
    }


async def _prepare(redis_url: str, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        for asset, decimals in DECIMALS.items():
            assert await list_asset(redis, asset, decimals) == decimals
        for spec in (BTC, ETH):
            await list_symbol(redis, spec, SHARDS)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def spot(
    redis_url: str, database_url: str, aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spot]:
    aio.run(asyncio.to_thread(db.upgrade, database_url))
    aio.run(_prepare(redis_url, database_url))
    folder: Path = tmp_path_factory.mktemp("binance")
    env = _env(redis_url, database_url)
    processes = []
    for name in ("worker", "batcher"):
        with (folder / f"{name}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "spot.cli", name],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    # Binance-like limits per user (ccxt throttles itself well below them), none per address
    api = start_api(
        folder, redis_url=redis_url, database_url=database_url, shards=str(SHARDS),
        rate_limit_user="100",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while len(api.request("GET", "/v1/symbols")[1]["symbols"]) < 2:
            assert time.monotonic() < deadline, "the API never listed the symbols"
            time.sleep(0.05)
        yield Spot(api, processes)
    finally:
        stop_api(api)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def eventually(look: Callable[[], T], timeout: float = WAIT_S) -> T:
    """`look()` once it is truthy: the batcher writes every 100 ms, depth every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        found = look()
        if found or time.monotonic() > deadline:
            assert found, "never came"
            return found
        time.sleep(0.1)


# -- markets --------------------------------------------------------------------------------


def test_load_markets_reads_each_symbols_decimals_and_rules(spot: Spot) -> None:
    exchange = spot.trader()
    market = exchange.market("BTC/USDT")
    assert (market["id"], market["base"], market["quote"]) == ("BTCUSDT", "BTC", "USDT")
    assert market["spot"] and market["active"] and not market["margin"]
    assert market["precision"]["amount"] == 0.0001 and market["precision"]["price"] == 0.01
    assert market["limits"]["amount"]["min"] == 0.0002
    assert exchange.market("ETH/USDT")["precision"]["price"] == 0.1
    assert abs(exchange.fetch_time() - time.time() * 1000) < 5_000


# -- trading --------------------------------------------------------------------------------


def test_a_post_only_maker_and_a_market_taker_trade_and_it_shows_everywhere(spot: Spot) -> None:
    maker, taker = spot.trader(), spot.trader()
    ask = maker.create_order("BTC/USDT", "limit", "sell", 0.5, 30000.5, {"postOnly": True})
    assert (ask["status"], ask["postOnly"], ask["type"]) == ("open", True, "limit")
    try:
        bought = taker.create_order("BTC/USDT", "market", "buy", 0.2)
        assert (bought["status"], bought["filled"], bought["average"]) == ("closed", 0.2, 30000.5)
        [fill] = bought["trades"]
        assert (fill["price"], fill["amount"], fill["fee"]["currency"]) == (30000.5, 0.2, "BTC")

        resting = maker.fetch_order(ask["id"], "BTC/USDT")
        assert (resting["status"], resting["filled"], resting["remaining"]) == ("open", 0.2, 0.3)
        assert [o["id"] for o in maker.fetch_open_orders()] == [ask["id"]]
        assert [o["id"] for o in maker.fetch_open_orders("BTC/USDT")] == [ask["id"]]

        book = eventually(lambda: _at_best_ask(spot, maker, 30000.5))
        assert book["asks"][0] == [30000.5, 0.3] and book["nonce"] > 0

        btc, usdt = maker.fetch_balance()["BTC"], maker.fetch_balance()["USDT"]
        assert (btc["free"], btc["used"], btc["total"]) == (9.5, 0.3, 9.8)
        assert usdt["free"] == 1_006_000.1
        bought_balance = taker.fetch_balance()
        assert bought_balance["BTC"]["free"] == 10.2
        assert bought_balance["USDT"]["free"] == 993_999.9  # the market buy's hold released

        [mine] = eventually(lambda: taker.fetch_my_trades("BTC/USDT"))
        assert (mine["id"], mine["order"], mine["side"]) == (fill["id"], bought["id"], "buy")
        assert (mine["takerOrMaker"], mine["price"], mine["amount"]) == ("taker", 30000.5, 0.2)
        assert mine["fee"] == {"currency": "BTC", "cost": 0.0}
        [theirs] = maker.fetch_my_trades("BTC/USDT")
        assert (theirs["side"], theirs["takerOrMaker"], theirs["order"]) == (
            "sell",
            "maker",
            ask["id"],
        )
        assert theirs["fee"]["currency"] == "USDT"

        public = eventually(
            lambda: [t for t in taker.fetch_trades("BTC/USDT") if t["id"] == fill["id"]]
        )
        assert (public[0]["side"], public[0]["price"], public[0]["amount"]) == ("buy", 30000.5, 0.2)
        since = eventually(lambda: taker.fetch_trades("BTC/USDT", since=mine["timestamp"] - 1))
        assert fill["id"] in [t["id"] for t in since]

        for timeframe in ("1m", "5m", "1h", "1d", "1w", "1M"):
            # the trade's interval (the newest may be a later one, quiet, at the same close)
            start = bucket_start(mine["timestamp"], timeframe)
            candle = eventually(
                lambda tf=timeframe, at=start: [
                    c for c in taker.fetch_ohlcv("BTC/USDT", tf, since=at) if c[5] >= 0.2
                ]
            )[0]
            assert (candle[0], candle[4]) == (start, 30000.5), timeframe
        assert taker.fetch_ohlcv("BTC/USDT", "1m", since=mine["timestamp"] + 120_000) == []

        ticker = taker.fetch_ticker("BTC/USDT")
        assert (ticker["last"], ticker["ask"], ticker["askVolume"]) == (30000.5, 30000.5, 0.3)
        assert ticker["baseVolume"] >= 0.2 and ticker["high"] >= 30000.5
        assert set(taker.fetch_tickers(["BTC/USDT", "ETH/USDT"])) == {"BTC/USDT", "ETH/USDT"}
        assert "BTC/USDT" in taker.fetch_tickers()
    finally:
        canceled = maker.cancel_order(ask["id"], "BTC/USDT")
    assert (canceled["status"], canceled["filled"]) == ("canceled", 0.2)
    assert maker.fetch_order(ask["id"], "BTC/USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        maker.cancel_order(ask["id"], "BTC/USDT")
    assert maker.fetch_balance()["BTC"]["used"] == 0


def _at_best_ask(spot: Spot, exchange: Any, price: float) -> Any:
    book = exchange.fetch_order_book("BTC/USDT")
    return book if book["asks"] and book["asks"][0][0] == price else None


def test_fees_are_the_commission_of_fills_and_trades_and_the_balances_are_net_of_them(
    spot: Spot,
) -> None:
    maker, taker = spot.trader(), spot.trader()
    ask = maker.create_order("ETH/USDT", "limit", "sell", 10, 2000, {"postOnly": True})
    bought = taker.create_order("ETH/USDT", "market", "buy", 10)
    assert (bought["status"], bought["filled"]) == ("closed", 10)
    # the taker buys: 20 bps of the 10 ETH it receives
    assert bought["fee"] == {"currency": "ETH", "cost": 0.02}
    assert [t["fee"] for t in bought["trades"]] == [{"currency": "ETH", "cost": 0.02}]
    assert taker.fetch_balance()["ETH"]["free"] == 109.98
    # the maker sells: 10 bps of the 20,000 USDT it receives
    assert maker.fetch_balance()["USDT"]["free"] == 1_019_980
    [taken] = eventually(lambda: taker.fetch_my_trades("ETH/USDT"))
    assert (taken["takerOrMaker"], taken["fee"]) == ("taker", {"currency": "ETH", "cost": 0.02})
    [made] = maker.fetch_my_trades("ETH/USDT")
    assert (made["takerOrMaker"], made["fee"]) == ("maker", {"currency": "USDT", "cost": 20.0})
    assert made["order"] == ask["id"]

    # A fee tier is the user's rates on every symbol, in the account's commission too.
    tier = {"maker_fee_bps": -1, "taker_fee_bps": 5}
    path = f"/v1/admin/fee-tiers/{taker.spot_user}"
    assert spot.api.request("PUT", path, tier, token=admin())[0] == 200
    rates = taker.private_get_account_commission({"symbol": "ETHUSDT"})["standardCommission"]
    assert (rates["maker"], rates["taker"]) == ("-0.00010000", "0.00050000")
    account = taker.private_get_account()
    assert (account["makerCommission"], account["takerCommission"]) == (-1, 5)
    theirs = maker.private_get_account_commission({"symbol": "ETHUSDT"})["standardCommission"]
    assert (theirs["maker"], theirs["taker"]) == ("0.00100000", "0.00200000")


def test_ioc_and_fok_that_find_nothing_expire(spot: Spot) -> None:
    trader = spot.trader()
    for tif in ("IOC", "FOK"):
        order = trader.create_order("BTC/USDT", "limit", "buy", 0.001, 28000, {"timeInForce": tif})
        assert (order["status"], order["filled"], order["timeInForce"]) == ("expired", 0, tif)
    assert trader.fetch_open_orders("BTC/USDT") == []


def test_client_order_ids_and_cancel_all_orders(spot: Spot) -> None:
    trader = spot.trader()
    first = trader.create_order("ETH/USDT", "limit", "buy", 1, 1900, {"clientOrderId": "mine-1"})
    second = trader.create_order("ETH/USDT", "limit", "buy", 2, 1899.5)
    assert first["clientOrderId"] == "mine-1"
    found = trader.fetch_order(None, "ETH/USDT", {"clientOrderId": "mine-1"})
    assert (found["id"], found["amount"], found["price"]) == (first["id"], 1, 1900)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        trader.create_order("ETH/USDT", "limit", "buy", 1, 1900, {"clientOrderId": "mine-1"})

    canceled = trader.cancel_all_orders("ETH/USDT")
    assert sorted(o["id"] for o in canceled) == sorted([first["id"], second["id"]])
    assert {o["status"] for o in canceled} == {"canceled"}
    assert trader.fetch_open_orders() == []
    assert trader.cancel_all_orders("ETH/USDT") == []
    orders = eventually(lambda: trader.fetch_orders("ETH/USDT"))
    assert [(o["id"], o["status"]) for o in orders] == [
        (first["id"], "canceled"),
        (second["id"], "canceled"),
    ]
    assert trader.fetch_closed_orders("ETH/USDT") == []  # ccxt keeps FILLED only


def test_edit_order_cancels_the_order_and_places_another(spot: Spot) -> None:
    trader = spot.trader()
    first = trader.create_order("ETH/USDT", "limit", "buy", 1, 1900)
    edited = trader.edit_order(first["id"], "ETH/USDT", "limit", "buy", 2, 1901.5)
    assert edited["id"] != first["id"]  # Binance's cancelReplace: a new order, a new id
    assert (edited["status"], edited["amount"], edited["price"]) == ("open", 2, 1901.5)
    assert trader.fetch_order(first["id"], "ETH/USDT")["status"] == "canceled"
    assert [o["id"] for o in trader.fetch_open_orders("ETH/USDT")] == [edited["id"]]
    # Its order gone, nothing is placed (STOP_ON_FAILURE): Binance's -2022, which ccxt
    # raises as ExchangeError for a server that is not api.binance.com.
    with pytest.raises(ccxt.ExchangeError, match="-2022"):
        trader.edit_order(first["id"], "ETH/USDT", "limit", "buy", 3, 1902)
    # Parameters are read before anything is canceled...
    with pytest.raises(ccxt.BadRequest, match="-1115"):
        trader.edit_order(edited["id"], "ETH/USDT", "limit", "buy", 3, 1902, {"timeInForce": "X"})
    assert [o["id"] for o in trader.fetch_open_orders("ETH/USDT")] == [edited["id"]]
    # ...the funds when the new order is queued, after the cancel (as on Binance): -2021.
    with pytest.raises(ccxt.ExchangeError, match="-2021.*insufficient balance"):
        trader.edit_order(edited["id"], "ETH/USDT", "limit", "buy", 5000, 2000)
    assert trader.fetch_open_orders("ETH/USDT") == []


def test_a_stop_limit_order_waits_then_fires(spot: Spot) -> None:
    seller, buyer, bidder, stopper = (spot.trader() for _ in range(4))
    bid = bidder.create_order("BTC/USDT", "limit", "buy", 0.01, 29000)
    # a SELL stop: it fires on a trade at or below 29,500, then sells at 29,000 or better
    stop = stopper.create_order("BTC/USDT", "limit", "sell", 0.01, 29000, {"triggerPrice": 29500})
    assert (stop["type"], stop["triggerPrice"], stop["status"]) == ("limit", 29500, "open")
    assert stopper.fetch_order(stop["id"], "BTC/USDT")["filled"] == 0
    seller.create_order("BTC/USDT", "limit", "sell", 0.01, 29400)
    bought = buyer.create_order("BTC/USDT", "market", "buy", 0.01)
    assert bought["average"] == 29400  # the trade that reaches the stop
    fired = eventually(lambda: stopper.fetch_order(stop["id"], "BTC/USDT")["status"] == "closed")
    assert fired
    assert bidder.fetch_order(bid["id"], "BTC/USDT")["filled"] == 0.01
    for exchange in (seller, bidder, stopper):
        exchange.cancel_all_orders("BTC/USDT")


# -- errors ---------------------------------------------------------------------------------


def test_refused_orders_raise_the_exceptions_ccxt_raises_for_binance(spot: Spot) -> None:
    trader = spot.trader()
    with pytest.raises(ccxt.InsufficientFunds):
        trader.create_order("BTC/USDT", "limit", "buy", 5000, 30000)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        trader.create_order("BTC/USDT", "limit", "buy", 0.0001, 30000)  # below the minimum
    with pytest.raises(ccxt.InvalidOrder, match="PERCENT_PRICE_BY_SIDE"):
        trader.create_order("BTC/USDT", "limit", "buy", 0.001, 10000)  # outside the band
    bidder = spot.trader()
    bid = bidder.create_order("ETH/USDT", "limit", "buy", 1, 2000)
    try:
        with pytest.raises(ccxt.OrderImmediatelyFillable):  # an InvalidOrder
            trader.create_order("ETH/USDT", "limit", "sell", 1, 1999, {"postOnly": True})
        with pytest.raises(ccxt.OrderNotFound):  # someone else's is nobody's
            trader.fetch_order(bid["id"], "ETH/USDT")
    finally:
        bidder.cancel_order(bid["id"], "ETH/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        trader.fetch_order("999999999", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        trader.cancel_order("999999999", "BTC/USDT")
    with pytest.raises(ccxt.BadRequest):
        trader.fetch_ohlcv("BTC/USDT", "7m")  # not an interval
    with pytest.raises(ccxt.BadRequest):
        trader.private_get_order({"symbol": "BTCUSDT", "orderId": "twelve"})
    with pytest.raises(ccxt.BadSymbol):
        trader.public_get_depth({"symbol": "DOGEUSDT"})
    assert trader.fetch_open_orders() == []


def test_keys_secrets_and_clocks_raise_authentication_errors_and_invalid_nonce(
    spot: Spot,
) -> None:
    trader = spot.trader()
    key = trader.spot_key
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        spot.exchange(key["api_key"], "0" * 64).fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        spot.exchange("A" * 64, key["secret"]).fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2014"):
        spot.exchange("not-a-key", key["secret"]).fetch_balance()
    reader = spot.trader(trade=False)
    assert reader.fetch_balance()["BTC"]["free"] == 10
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        spot.exchange(reader.spot_key["api_key"], reader.spot_key["secret"]).create_order(
            "BTC/USDT", "limit", "buy", 0.001, 30000
        )  # a fresh instance: ccxt takes -2015 after a success for a ban (DDoSProtection)
    late = spot.exchange(key["api_key"], key["secret"], timeDifference=120_000)
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        late.fetch_balance()
    ahead = spot.exchange(key["api_key"], key["secret"], timeDifference=-5_000)
    with pytest.raises(ccxt.InvalidNonce):
        ahead.fetch_balance()
    patient = spot.exchange(key["api_key"], key["secret"], timeDifference=20_000, recvWindow=30_000)
    assert patient.fetch_balance()["BTC"]["free"] == 10


def test_a_rate_limited_client_gets_binances_1003(spot: Spot) -> None:
    trader = spot.trader()
    trader.enableRateLimit = False
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):  # any 429, as against Binance
        for _ in range(20_000):
            trader.fetch_open_orders("BTC/USDT")


# -- keys and signatures, by hand ------------------------------------------------------------


def test_api_keys_are_listed_without_secrets_revoked_and_stored_nowhere(
    spot: Spot, redis_url: str, aio: asyncio.Runner
) -> None:
    trader = spot.trader()
    user, key = trader.spot_user, trader.spot_key
    status, listed = spot.api.request("GET", "/v1/api-keys", token=user_token(user))
    assert status == 200
    assert listed == {
        "api_keys": [
            {
                "api_key": key["api_key"],
                "permissions": ["read", "trade"],
                "created_ms": key["created_ms"],
            }
        ]
    }
    assert aio.run(_dump_holds(redis_url, key["secret"])) is False  # a dump leaks no secret
    status, _ = spot.api.request(
        "DELETE", f"/v1/api-keys/{key['api_key']}", token=user_token("someone-else")
    )
    assert status == 404
    assert (
        spot.api.request("DELETE", f"/v1/api-keys/{key['api_key']}", token=user_token(user))[0]
        == 204
    )
    with pytest.raises(ccxt.AuthenticationError):
        spot.exchange(key["api_key"], key["secret"]).fetch_balance()
    assert spot.api.request("GET", "/v1/api-keys", token=user_token(user)) == (
        200,
        {"api_keys": []},
    )
    status, refused = spot.api.request(
        "POST", "/v1/api-keys", {"permissions": ["withdraw"]}, token=user_token(user)
    )
    assert (status, refused["error"]) == (400, "MALFORMED")
    assert spot.api.request("POST", "/v1/api-keys", {"permissions": []})[0] == 401


async def _dump_holds(redis_url: str, secret: str) -> bool:
    redis = Redis.from_url(redis_url)
    try:
        async for name in redis.scan_iter(count=1000):
            kind = (await redis.type(name)).decode()
            if kind == "string":
                values = [await redis.get(name)]
            elif kind == "hash":
                values = list((await redis.hgetall(name)).values())
            elif kind == "set":
                values = list(await redis.smembers(name))
            elif kind == "list":
                values = list(await redis.lrange(name, 0, -1))
            elif kind == "zset":
                values = list(await redis.zrange(name, 0, -1))
            else:  # a stream: commands and events, each entry's field values
                values = [v for _, fields in await redis.xrange(name) for v in fields.values()]
            if any(secret.encode() in (v or b"") for v in values) or secret.encode() in name:
                return True
        return False
    finally:
        await redis.aclose()


def test_signatures_over_the_body_or_query_and_body_as_binance_documents(spot: Spot) -> None:
    trader = spot.trader()
    api_key, secret = trader.spot_key["api_key"], trader.spot_key["secret"]
    now = int(time.time() * 1000)
    query = "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = f"quantity=1&price=1900&recvWindow=5000&timestamp={now}"
    signature = sign(secret, query + body)  # no '&' between them
    status, placed = spot.raw(
        "POST", "/order", query=query, body=f"{body}&signature={signature.upper()}", key=api_key
    )
    assert status == 200, placed
    assert (placed["status"], placed["price"], placed["origQty"]) == ("NEW", "1900.000", "1.0000")
    cancel = f"symbol=ETHUSDT&orderId={placed['orderId']}&timestamp={int(time.time() * 1000)}"
    status, canceled = spot.raw(
        "DELETE", "/order", query=f"{cancel}&signature={sign(secret, cancel)}", key=api_key
    )
    assert (status, canceled["status"]) == (200, "CANCELED")

    def refused(query: str) -> tuple[int, int]:
        signed = f"{query}&signature={sign(secret, query)}"
        status, reply = spot.raw("GET", "/account", query=signed, key=api_key)
        return status, reply["code"]

    stamp = f"timestamp={int(time.time() * 1000)}"
    assert refused(f"{stamp}&recvWindow=60001") == (400, -1131)
    assert refused("recvWindow=5000") == (400, -1102)
    assert refused(f"{stamp}&{stamp}") == (400, -1101)
    assert spot.raw("GET", "/account", query=stamp, key=api_key) == (
        400,
        {
            "code": -1102,
            "msg": "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        },
    )
    status, ok = spot.raw(
        "GET", "/account", query=f"{stamp}&signature={sign(secret, stamp)}", key=api_key
    )
    assert status == 200 and ok["canTrade"] is True
