"""Market data over WebSocket (api/market_data.py): the API in a subprocess on real Redis, a
real WebSocket client (websocket-client), and a matching worker stepped in-process, so
each test decides when orders are matched. Orders go in over HTTP.

Every wait is for a message, with a deadline; while waiting, the worker is stepped, which
publishes any depth its 50 ms throttle held back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websocket
from redis.asyncio import Redis

from api.market_data import CLIENT_NAME
from api.sockets import QUEUE_SIZE, Connection
from schema.symbols import SymbolSpec
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, user_token
from workers.worker import Worker

SHARDS = 10
AAPL = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD", maker_fee_bps=-1, taker_fee_bps=25)
WAIT_S = 5.0

_users = itertools.count(1)


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_api(tmp_path_factory.mktemp("api"), redis_url=redis_url, shards=str(SHARDS))
    try:
        yield server
    finally:
        stop_api(server)


@dataclass
class Exchange:
    api: Server
    worker: Worker
    aio: asyncio.Runner
    redis: Redis

    def user(self, **amounts: int) -> tuple[str, str]:
        user = f"wsuser{next(_users)}"
        for asset, amount in amounts.items():
            transfer = {"user_id": user, "asset": asset, "amount": amount}
            status, _ = self.api.request("POST", "/v1/admin/deposits", transfer, token=admin())
            assert status == 200
        return user, user_token(user)

    def place(self, token: str, side: str, price: int, quantity: int) -> int:
        order = {"symbol": "AAPL", "side": side, "price": price, "quantity": quantity}
        status, reply = self.api.request("POST", "/v1/orders", order, token=token)
        assert status == 202, reply
        return int(reply["order_id"])

    def match(self) -> None:
        async def drain() -> None:
            while await self.worker.step():
                pass

        self.aio.run(drain())

    def connect(self, token: str | None = None) -> websocket.WebSocket:
        header = [f"Authorization: Bearer {token}"] if token else []
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.api.port}/v1/ws", timeout=WAIT_S, header=header
        )
        return ws

    def until(
        self, ws: websocket.WebSocket, done: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """The messages received up to and including the first that is `done`."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        ws.settimeout(0.1)
        try:
            while time.monotonic() < deadline:
                try:
                    message = json.loads(ws.recv())
                except websocket.WebSocketTimeoutException:
                    self.aio.run(self.worker.step())  # publishes depth the throttle held
                    continue
                seen.append(message)
                if done(message):
                    return seen
        finally:
            ws.settimeout(WAIT_S)
        raise AssertionError(f"timed out; received {seen}")


def send(ws: websocket.WebSocket, request: Any) -> None:
    ws.send(json.dumps(request))


def reply(ws: websocket.WebSocket) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv())
    return message


@pytest.fixture
def exchange(api: Server, redis: Redis, aio: asyncio.Runner) -> Iterator[Exchange]:
    async def setup() -> Worker:
        shard = await list_symbol(redis, AAPL, SHARDS)
        worker = Worker(redis, [shard], batch=100)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        return worker

    worker = aio.run(setup())
    # The API refreshes its symbols every 0.2 s, and may still list an earlier module's: after
    # the flush, wait until it lists ours alone.
    deadline = time.monotonic() + WAIT_S
    while [s["symbol"] for s in api.request("GET", "/v1/symbols")[1]["symbols"]] != ["AAPL"]:
        assert time.monotonic() < deadline, "the API never saw the symbol"
        time.sleep(0.05)
    yield Exchange(api, worker, aio, redis)


def test_trades_and_depth_of_crossing_orders(exchange: Exchange) -> None:
    _, seller = exchange.user(AAPL=100)
    _, buyer = exchange.user(USD=1_000_000)
    ws = exchange.connect()
    try:
        send(ws, {"op": "subscribe", "channels": ["trades:AAPL", "depth:AAPL"]})
        assert reply(ws) == {"type": "subscribed", "channels": ["trades:AAPL", "depth:AAPL"]}
        snapshot = reply(ws)
        assert (snapshot["type"], snapshot["symbol"], snapshot["bids"]) == ("depth", "AAPL", [])

        exchange.place(seller, "SELL", 10_000, 15)
        exchange.place(buyer, "BUY", 10_000, 10)
        exchange.match()

        trade = exchange.until(ws, lambda m: m["type"] == "trade")[-1]
        assert trade == {
            "type": "trade",
            "channel": "trades:AAPL",
            "symbol": "AAPL",
            "seq": trade["seq"],
            "price": 10_000,
            "quantity": 10,
            "taker_side": "BUY",
        }
        depth = exchange.until(ws, lambda m: m["type"] == "depth" and m["seq"] >= trade["seq"])
        assert (depth[-1]["bids"], depth[-1]["asks"]) == ([], [[10_000, 5]])
        seqs = [m["seq"] for m in depth if m["type"] == "depth"]
        assert seqs == sorted(seqs)
    finally:
        ws.close()


def test_the_fan_out_stops_when_nobody_listens_and_starts_again(exchange: Exchange) -> None:
    def fan_out_connected() -> bool:
        clients = exchange.aio.run(exchange.redis.client_list())
        return any(c.get("name") == CLIENT_NAME for c in clients)

    _, seller = exchange.user(AAPL=100)
    _, buyer = exchange.user(USD=1_000_000)
    ws = exchange.connect()
    send(ws, {"op": "subscribe", "channels": ["trades:AAPL"]})
    assert reply(ws)["type"] == "subscribed"
    assert fan_out_connected()
    ws.close()
    deadline = time.monotonic() + WAIT_S
    while fan_out_connected():
        assert time.monotonic() < deadline, "the fan-out outlived its last listener"
        time.sleep(0.05)

    ws = exchange.connect()
    try:
        send(ws, {"op": "subscribe", "channels": ["trades:AAPL"]})
        assert reply(ws)["type"] == "subscribed"
        exchange.place(seller, "SELL", 10_000, 10)
        exchange.place(buyer, "BUY", 10_000, 10)
        exchange.match()
        trade = exchange.until(ws, lambda m: m["type"] == "trade")[-1]
        assert (trade["price"], trade["quantity"]) == (10_000, 10)
    finally:
        ws.close()


def test_orders_channel_carries_only_the_users_own_orders(exchange: Exchange) -> None:
    seller_id, seller = exchange.user(AAPL=100)
    _, buyer = exchange.user(USD=1_000_000)
    mine = exchange.connect(token=seller)  # the header on the upgrade
    theirs = exchange.connect()
    try:
        assert reply(mine) == {"type": "authenticated", "user_id": seller_id}
        send(theirs, {"op": "auth", "token": buyer})
        assert reply(theirs)["type"] == "authenticated"
        for ws in (mine, theirs):
            send(ws, {"op": "subscribe", "channels": ["orders"]})
            assert reply(ws) == {"type": "subscribed", "channels": ["orders"]}

        sell = exchange.place(seller, "SELL", 10_000, 15)
        buy = exchange.place(buyer, "BUY", 10_000, 10)
        exchange.match()

        theirs_seen = exchange.until(theirs, lambda m: m.get("event") == "DONE")
        assert [(m["event"], m["order_id"]) for m in theirs_seen] == [
            ("ACCEPTED", buy),
            ("FILL", buy),
            ("DONE", buy),
        ]
        assert theirs_seen[1]["liquidity"] == "TAKER"
        # 25 bps of the 10 AAPL the buyer receives: 0.025, rounded up to 1
        assert (theirs_seen[1]["fee"], theirs_seen[1]["fee_asset"]) == (1, "AAPL")
        # Everything for `mine` was queued with the buyer's DONE: a reply sent now comes after.
        send(mine, {"op": "unsubscribe", "channels": ["orders"]})
        mine_seen = exchange.until(mine, lambda m: m["type"] == "unsubscribed")
        orders = [m for m in mine_seen if m["type"] == "order"]
        assert [(m["event"], m["order_id"]) for m in orders] == [
            ("ACCEPTED", sell),
            ("FILL", sell),
        ]
        fill = orders[1]
        assert (fill["symbol"], fill["price"], fill["quantity"]) == ("AAPL", 10_000, 10)
        assert (fill["side"], fill["liquidity"]) == ("SELL", "MAKER")
        assert (fill["fee"], fill["fee_asset"]) == (-10, "USD")  # 1 bp rebate on 100_000 USD
        assert orders[0]["seq"] < fill["seq"]
    finally:
        mine.close()
        theirs.close()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "MALFORMED"),
        (json.dumps({"op": "subscribe"}), "MALFORMED"),
        (json.dumps({"op": "dance"}), "UNKNOWN_OP"),
        (json.dumps({"op": "subscribe", "channels": ["news:AAPL"]}), "UNKNOWN_CHANNEL"),
        (json.dumps({"op": "subscribe", "channels": ["trades:NOPE"]}), "UNKNOWN_SYMBOL"),
        (json.dumps({"op": "subscribe", "channels": ["orders"]}), "UNAUTHENTICATED"),
        (json.dumps({"op": "auth", "token": "forged"}), "INVALID_TOKEN"),
        ("x" * 5_000, "MESSAGE_TOO_LARGE"),
    ],
)
def test_bad_messages_get_errors_and_the_connection_stays_usable(
    exchange: Exchange, message: str, code: str
) -> None:
    ws = exchange.connect()
    try:
        ws.send(message)
        error = reply(ws)
        assert (error["type"], error["error"]) == ("error", code), error
        send(ws, {"op": "subscribe", "channels": ["trades:AAPL"]})
        assert reply(ws) == {"type": "subscribed", "channels": ["trades:AAPL"]}
    finally:
        ws.close()


def test_a_bad_token_on_the_upgrade_leaves_public_channels_open(exchange: Exchange) -> None:
    ws = exchange.connect(token="forged")
    try:
        assert reply(ws)["error"] == "INVALID_TOKEN"
        send(ws, {"op": "subscribe", "channels": ["orders", "trades:AAPL"]})
        assert reply(ws)["error"] == "UNAUTHENTICATED"
        assert reply(ws) == {"type": "subscribed", "channels": ["trades:AAPL"]}
    finally:
        ws.close()


def test_plain_http_on_the_websocket_path_is_426(api: Server) -> None:
    status, body = api.request("GET", "/v1/ws")
    assert (status, body["error"]) == (426, "UPGRADE_REQUIRED")


def test_a_websocket_elsewhere_is_refused(api: Server) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{api.port}/v1/nowhere", timeout=WAIT_S)
    assert refused.value.status_code == 404


async def test_a_connection_that_falls_behind_gets_an_error_then_is_closed() -> None:
    conn = Connection()
    for n in range(QUEUE_SIZE + 1):
        conn.push(str(n))
    assert conn.closing
    last = [conn.queue.get_nowait() for _ in range(conn.queue.qsize())]
    assert json.loads(last[0] or "")["error"] == "SLOW_CONSUMER"
    assert last[1:] == [None]
    conn.push("later")
    assert conn.queue.empty()
