"""Order history over real HTTP: GET /v1/orders, /v1/orders/{id} and /v1/fills on real
Redis and each database (PostgreSQL, MySQL: `backend_url`), with a matching worker and a
batcher stepped in-process, so each test decides when an order is matched and when the
database gets it (read-your-writes).

The API server lives for the module; each test flushes Redis, truncates the tables, lists
the symbols again and makes its own worker and batcher. Orders go in over HTTP only, so
the API's block of order ids never meets another taker's.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from batcher.batcher import Batcher
from schema import keys
from schema.symbols import SymbolSpec
from schema.tables import metadata
from spot.audit import caught_up
from store import db
from store.database import Database, dialect_of, empty, open_database
from store.symbols import list_symbol
from tests.integration.http import Server, admin, free_port, start_api, stop_api, user_token
from workers.worker import Worker

SHARDS = 10
TABLES = tuple(metadata.tables)
BTC = SymbolSpec(
    symbol="BTC-USD",
    base="BTC",
    quote="USD",
    band_bps=1000,  # 45_000..55_000
    reference_price=50_000,
    maker_fee_bps=-2,  # a rebate
    taker_fee_bps=10,
)
ETH = SymbolSpec(symbol="ETH-USD", base="ETH", quote="USD")

_users = itertools.count(1)


@pytest.fixture(scope="module")
def migrated(backend_url: str, aio: asyncio.Runner) -> str:
    aio.run(asyncio.to_thread(db.upgrade, backend_url))
    return backend_url


@pytest.fixture(scope="module")
def api(
    redis_url: str, migrated: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_api(
        tmp_path_factory.mktemp("api"),
        redis_url=redis_url,
        database_url=migrated,
        shards=str(SHARDS),
    )
    try:
        yield server
    finally:
        stop_api(server)


@dataclass
class Exchange:
    """The API, and the worker and batcher behind it that the test steps by hand."""

    api: Server
    redis: Redis
    database: Database
    worker: Worker
    batcher: Batcher

    def user(self, **amounts: int) -> tuple[str, str]:
        """A new user with these available amounts; (user id, token)."""
        user = f"trader{next(_users)}"
        for asset, amount in amounts.items():
            transfer = {"user_id": user, "asset": asset, "amount": amount}
            status, _ = self.api.request("POST", "/v1/admin/deposits", transfer, token=admin())
            assert status == 200
        return user, user_token(user)

    def place(self, token: str, side: str, price: int, quantity: int, **extra: Any) -> int:
        order = {"symbol": "BTC-USD", "side": side, "price": price, "quantity": quantity}
        status, reply = self.api.request("POST", "/v1/orders", order | extra, token=token)
        assert status == 202, reply
        return int(reply["order_id"])

    def orders(self, token: str, query: str = "") -> list[dict[str, Any]]:
        status, reply = self.api.request("GET", f"/v1/orders{query}", token=token)
        assert status == 200, reply
        return list(reply["orders"])

    def fills(self, token: str, query: str = "") -> list[dict[str, Any]]:
        status, reply = self.api.request("GET", f"/v1/fills{query}", token=token)
        assert status == 200, reply
        return list(reply["fills"])

    async def match(self) -> None:
        """The worker applies everything queued (the batcher does not run)."""
        while await self.worker.step():
            pass

    async def persist(self) -> None:
        """The batcher writes everything the workers have published."""
        for _ in range(100):
            if not await caught_up(self.redis, self.database, SHARDS):
                return
            await self.batcher.step()
        raise AssertionError("the batcher never caught up")

    async def rows(self, table: str) -> int:
        return int(await self.database.fetchval(f"SELECT count(*) FROM {table}"))


@pytest.fixture
def exchange(api: Server, redis: Redis, migrated: str, aio: asyncio.Runner) -> Iterator[Exchange]:
    async def setup() -> Exchange:
        database = await open_database(migrated, min_size=1, max_size=2)
        # The database is shared with other tests: start from empty tables.
        await empty(database, list(TABLES))
        shards = {await list_symbol(redis, spec, SHARDS) for spec in (BTC, ETH)}
        worker = Worker(redis, sorted(shards), batch=100)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        batcher = Batcher(redis, database, list(range(SHARDS)), batch=500, interval_s=0.01)
        await batcher.start()
        return Exchange(api, redis, database, worker, batcher)

    ex = aio.run(setup())
    # The API refreshes its symbols every 0.2 s: after the flush, wait until it lists ours
    # (not merely two: it may still list another test module's).
    deadline = time.monotonic() + 5
    ours = {BTC.symbol, ETH.symbol}
    while not ours <= {s["symbol"] for s in api.request("GET", "/v1/symbols")[1]["symbols"]}:
        assert time.monotonic() < deadline, "the API never saw the symbols"
        time.sleep(0.05)
    yield ex
    aio.run(ex.database.close())


def without_created(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "created_ms"}


# -- read-your-writes -----------------------------------------------------------------------


async def test_an_order_is_listed_at_once_then_from_the_database(exchange: Exchange) -> None:
    ex = exchange
    _, token = ex.user(USD=10_000_000)
    _, other = ex.user(USD=10_000_000)

    order_id = ex.place(token, "BUY", 50_000, 10, client_order_id="mine-1")

    # Queued, not matched, not written: Redis alone knows it.
    assert await ex.rows("orders") == 0
    [view] = ex.orders(token)
    assert without_created(view) == {
        "order_id": order_id,
        "symbol": "BTC-USD",
        "side": "BUY",
        "type": "LIMIT",
        "price": 50_000,
        "quantity": 10,
        "remaining": 10,
        "filled": 0,
        "average_price": None,
        "time_in_force": "GTC",
        "post_only": False,
        "client_order_id": "mine-1",
        "status": "NEW",
    }
    assert abs(view["created_ms"] - time.time() * 1000) < 60_000
    assert ex.api.request("GET", f"/v1/orders/{order_id}", token=token) == (200, view)

    await ex.match()
    assert [o["status"] for o in ex.orders(token)] == ["OPEN"]
    assert await ex.rows("orders") == 0

    await ex.persist()
    assert await ex.rows("orders") == 1
    [persisted] = ex.orders(token)
    assert persisted == view | {"status": "OPEN"}  # once, not once per store

    # The record expires 24 h after the order ends; the database answers from then on.
    await ex.redis.delete(keys.order(order_id))
    [from_db] = ex.orders(token)
    assert without_created(from_db) == without_created(persisted)
    # The database's created_at is when the batcher wrote the row.
    assert 0 <= from_db["created_ms"] - view["created_ms"] < 10_000
    assert ex.api.request("GET", f"/v1/orders/{order_id}", token=token) == (200, from_db)

    # Nobody else sees it, from either store.
    assert ex.orders(other) == []
    status, reply = ex.api.request("GET", f"/v1/orders/{order_id}", token=other)
    assert (status, reply["error"]) == (404, "UNKNOWN_ORDER")
    assert ex.api.request("GET", "/v1/orders/999999999", token=token)[0] == 404


async def test_redis_is_ahead_of_the_database_and_wins(exchange: Exchange) -> None:
    ex = exchange
    seller_id, seller = ex.user(BTC=100)
    _, buyer = ex.user(USD=10_000_000)
    resting = ex.place(seller, "SELL", 50_010, 10)
    sell = ex.place(seller, "SELL", 50_000, 10)
    await ex.match()
    await ex.persist()  # the database has both OPEN
    # As if the seller had placed 200 orders since: off the list of the newest.
    await ex.redis.lrem(keys.user_orders(seller_id), 0, resting)

    ex.place(buyer, "BUY", 50_000, 10)
    await ex.match()  # Redis has `sell` FILLED; the batcher has not written that yet

    assert [o["status"] for o in ex.orders(seller)] == ["FILLED", "OPEN"]
    # The newest OPEN row in the database is no longer OPEN: the next one must fill its place.
    assert [o["order_id"] for o in ex.orders(seller, "?status=OPEN&limit=1")] == [resting]
    [filled] = ex.orders(seller, "?status=FILLED")
    assert (filled["order_id"], filled["filled"], filled["remaining"]) == (sell, 10, 0)
    assert filled["average_price"] == 50_000

    await ex.persist()
    assert ex.orders(seller, "?status=FILLED") == [filled]
    await ex.redis.delete(keys.order(sell))
    assert [o["order_id"] for o in ex.orders(seller, "?status=FILLED")] == [sell]
    assert [o["order_id"] for o in ex.orders(seller, "?status=OPEN")] == [resting]


# -- fills ----------------------------------------------------------------------------------


async def test_fills_show_each_side_with_its_liquidity(exchange: Exchange) -> None:
    ex = exchange
    _, bob = ex.user(BTC=100)
    _, carol = ex.user(BTC=100)
    _, alice = ex.user(USD=10_000_000)
    bob_sell = ex.place(bob, "SELL", 50_000, 10)
    carol_sell = ex.place(carol, "SELL", 50_010, 10)
    await ex.match()
    alice_buy = ex.place(alice, "BUY", 50_100, 15)  # 10 @ 50_000 from bob, 5 @ 50_010 carol's
    await ex.match()

    assert ex.fills(alice) == []  # trades reach /v1/fills through the database
    await ex.persist()

    fills = ex.fills(alice)
    created = fills[0]["created_ms"]
    assert abs(created - time.time() * 1000) < 60_000
    assert [f | {"created_ms": 0} for f in fills] == [
        {
            "order_id": alice_buy,
            "symbol": "BTC-USD",
            "side": "BUY",
            "price": price,
            "quantity": quantity,
            "liquidity": "TAKER",
            "seq": seq,
            "created_ms": 0,
            # 10 bps of the BTC received, rounded up: 0.005 and 0.01 are 1 each
            "fee": 1,
            "fee_asset": "BTC",
        }
        for price, quantity, seq in [(50_010, 5, fills[0]["seq"]), (50_000, 10, fills[1]["seq"])]
    ]
    assert fills[0]["seq"] > fills[1]["seq"]  # newest first
    [bob_fill] = ex.fills(bob)
    assert bob_fill | {"created_ms": 0} == {
        "order_id": bob_sell,
        "symbol": "BTC-USD",
        "side": "SELL",
        "price": 50_000,
        "quantity": 10,
        "liquidity": "MAKER",
        "seq": fills[1]["seq"],
        "created_ms": 0,
        "fee": -100,  # a rebate of 2 bps on the 500_000 USD received
        "fee_asset": "USD",
    }
    # 2 bps of 250_050 is 50.01: a rebate rounds down, in the exchange's favour
    assert [(f["order_id"], f["quantity"], f["fee"]) for f in ex.fills(carol)] == [
        (carol_sell, 5, -50)
    ]

    assert ex.fills(alice, "?limit=1") == fills[:1]
    assert ex.fills(alice, "?symbol=BTC-USD") == fills
    assert ex.fills(alice, "?symbol=ETH-USD") == []
    [taker] = ex.orders(alice)
    assert (taker["status"], taker["filled"], taker["average_price"]) == (
        "FILLED",
        15,
        (10 * 50_000 + 5 * 50_010) // 15,
    )


# -- the ledger -----------------------------------------------------------------------------


def ledger_pages(ex: Exchange, token: str, query: str, limit: int) -> list[dict[str, Any]]:
    """Every entry, following next_cursor page after page of `limit`."""
    entries: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(200):
        status, page = ex.api.request(
            "GET", f"/v1/ledger?limit={limit}{query}{cursor}", token=token
        )
        assert status == 200, page
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        if "next_cursor" not in page:
            return entries
        assert len(page["entries"]) == limit
        cursor = f"&cursor={page['next_cursor']}"
    raise AssertionError("the ledger never ended")


async def test_the_ledger_adds_up_to_the_balances_and_pages_by_cursor(exchange: Exchange) -> None:
    ex = exchange
    alice_id, alice = ex.user(USD=10_000_000)
    _, bob = ex.user(BTC=100)
    withdrawal = {"user_id": alice_id, "asset": "USD", "amount": 1_000, "reference": "bank-7"}
    assert ex.api.request("POST", "/v1/admin/withdrawals", withdrawal, token=admin())[0] == 200
    await ex.persist()
    ex.place(bob, "SELL", 50_000, 10)
    ex.place(bob, "SELL", 50_010, 10)
    await ex.match()
    buy = ex.place(alice, "BUY", 50_010, 15)  # takes 10 @ 50_000 and 5 @ 50_010
    ex.place(alice, "BUY", 49_000, 3)  # rests: a hold moves nothing in the ledger
    await ex.match()
    await ex.persist()

    status, page = ex.api.request("GET", "/v1/ledger", token=alice)
    assert status == 200 and "next_cursor" not in page, page
    entries = page["entries"]
    assert [(e["type"], e["asset"], e["amount"]) for e in entries] == [
        # newest first: the later trade (5 @ 50_010) first, its fee, then what was paid...
        ("FEE", "BTC", -1),
        ("TRADE", "USD", -5 * 50_010),
        ("TRADE", "BTC", 5),
        ("FEE", "BTC", -1),
        ("TRADE", "USD", -10 * 50_000),
        ("TRADE", "BTC", 10),
        ("WITHDRAWAL", "USD", -1_000),
        ("DEPOSIT", "USD", 10_000_000),
    ]
    fee = entries[0]
    assert {k: fee[k] for k in ("symbol", "order_id", "side", "liquidity", "price")} == {
        "symbol": "BTC-USD", "order_id": buy, "side": "BUY", "liquidity": "TAKER",
        "price": 50_010,
    }  # fmt: skip
    assert entries[-2]["reference"] == "bank-7"
    assert len({e["id"] for e in entries}) == len(entries)
    totals: dict[str, int] = {}
    for e in entries:
        totals[e["asset"]] = totals.get(e["asset"], 0) + e["amount"]
    status, reply = ex.api.request("GET", "/v1/balances", token=alice)
    assert totals == {b["asset"]: b["available"] + b["locked"] for b in reply["balances"]}

    # bob made both trades at a rebate: REBATE entries, positive, in the USD he received
    _, page = ex.api.request("GET", "/v1/ledger?asset=USD", token=bob)
    assert [(e["type"], e["amount"]) for e in page["entries"]] == [
        ("REBATE", 50),  # 2 bps of 250_050 is 50.01, rounded down
        ("TRADE", 250_050),
        ("REBATE", 100),
        ("TRADE", 500_000),
    ]
    for limit in (1, 2, 3, 5):
        assert ledger_pages(ex, alice, "", limit) == entries
        assert ledger_pages(ex, alice, "&asset=BTC", limit) == [
            e for e in entries if e["asset"] == "BTC"
        ]
    assert ex.api.request("GET", "/v1/ledger?asset=ETH", token=alice)[1] == {"entries": []}


def _cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    ["cursor=", "cursor=%21%21", "cursor=bm9wZQ", "cursor=" + "A" * 300, "asset=", "limit=0",
     "asset=" + "X" * 17, "cursor=" + _cursor(1, 9, "x", 0, 0), "cursor=" + _cursor(1, 1, 2, 0, 0),
     "cursor=" + _cursor(2**62, 1, "x", 0, 0), "cursor=" + _cursor(1, 1, "x", 2**63, 0),
     "cursor=" + _cursor(1, 0, "y" * 70, 0, 0), "cursor=" + _cursor(1, 1, "x", 0, 3),
     "cursor=" + _cursor(1, 1, "x", 0)],
)  # fmt: skip
def test_a_ledger_cursor_not_ours_is_400(api: Server, query: str) -> None:
    status, reply = api.request("GET", f"/v1/ledger?{query}", token=user_token("someone"))
    assert (status, reply["error"]) == (400, "MALFORMED"), reply


def test_a_well_formed_cursor_of_any_value_is_a_page(migrated: str, api: Server) -> None:
    # A seq past 32 bits, a key past every real one: bound as the types the columns have.
    token = user_token("someone")
    for key in ((10**15, 1, "ZZZ", 2**40, 2), (1, 0, "9" * 20, 0, 0)):
        status, reply = api.request("GET", f"/v1/ledger?cursor={_cursor(*key)}", token=token)
        assert (status, reply) == (200, {"entries": []}), reply


# -- filters, limits, other users ---------------------------------------------------------


async def test_filters_and_limit_across_both_stores(exchange: Exchange) -> None:
    ex = exchange
    alice, token = ex.user(USD=100_000_000)
    _, bob = ex.user(USD=100_000_000)
    older = [ex.place(token, "BUY", 50_000 + 10 * i, 5) for i in range(3)]
    older.append(ex.place(token, "BUY", 2_000, 5, symbol="ETH-USD"))
    bobs = ex.place(bob, "BUY", 50_000, 5)
    await ex.match()
    await ex.persist()
    for order_id in older[:2]:  # two of them expired from Redis: the database has them
        await ex.redis.delete(keys.order(order_id))
    newer = [ex.place(token, "BUY", 49_000, 5), ex.place(token, "BUY", 3_000, 5, symbol="ETH-USD")]
    # Should an id ever reach someone else's list, its record still names its owner.
    await ex.redis.lpush(keys.user_orders(alice), bobs)

    every = older + newer
    assert [o["order_id"] for o in ex.orders(token)] == sorted(every, reverse=True)
    assert [o["order_id"] for o in ex.orders(token, "?limit=3")] == sorted(every)[::-1][:3]
    assert [o["order_id"] for o in ex.orders(token, "?limit=5")] == sorted(every)[::-1][:5]
    assert [o["order_id"] for o in ex.orders(token, "?symbol=ETH-USD")] == [newer[1], older[3]]
    assert [o["order_id"] for o in ex.orders(token, "?status=NEW")] == newer[::-1]
    assert [o["order_id"] for o in ex.orders(token, "?status=OPEN")] == older[::-1]
    assert [o["order_id"] for o in ex.orders(token, "?symbol=BTC-USD&status=OPEN&limit=2")] == [
        older[2],
        older[1],
    ]
    assert ex.orders(token, "?symbol=NOPE-USD") == []
    assert [o["order_id"] for o in ex.orders(bob)] == [bobs]


async def test_a_canceled_order_carries_its_reason(exchange: Exchange) -> None:
    ex = exchange
    _, token = ex.user(USD=10_000_000)
    order_id = ex.place(token, "BUY", 50_000, 10)
    await ex.match()
    assert ex.api.request("DELETE", f"/v1/orders/{order_id}", token=token)[0] == 202
    await ex.match()
    await ex.persist()
    await ex.redis.delete(keys.order(order_id))

    [view] = ex.orders(token, "?status=CANCELED")

    assert (view["order_id"], view["status"], view["remaining"]) == (order_id, "CANCELED", 0)
    assert view["reason"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/orders?limit=0",
        "/v1/orders?limit=501",
        "/v1/orders?limit=ten",
        "/v1/orders?limit=-1",
        "/v1/orders?status=BOGUS",
        "/v1/orders?status=open",
        "/v1/orders?symbol=" + "X" * 33,
        "/v1/orders?symbol=BTC%00",
        "/v1/fills?limit=0",
        "/v1/fills?limit=1000",
        "/v1/fills?symbol=" + "X" * 33,
    ],
)
def test_bad_query_params_are_400(api: Server, path: str) -> None:
    status, reply = api.request("GET", path, token=user_token("someone"))

    assert (status, reply["error"]) == (400, "MALFORMED"), reply
    assert reply["message"]


def test_history_needs_a_token(api: Server) -> None:
    for path in ("/v1/orders", "/v1/fills", "/v1/orders/1", "/v1/ledger"):
        status, reply = api.request("GET", path)
        assert (status, reply["error"]) == (401, "UNAUTHENTICATED")


def test_openapi_has_the_history(api: Server) -> None:
    paths = api.request("GET", "/openapi.json")[1]["paths"]
    assert paths["/v1/orders"]["get"]["responses"]["200"]
    assert paths["/v1/fills"]["get"]["responses"]["200"]
    assert paths["/v1/ledger"]["get"]["responses"]["200"]


# -- without a database ---------------------------------------------------------------------


def test_no_database_or_an_unreachable_one_is_503(
    redis_url: str, api: Server, migrated: str, tmp_path: Path
) -> None:
    # `api` has listed nothing of its own here: only the module's server must be up, so
    # that both servers below share its Redis.
    token = user_token("nobody")
    nowhere = f"postgres@127.0.0.1:{free_port()}/none"
    servers = {
        "NO_DATABASE": start_api(tmp_path, redis_url=redis_url),
        "UNAVAILABLE": start_api(
            tmp_path,
            redis_url=redis_url,
            database_url=f"{dialect_of(migrated)}://{nowhere}",  # nothing listens there
        ),
    }
    try:
        for error, server in servers.items():
            for path in ("/v1/orders", "/v1/fills", "/v1/orders/123456789", "/v1/ledger"):
                status, reply = server.request("GET", path, token=token)
                assert (status, reply["error"]) == (503, error), (path, reply)
                assert reply["message"]
    finally:
        for server in servers.values():
            stop_api(server)
