"""Stop orders, GTD expiry and cancel-all over real HTTP (issue #14): the API in a
subprocess on real Redis and PostgreSQL, a matching worker and a batcher stepped in-process,
so that each test decides when orders are matched, when the worker's clock moves and when
the database gets it all. Each test ends with the database caught up and `spot audit`
clean: money conserved, every lock explained by an open order or a waiting stop.

The API server lives for the module; each test flushes Redis, truncates the tables and
lists the symbols again. BTC-USD has a band of ±10% around 50_000, ETH-USD none.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from batcher.batcher import Batcher
from schema import keys
from schema.symbols import SymbolSpec
from spot.audit import audit, caught_up, render
from store import db
from store.database import Database, open_database
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, until_listed, user_token
from workers.worker import Worker

SHARDS = 10
TABLES = (
    "orders", "trades", "balances", "ledger", "consumer_offsets", "symbols", "symbol_progress"
)  # fmt: skip
BTC = SymbolSpec(symbol="BTC-USD", base="BTC", quote="USD", band_bps=1000, reference_price=50_000)
ETH = SymbolSpec(symbol="ETH-USD", base="ETH", quote="USD")
HOUR_MS = 3_600_000

_users = itertools.count(1)


class Clock:
    """The worker's clock, moved by the test (GTD expiry follows it, nothing else does)."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(scope="module")
def migrated(database_url: str, aio: asyncio.Runner) -> str:
    aio.run(asyncio.to_thread(db.upgrade, database_url))
    return database_url


@pytest.fixture(scope="module")
def api(
    redis_url: str, migrated: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_api(
        tmp_path_factory.mktemp("api"), redis_url=redis_url, database_url=migrated,
        shards=str(SHARDS),
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_api(server)


@dataclass
class Exchange:
    api: Server
    redis: Redis
    pool: Database
    worker: Worker
    batcher: Batcher
    clock: Clock

    def user(self, **amounts: int) -> tuple[str, str]:
        user = f"stopper{next(_users)}"
        for asset, amount in amounts.items():
            transfer = {"user_id": user, "asset": asset, "amount": amount}
            assert self.api.request("POST", "/v1/admin/deposits", transfer, token=admin())[0] == 200
        return user, user_token(user)

    def place(self, token: str, side: str, quantity: int, **order: Any) -> int:
        body = {"symbol": "BTC-USD", "side": side, "quantity": quantity, **order}
        status, reply = self.api.request("POST", "/v1/orders", body, token=token)
        assert status == 202, reply
        return int(reply["order_id"])

    def refused(self, token: str, side: str, quantity: int, **order: Any) -> dict[str, Any]:
        body = {"symbol": "BTC-USD", "side": side, "quantity": quantity, **order}
        status, reply = self.api.request("POST", "/v1/orders", body, token=token)
        assert status == 422, reply
        return dict(reply)

    def order(self, token: str, order_id: int) -> dict[str, Any]:
        status, view = self.api.request("GET", f"/v1/orders/{order_id}", token=token)
        assert status == 200, view
        return dict(view)

    def status(self, token: str, order_id: int) -> tuple[str, str | None]:
        view = self.order(token, order_id)
        return view["status"], view.get("reason")

    def balances(self, token: str) -> dict[str, tuple[int, int]]:
        _, reply = self.api.request("GET", "/v1/balances", token=token)
        return {b["asset"]: (b["available"], b["locked"]) for b in reply["balances"]}

    async def match(self) -> None:
        """The worker applies everything queued, the EXPIREs its clock sends included."""
        while await self.worker.step() or await self.worker.step():
            pass

    async def caught_up_and_audited(self) -> None:
        """The batcher writes everything; then the audit must find nothing wrong."""
        for _ in range(100):
            behind = await caught_up(self.redis, self.pool, SHARDS)
            if not behind:
                break
            await self.batcher.step()
        assert not behind, behind
        found = await audit(self.redis, self.pool)
        assert not any(found.values()), render(found, [])

    async def row(self, order_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT status, reason, type, price, stop_price, expire_at_ms, triggered, filled,"
            " remaining FROM orders WHERE order_id = $1",
            order_id,
        )
        assert row is not None, order_id
        return dict(row)

    async def wait_for_reference(self, price: int) -> None:
        """Until the API's market cache has the last trade price (it refreshes every 0.2 s
        from what the worker publishes)."""
        while await self.redis.get(keys.last_price("BTC-USD")) != str(price).encode():
            await self.worker.step(block_ms=20)  # publishes depth and last price when idle
        await asyncio.sleep(0.5)


@pytest.fixture
def exchange(api: Server, redis: Redis, migrated: str, aio: asyncio.Runner) -> Iterator[Exchange]:
    async def setup() -> Exchange:
        pool = await open_database(migrated, min_size=1, max_size=2)
        await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
        shards = {await list_symbol(redis, spec, SHARDS) for spec in (BTC, ETH)}
        clock = Clock()
        worker = Worker(redis, sorted(shards), batch=100, clock_ms=clock)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        batcher = Batcher(redis, pool, list(range(SHARDS)), batch=500, interval_s=0.01)
        await batcher.start()
        return Exchange(api, redis, pool, worker, batcher, clock)

    ex = aio.run(setup())
    until_listed(api, {BTC.symbol, ETH.symbol})
    yield ex
    aio.run(ex.pool.close())


# -- a stop: waits, triggers, fills -------------------------------------------------------


async def test_a_stop_waits_untriggered_until_a_trade_reaches_it_then_fills(
    exchange: Exchange,
) -> None:
    ex = exchange
    _, maker = ex.user(BTC=100)
    _, stopper = ex.user(USD=10_000_000)
    _, taker = ex.user(USD=10_000_000)
    ex.place(maker, "SELL", 1, price=50_100)
    ask = ex.place(maker, "SELL", 5, price=50_200)
    stop = ex.place(stopper, "BUY", 5, type="STOP_LIMIT", stop_price=50_100, price=50_300)
    await ex.match()

    view = ex.order(stopper, stop)
    assert (view["status"], view["stop_price"], view["triggered"]) == ("UNTRIGGERED", 50_100, False)
    assert ex.balances(stopper)["USD"] == (10_000_000 - 5 * 50_300, 5 * 50_300)  # held as placed
    _, book = ex.api.request("GET", "/v1/book/BTC-USD")
    assert book["bids"] == []  # a waiting stop is not in the book, nor in its depth

    ex.place(taker, "BUY", 1, price=50_100)  # prints 50_100: the stop fires
    await ex.match()

    view = ex.order(stopper, stop)
    assert (view["status"], view["triggered"], view["filled"], view["average_price"]) == (
        "FILLED", True, 5, 50_200
    )  # fmt: skip
    # It paid the ask's price, not its limit: the improvement went back with the rest.
    assert ex.balances(stopper) == {"USD": (10_000_000 - 5 * 50_200, 0), "BTC": (5, 0)}
    assert ex.status(maker, ask) == ("FILLED", None)
    await ex.caught_up_and_audited()
    row = await ex.row(stop)
    assert (row["status"], row["type"], row["stop_price"], row["triggered"]) == (
        "FILLED", "STOP_LIMIT", 50_100, True
    )  # fmt: skip


async def test_a_cascade_one_stop_s_trades_trigger_the_next(exchange: Exchange) -> None:
    ex = exchange
    _, maker = ex.user(BTC=100)
    _, buyer = ex.user(USD=10_000_000)
    _, first = ex.user(BTC=100)
    _, second = ex.user(BTC=100)
    bids = [ex.place(buyer, "BUY", 3, price=p) for p in (49_900, 49_800, 49_700)]
    # A sell stop at 49_900 sells 5 at market, into 49_800's bid; that sets off the second,
    # at 49_800, which sells into 49_700's.
    one = ex.place(first, "SELL", 5, type="STOP_MARKET", stop_price=49_900)
    two = ex.place(second, "SELL", 3, type="STOP_LIMIT", stop_price=49_800, price=49_700)
    await ex.match()
    assert ex.status(first, one)[0] == ex.status(second, two)[0] == "UNTRIGGERED"

    ex.place(maker, "SELL", 1, price=49_900)  # one trade at 49_900 starts it all
    await ex.match()

    for token, order_id, filled in ((first, one, 5), (second, two, 3)):
        view = ex.order(token, order_id)
        assert (view["status"], view["filled"], view["triggered"]) == ("FILLED", filled, True)
    assert ex.balances(first) == {"BTC": (95, 0), "USD": (2 * 49_900 + 3 * 49_800, 0)}
    assert ex.balances(second) == {"BTC": (97, 0), "USD": (3 * 49_700, 0)}
    assert [ex.status(buyer, b)[0] for b in bids] == ["FILLED"] * 3
    _, trades = ex.api.request("GET", "/v1/trades/BTC-USD")
    assert [t["price"] for t in trades["trades"]][::-1] == [49_900, 49_900, 49_800, 49_700]
    await ex.caught_up_and_audited()


# -- cancel, replace, would-trigger -------------------------------------------------------


async def test_a_canceled_stop_gives_back_its_whole_hold(exchange: Exchange) -> None:
    ex = exchange
    _, token = ex.user(USD=10_000_000, BTC=10)
    limit = ex.place(token, "BUY", 4, type="STOP_LIMIT", stop_price=51_000, price=51_500)
    market = ex.place(token, "BUY", 4, type="STOP_MARKET", stop_price=51_000)  # at 55_000
    sell = ex.place(token, "SELL", 3, type="STOP_MARKET", stop_price=49_000)
    await ex.match()
    assert ex.balances(token) == {
        "USD": (10_000_000 - 4 * 51_500 - 4 * 55_000, 4 * 51_500 + 4 * 55_000),
        "BTC": (7, 3),
    }
    await ex.caught_up_and_audited()  # the database's locks are the waiting stops' too

    for order_id in (limit, market, sell):
        assert ex.api.request("DELETE", f"/v1/orders/{order_id}", token=token)[0] == 202
    await ex.match()

    assert ex.balances(token) == {"USD": (10_000_000, 0), "BTC": (10, 0)}
    for order_id in (limit, market, sell):
        view = ex.order(token, order_id)
        assert (view["status"], view["reason"], view["triggered"]) == ("CANCELED", "USER", False)
    await ex.caught_up_and_audited()
    assert (await ex.row(market))["triggered"] is False


async def test_a_stop_the_last_price_reaches_already_is_refused(exchange: Exchange) -> None:
    ex = exchange
    _, maker = ex.user(BTC=100)
    _, token = ex.user(USD=10_000_000)
    ex.place(maker, "SELL", 1, price=50_500)
    ex.place(token, "BUY", 1, price=50_500)
    # Queued behind the trade, before the API has seen it: the book refuses it.
    late = ex.place(token, "BUY", 2, type="STOP_LIMIT", stop_price=50_400, price=50_600)
    await ex.match()
    assert ex.status(token, late) == ("REJECTED", "STOP_WOULD_TRIGGER")
    assert ex.balances(token)["USD"] == (10_000_000 - 50_500, 0)

    await ex.wait_for_reference(50_500)  # now the API knows the last price: a 422 at once
    reply = ex.refused(token, "BUY", 2, type="STOP_LIMIT", stop_price=50_500, price=50_600)
    assert reply["error"] == "STOP_WOULD_TRIGGER"
    reply = ex.refused(token, "SELL", 2, type="STOP_MARKET", stop_price=50_600)
    assert reply["error"] == "STOP_WOULD_TRIGGER"
    ex.place(token, "BUY", 2, type="STOP_LIMIT", stop_price=50_510, price=50_600)  # beyond it
    await ex.match()
    await ex.caught_up_and_audited()


async def test_a_waiting_stop_cannot_be_replaced_a_triggered_one_can(exchange: Exchange) -> None:
    ex = exchange
    _, maker = ex.user(BTC=100)
    _, token = ex.user(USD=10_000_000)
    stop = ex.place(token, "BUY", 3, type="STOP_LIMIT", stop_price=50_100, price=50_150)
    await ex.match()
    status, reply = ex.api.request("PATCH", f"/v1/orders/{stop}", {"price": 50_160}, token=token)
    assert (status, reply["error"]) == (422, "STOP_NOT_REPLACEABLE")

    ex.place(maker, "SELL", 1, price=50_100)
    ex.place(token, "BUY", 1, price=50_100)  # triggers it; nothing left to buy: it rests
    await ex.match()
    assert (ex.order(token, stop)["status"], ex.order(token, stop)["triggered"]) == ("OPEN", True)
    status, _ = ex.api.request("PATCH", f"/v1/orders/{stop}", {"price": 50_120}, token=token)
    assert status == 202
    await ex.match()
    assert ex.order(token, stop)["price"] == 50_120
    assert ex.balances(token)["USD"] == (10_000_000 - 50_100 - 3 * 50_120, 3 * 50_120)
    await ex.caught_up_and_audited()


# -- GTD ------------------------------------------------------------------------------------


async def test_gtd_orders_and_stops_expire_by_the_workers_clock(exchange: Exchange) -> None:
    ex = exchange
    _, token = ex.user(USD=10_000_000, BTC=10)
    at = ex.clock.now_ms + HOUR_MS
    order = ex.place(token, "BUY", 2, price=49_000, time_in_force="GTD", expire_at_ms=at)
    stop = ex.place(token, "SELL", 3, type="STOP_LIMIT", stop_price=49_500, price=49_400,
                    time_in_force="GTD", expire_at_ms=at + 1)  # fmt: skip
    keeps = ex.place(token, "BUY", 1, price=48_000)
    await ex.match()
    assert ex.order(token, order)["expire_at_ms"] == at
    assert ex.balances(token) == {"USD": (10_000_000 - 98_000 - 48_000, 146_000), "BTC": (7, 3)}
    await ex.caught_up_and_audited()
    assert (await ex.row(stop))["expire_at_ms"] == at + 1

    ex.clock.now_ms = at  # the order's time has come, not the stop's
    await ex.match()
    assert ex.status(token, order) == ("CANCELED", "EXPIRED")
    assert ex.status(token, stop) == ("UNTRIGGERED", None)
    ex.clock.now_ms = at + 1
    await ex.match()
    assert ex.status(token, stop) == ("CANCELED", "EXPIRED")
    assert ex.status(token, keeps) == ("OPEN", None)
    assert ex.balances(token) == {"USD": (10_000_000 - 48_000, 48_000), "BTC": (10, 0)}
    await ex.caught_up_and_audited()
    assert (await ex.row(order))["reason"] == "EXPIRED"


# -- cancel-all -----------------------------------------------------------------------------


async def test_delete_orders_cancels_every_open_order_and_waiting_stop(exchange: Exchange) -> None:
    ex = exchange
    _, token = ex.user(USD=10_000_000, BTC=10, ETH=10)
    _, other = ex.user(USD=10_000_000)
    mine = [
        ex.place(token, "BUY", 2, price=49_000),
        ex.place(token, "SELL", 2, price=51_000),
        ex.place(token, "BUY", 2, type="STOP_MARKET", stop_price=50_500),
    ]
    eth = ex.place(token, "SELL", 2, price=3_000, symbol="ETH-USD")
    theirs = ex.place(other, "BUY", 2, price=49_000)
    await ex.match()

    status, reply = ex.api.request("DELETE", "/v1/orders?symbol=BTC-USD", token=token)
    assert (status, reply) == (202, {"status": "CANCEL_ALL_REQUESTED", "symbols": ["BTC-USD"]})
    await ex.match()
    assert [ex.status(token, o) for o in mine] == [("CANCELED", "USER")] * 3
    assert ex.status(token, eth) == ("OPEN", None)
    assert ex.status(other, theirs) == ("OPEN", None)  # another user's are not touched

    status, reply = ex.api.request("DELETE", "/v1/orders", token=token)
    assert (status, reply["symbols"]) == (202, ["BTC-USD", "ETH-USD"])
    await ex.match()
    assert ex.status(token, eth) == ("CANCELED", "USER")
    assert ex.balances(token) == {"USD": (10_000_000, 0), "BTC": (10, 0), "ETH": (10, 0)}
    await ex.caught_up_and_audited()


def test_delete_orders_needs_a_token_and_a_listed_symbol(api: Server) -> None:
    assert api.request("DELETE", "/v1/orders")[0] == 401
    status, reply = api.request("DELETE", "/v1/orders?symbol=NOPE", token=user_token("x"))
    assert (status, reply["error"]) == (422, "UNKNOWN_SYMBOL")
