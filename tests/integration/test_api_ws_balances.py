"""The WebSocket `balances` channel (api/market_data.py): the API in a subprocess on real
Redis and PostgreSQL, a real WebSocket client, and a matching worker and a batcher stepped
in-process, so each test decides when orders are matched and when the database gets them.
Deposits, withdrawals, orders and cancels go in over HTTP.

Each step waits for the message it causes, then checks, with a no-op request whose reply
comes after everything already queued for the connection, that nothing else came: one
message per user per read of the streams.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import websocket
from redis.asyncio import Redis

from batcher.batcher import Batcher
from schema import keys
from schema.symbols import SymbolSpec
from schema.tables import metadata
from schema.wire import Balance
from spot.audit import caught_up
from store import db
from store.balances import Moves
from store.database import Database, empty, open_database
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, user_token
from workers.worker import Worker

SHARDS = 10
AAPL = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD", maker_fee_bps=-1, taker_fee_bps=25)
WAIT_S = 5.0
NOTHING = {"op": "unsubscribe", "channels": ["nothing"]}  # answered, changes nothing

_users = itertools.count(1)


@pytest.fixture(scope="module")
def api(
    redis_url: str, database_url: str, aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    aio.run(asyncio.to_thread(db.upgrade, database_url))
    server = start_api(
        tmp_path_factory.mktemp("api"),
        redis_url=redis_url,
        database_url=database_url,
        shards=str(SHARDS),
    )
    try:
        yield server
    finally:
        stop_api(server)


@dataclass
class Exchange:
    api: Server
    redis: Redis
    database: Database
    worker: Worker
    batcher: Batcher
    aio: asyncio.Runner

    def user(self) -> tuple[str, str]:
        user = f"holder{next(_users)}"
        return user, user_token(user)

    def transfer(self, kind: str, user: str, asset: str, amount: int) -> None:
        body = {"user_id": user, "asset": asset, "amount": amount}
        status, reply = self.api.request("POST", f"/v1/admin/{kind}", body, token=admin())
        assert status == 200, reply

    def place(self, token: str, side: str, price: int, quantity: int) -> int:
        order = {"symbol": "AAPL", "side": side, "price": price, "quantity": quantity}
        status, reply = self.api.request("POST", "/v1/orders", order, token=token)
        assert status == 202, reply
        return int(reply["order_id"])

    def cancel(self, token: str, order_id: int) -> None:
        status, reply = self.api.request("DELETE", f"/v1/orders/{order_id}", token=token)
        assert status == 202, reply

    def balances(self, token: str) -> list[dict[str, Any]]:
        status, reply = self.api.request("GET", "/v1/balances", token=token)
        assert status == 200, reply
        return list(reply["balances"])

    def match(self) -> None:
        """The worker applies everything queued, then the batcher writes it."""

        async def drain() -> None:
            while await self.worker.step():
                pass
            for _ in range(100):
                if not await caught_up(self.redis, self.database, SHARDS):
                    return
                await self.batcher.step()
            raise AssertionError("the batcher never caught up")

        self.aio.run(drain())

    def connect(self, token: str) -> websocket.WebSocket:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.api.port}/v1/ws",
            timeout=WAIT_S,
            header=[f"Authorization: Bearer {token}"],
        )
        assert reply(ws)["type"] == "authenticated"
        return ws


@pytest.fixture
def exchange(
    api: Server, redis: Redis, database_url: str, aio: asyncio.Runner
) -> Iterator[Exchange]:
    async def setup() -> Exchange:
        database = await open_database(database_url, min_size=1, max_size=2)
        await empty(database, list(metadata.tables))
        shard = await list_symbol(redis, AAPL, SHARDS)
        worker = Worker(redis, [shard], batch=100)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        batcher = Batcher(redis, database, list(range(SHARDS)), batch=500, interval_s=0.01)
        await batcher.start()
        return Exchange(api, redis, database, worker, batcher, aio)

    ex = aio.run(setup())
    deadline = time.monotonic() + WAIT_S
    while "AAPL" not in {s["symbol"] for s in api.request("GET", "/v1/symbols")[1]["symbols"]}:
        assert time.monotonic() < deadline, "the API never saw the symbol"
        time.sleep(0.05)
    yield ex
    aio.run(ex.database.close())


def send(ws: websocket.WebSocket, request: Any) -> None:
    ws.send(json.dumps(request))


def reply(ws: websocket.WebSocket) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv())
    return message


def until(ws: websocket.WebSocket, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The messages received up to and including the first that is `done`."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        seen.append(reply(ws))
        if done(seen[-1]):
            return seen
    raise AssertionError(f"timed out; received {seen}")


def next_balances(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """The messages up to the next balance message, and nothing after it: the no-op's reply
    comes after whatever was queued with that message."""
    seen = until(ws, lambda m: m["type"] == "balance")
    send(ws, NOTHING)
    assert reply(ws) == {"type": "unsubscribed", "channels": []}, "more came with it"
    return seen


def subscribe(ws: websocket.WebSocket, channels: list[str]) -> dict[str, Any]:
    """Subscribe; the balances snapshot that follows."""
    send(ws, {"op": "subscribe", "channels": channels})
    assert reply(ws) == {"type": "subscribed", "channels": channels}
    snapshot = reply(ws)
    assert (snapshot["type"], snapshot["snapshot"]) == ("balance", True), snapshot
    assert abs(snapshot["time_ms"] - time.time() * 1000) < 60_000
    return snapshot


def amounts(*balances: tuple[str, int, int]) -> list[dict[str, Any]]:
    return [{"asset": a, "available": f, "locked": locked} for a, f, locked in balances]


def test_balances_follow_a_deposit_an_order_a_fill_a_cancel_and_a_withdrawal(
    exchange: Exchange,
) -> None:
    ex = exchange
    seller_id, seller = ex.user()
    buyer_id, buyer = ex.user()
    mine, theirs = ex.connect(seller), ex.connect(buyer)
    try:
        for ws in (mine, theirs):
            assert subscribe(ws, ["orders", "balances"])["balances"] == []

        ex.transfer("deposits", seller_id, "AAPL", 100)
        assert next_balances(mine)[-1]["balances"] == amounts(("AAPL", 100, 0))
        ex.transfer("deposits", buyer_id, "USD", 1_000_000)
        [deposited] = next_balances(theirs)  # nothing of the seller's deposit
        assert deposited == {
            "type": "balance",
            "channel": "balances",
            "snapshot": False,
            "balances": amounts(("USD", 1_000_000, 0)),
            "time_ms": deposited["time_ms"],
        }

        # The hold shows with the order's ACCEPTED, once its worker has settled it.
        sell = ex.place(seller, "SELL", 10_000, 15)
        ex.match()
        accepted, held = next_balances(mine)
        assert (accepted["event"], accepted["order_id"]) == ("ACCEPTED", sell)
        assert held["balances"] == amounts(("AAPL", 85, 15))

        # One batch: the buyer's hold, the trade and its fee, the release; one message each,
        # after the order events, with what GET /v1/balances says.
        buy = ex.place(buyer, "BUY", 10_000, 10)
        ex.match()
        seen = next_balances(theirs)
        assert [(m.get("event"), m.get("order_id")) for m in seen[:-1]] == [
            ("ACCEPTED", buy),
            ("FILL", buy),
            ("DONE", buy),
        ]
        # 25 bps of the 10 AAPL received, rounded up: 1
        assert seen[-1]["balances"] == amounts(("AAPL", 9, 0), ("USD", 900_000, 0))
        assert seen[-1]["balances"] == ex.balances(buyer)
        fill, filled = next_balances(mine)
        assert (fill["event"], fill["order_id"], fill["fee"]) == ("FILL", sell, -10)
        # the maker's rebate, 1 bp of 100_000 USD: 10
        assert filled["balances"] == amounts(("AAPL", 85, 5), ("USD", 100_010, 0))
        assert filled["balances"] == ex.balances(seller)
        assert held["time_ms"] <= filled["time_ms"]

        ex.cancel(seller, sell)
        ex.match()
        canceled, released = next_balances(mine)
        assert (canceled["event"], canceled["order_id"]) == ("CANCELED", sell)
        assert released["balances"] == amounts(("AAPL", 90, 0))

        ex.transfer("withdrawals", seller_id, "USD", 10)
        assert next_balances(mine)[-1]["balances"] == amounts(("USD", 100_000, 0))
        assert ex.balances(seller) == amounts(("AAPL", 90, 0), ("USD", 100_000, 0))
        # Nothing of the seller's came to the buyer since the fill.
        send(theirs, NOTHING)
        assert reply(theirs)["type"] == "unsubscribed"
    finally:
        mine.close()
        theirs.close()


def test_the_snapshot_is_what_get_v1_balances_says(exchange: Exchange) -> None:
    user, token = exchange.user()
    exchange.transfer("deposits", user, "USD", 500_000)
    exchange.transfer("deposits", user, "AAPL", 7)
    exchange.place(token, "BUY", 9_000, 20)
    exchange.match()
    ws = exchange.connect(token)
    try:
        snapshot = subscribe(ws, ["balances"])
        assert snapshot["balances"] == amounts(("AAPL", 7, 0), ("USD", 320_000, 180_000))
        assert snapshot["balances"] == exchange.balances(token)
        # The user has nothing queued: the snapshot is all that comes.
        send(ws, NOTHING)
        assert reply(ws)["type"] == "unsubscribed"
    finally:
        ws.close()


def test_one_message_per_user_for_a_batch_of_many_changes(exchange: Exchange) -> None:
    seller_id, seller = exchange.user()
    exchange.transfer("deposits", seller_id, "AAPL", 100)
    ws = exchange.connect(seller)
    try:
        subscribe(ws, ["orders", "balances"])
        orders = [exchange.place(seller, "SELL", 10_000 + n, 10) for n in range(3)]
        exchange.match()  # one worker batch: three holds
        seen = next_balances(ws)
        assert [(m["event"], m["order_id"]) for m in seen[:-1]] == [("ACCEPTED", o) for o in orders]
        assert seen[-1]["balances"] == amounts(("AAPL", 70, 30))
    finally:
        ws.close()


def test_balances_needs_a_token(exchange: Exchange) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{exchange.api.port}/v1/ws", timeout=WAIT_S)
    try:
        send(ws, {"op": "subscribe", "channels": ["balances", "trades:AAPL"]})
        assert reply(ws) == {
            "type": "error",
            "error": "UNAUTHENTICATED",
            "message": "balances needs a token (op auth)",
            "channel": "balances",
        }
        assert reply(ws) == {"type": "subscribed", "channels": ["trades:AAPL"]}
    finally:
        ws.close()


async def test_moves_name_the_watched_users_of_many_entries_and_read_them_once(
    exchange: Exchange,
) -> None:
    """The step a fan-out reuses (store/balances.py Moves): entries of the ledger and of an
    events stream, as the real scripts write them, read in one XREAD."""
    ex = exchange
    seller_id, seller = ex.user()
    buyer_id, buyer = ex.user()
    stranger_id, _ = ex.user()
    ex.transfer("deposits", seller_id, "AAPL", 50)
    ex.transfer("deposits", buyer_id, "USD", 100_000)
    ex.transfer("deposits", buyer_id, "USD", 100_000)
    ex.transfer("deposits", stranger_id, "USD", 1)
    ex.place(seller, "SELL", 10_000, 5)
    ex.place(buyer, "BUY", 10_000, 5)
    while await ex.worker.step():
        pass
    streams = [keys.LEDGER] + [keys.events(n) for n in range(SHARDS)]
    read = await ex.redis.xread(dict.fromkeys(streams, "0-0"))
    moves = Moves()
    for stream, entries in read:
        for _, fields in entries:
            moves.add(stream.decode(), fields, {seller_id, buyer_id})
    assert moves.assets == {seller_id: {"AAPL", "USD"}, buyer_id: {"AAPL", "USD"}}
    assert [(t.user, t.asset, t.amount) for t in moves.transfers] == [
        (seller_id, "AAPL", 50),
        (buyer_id, "USD", 100_000),
        (buyer_id, "USD", 100_000),
    ]
    now = await moves.read(ex.redis)
    assert now == {
        seller_id: [Balance(asset="AAPL", available=45, locked=0),
                    Balance(asset="USD", available=50_005, locked=0)],
        buyer_id: [Balance(asset="AAPL", available=4, locked=0),
                   Balance(asset="USD", available=150_000, locked=0)],
    }  # fmt: skip
    for token, user in ((seller, seller_id), (buyer, buyer_id)):
        assert msgspec.to_builtins(now[user]) == ex.balances(token)
