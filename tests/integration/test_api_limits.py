"""Abuse limits (issue #19) against a real API process on the tests' Redis: request rates
per user, per user for order commands and per address (429 with Retry-After), a user's open
orders per symbol and in all (counted by the order scripts, released as orders end), the
WebSocket's connection limits, idle timeout and token expiry, and slow HTTP clients.

Rates are checked against what a token bucket allows: every request within the burst
passes, and no more pass than the burst plus what refilled while they were sent.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from redis.asyncio import Redis

from api.auth import make_token
from api.limits import BURST_S
from schema.symbols import SymbolSpec
from store.symbols import list_symbol
from tests.integration.http import SECRET, Server, admin, start_api, stop_api, user_token
from workers.worker import Worker

SHARDS = 2
AAPL = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD")
MSFT = SymbolSpec(symbol="MSFT", base="MSFT", quote="USD")
USER_RATE, ORDER_RATE, IP_RATE = 30.0, 10.0, 10.0
PER_SYMBOL, IN_ALL = 3, 4
WS_PER_USER, WS_PER_IP, WS_IDLE_S = 2, 3, 1.0
HEADER_TIMEOUT_S = 2.0
_users = itertools.count(1)


@pytest.fixture(scope="module")
def listed(redis_url: str, aio: asyncio.Runner) -> None:
    async def seed() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            for spec in (AAPL, MSFT):
                await list_symbol(client, spec, SHARDS)
        finally:
            await client.aclose()

    aio.run(seed())


@pytest.fixture(scope="module")
def api(listed: None, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small limits; loopback trusted (the default), so no per-address limit."""
    server = start_api(
        tmp_path_factory.mktemp("api"),
        redis_url=redis_url,
        shards=str(SHARDS),
        rate_limit_user=str(USER_RATE),
        rate_limit_orders=str(ORDER_RATE),
        max_open_orders_per_symbol=str(PER_SYMBOL),
        max_open_orders=str(IN_ALL),
        ws_connections_per_user=str(WS_PER_USER),
        ws_idle_timeout_s=str(WS_IDLE_S),
        http_header_timeout_s=str(HEADER_TIMEOUT_S),
    )
    try:
        yield server
    finally:
        stop_api(server)


@pytest.fixture(scope="module")
def untrusted(
    listed: None, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """No trusted network: this machine's own address is limited like anyone's."""
    server = start_api(
        tmp_path_factory.mktemp("api-untrusted"),
        redis_url=redis_url,
        shards=str(SHARDS),
        rate_limit_ip=str(IP_RATE),
        rate_limit_trusted="none",
        ws_connections_per_ip=str(WS_PER_IP),
    )
    try:
        yield server
    finally:
        stop_api(server)


def funded(api: Server, **amounts: int) -> tuple[str, str]:
    user = f"limits{next(_users)}"
    for asset, amount in amounts.items():
        transfer = {"user_id": user, "asset": asset, "amount": amount}
        status, reply = api.request("POST", "/v1/admin/deposits", transfer, token=admin())
        assert status == 200, reply
    return user, user_token(user)


def burst_of(api: Server, n: int, method: str, path: str, **kw: Any) -> tuple[list[int], float]:
    started = time.monotonic()
    statuses = [api.request(method, path, **kw)[0] for _ in range(n)]
    return statuses, time.monotonic() - started


def assert_bucket(statuses: list[int], elapsed: float, rate: float, ok: int) -> None:
    burst = int(rate * BURST_S)
    assert statuses[:burst] == [ok] * burst, statuses  # the burst passes whole
    assert set(statuses) == {ok, 429}, statuses
    assert statuses.count(ok) <= burst + rate * elapsed + 1, (statuses, elapsed)


# -- request rates -----------------------------------------------------------------------


def test_a_user_past_the_request_rate_gets_429_with_retry_after(api: Server) -> None:
    _, token = funded(api)
    statuses, elapsed = burst_of(api, 100, "GET", "/v1/balances", token=token)
    assert_bucket(statuses, elapsed, USER_RATE, 200)

    for _ in range(int(USER_RATE * BURST_S) * 3):  # however long the burst took to send
        status, body, headers = api.exchange("GET", "/v1/balances", token=token)
        if status == 429:
            break
    assert status == 429 and body["error"] == "RATE_LIMITED", body
    assert set(body) == {"error", "message"}  # the standard error body
    retry = int(headers["retry-after"])
    assert 1 <= retry <= BURST_S + 1
    assert headers["ratelimit"].startswith(f"limit={int(USER_RATE * BURST_S)}, remaining=0")
    assert "ratelimit-policy" in headers
    # another user is not held back by this one
    _, other = funded(api)
    assert api.request("GET", "/v1/balances", token=other)[0] == 200
    time.sleep(retry)
    assert api.request("GET", "/v1/balances", token=token)[0] == 200


def test_order_commands_have_a_smaller_budget_of_their_own(api: Server) -> None:
    _, token = funded(api)
    # A cancel of no order is an order command too: once admitted, 503 from this API
    # without a database (the order might have ended and left Redis).
    statuses, elapsed = burst_of(api, 40, "DELETE", "/v1/orders/999999999", token=token)
    assert_bucket(statuses, elapsed, ORDER_RATE, 503)
    assert api.request("GET", "/v1/balances", token=token)[0] == 200  # reads still pass


def test_probes_are_never_limited(untrusted: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert {untrusted.request("GET", path)[0] for _ in range(40)} == {200}


def test_an_address_past_its_rate_gets_429(untrusted: Server, api: Server) -> None:
    statuses, elapsed = burst_of(untrusted, 60, "GET", "/v1/symbols")
    assert_bucket(statuses, elapsed, IP_RATE, 200)
    # a trusted address (loopback, by default) has no such limit
    assert {api.request("GET", "/v1/symbols")[0] for _ in range(60)} == {200}


# -- open orders -------------------------------------------------------------------------


@pytest.fixture
def worker(listed: None, redis: Redis, aio: asyncio.Runner) -> Iterator[Worker]:
    """A matching worker stepped in-process; the `redis` fixture flushed: list again."""

    async def setup() -> Worker:
        for spec in (AAPL, MSFT):
            await list_symbol(redis, spec, SHARDS)
        worker = Worker(redis, list(range(SHARDS)), batch=100)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        return worker

    yield aio.run(setup())


def match(worker: Worker, aio: asyncio.Runner) -> None:
    async def drain() -> None:
        while await worker.step():
            pass

    aio.run(drain())


def order(symbol: str = "AAPL", **extra: Any) -> dict[str, Any]:
    return {"symbol": symbol, "side": "BUY", "price": 100, "quantity": 1, **extra}


def test_open_orders_are_capped_per_symbol_and_in_all(
    api: Server, worker: Worker, aio: asyncio.Runner
) -> None:
    _, token = funded(api, USD=100_000)
    placed = []
    for _ in range(PER_SYMBOL):
        status, reply = api.request("POST", "/v1/orders", order(), token=token)
        assert status == 202, reply
        placed.append(reply["order_id"])
    status, reply = api.request("POST", "/v1/orders", order(), token=token)
    assert (status, reply["error"]) == (422, "TOO_MANY_OPEN_ORDERS"), reply
    assert f"{PER_SYMBOL} open orders on AAPL" in reply["message"]
    assert api.request("POST", "/v1/orders", order("MSFT"), token=token)[0] == 202
    status, reply = api.request("POST", "/v1/orders", order("MSFT"), token=token)
    assert (status, reply["error"]) == (422, "TOO_MANY_OPEN_ORDERS"), reply
    assert f"{IN_ALL} open orders" in reply["message"]

    # An order that ends gives its place back, once the worker has settled it.
    match(worker, aio)
    assert api.request("DELETE", f"/v1/orders/{placed[0]}", token=token)[0] == 202
    match(worker, aio)
    status, view = api.request("GET", f"/v1/orders/{placed[0]}", token=token)
    assert view["status"] == "CANCELED", view
    status, reply = api.request("POST", "/v1/orders", order(), token=token)
    assert status == 202, reply
    # An IOC that finds nothing to trade ends at once: it counts only while it is queued.
    match(worker, aio)
    assert api.request("DELETE", f"/v1/orders/{reply['order_id']}", token=token)[0] == 202
    match(worker, aio)
    ioc = order(time_in_force="IOC")
    assert api.request("POST", "/v1/orders", ioc, token=token)[0] == 202
    match(worker, aio)
    assert api.request("POST", "/v1/orders", order(), token=token)[0] == 202
    status, balances = api.request("GET", "/v1/balances", token=token)
    assert [b["asset"] for b in balances["balances"]] == ["USD"]  # the counts are no asset


# -- WebSocket -----------------------------------------------------------------------------


def ws_connect(api: Server, token: str | None = None) -> websocket.WebSocket:
    header = [f"Authorization: Bearer {token}"] if token else []
    return websocket.create_connection(f"ws://127.0.0.1:{api.port}/v1/ws", timeout=5, header=header)


def until_closed(ws: websocket.WebSocket, timeout: float = 10.0) -> list[str]:
    """The text messages up to the server's close (Granian's RSGI sends no close code:
    the last message says why)."""
    messages: list[str] = []
    ws.settimeout(timeout)
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()  # close() does nothing once the server has closed: the socket stays
            return messages
        if opcode == websocket.ABNF.OPCODE_TEXT:
            messages.append(frame.data.decode())


def test_a_websocket_without_subscription_is_closed_when_idle(api: Server) -> None:
    ws = ws_connect(api)
    started = time.monotonic()
    try:
        messages = until_closed(ws)
    finally:
        ws.close()
    assert '"IDLE_TIMEOUT"' in messages[-1], messages
    assert time.monotonic() - started >= WS_IDLE_S * 0.9


def test_a_subscribed_websocket_is_not_idle(api: Server) -> None:
    ws = ws_connect(api)
    try:
        ws.send('{"op": "subscribe", "channels": ["trades:AAPL"]}')
        assert '"subscribed"' in ws.recv()
        ws.settimeout(WS_IDLE_S * 2.5)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()  # nothing comes, and the connection stays
        ws.send('{"op": "unsubscribe", "channels": ["trades:AAPL"]}')
        assert '"unsubscribed"' in ws.recv()
        messages = until_closed(ws)  # idle again, with nothing to listen to
        assert '"IDLE_TIMEOUT"' in messages[-1], messages
    finally:
        ws.close()


def test_a_websocket_closes_when_its_token_expires(api: Server) -> None:
    user = f"limits{next(_users)}"
    token = make_token(user, secret=SECRET, ttl_s=2)
    ws = ws_connect(api, token)
    try:
        assert '"authenticated"' in ws.recv()
        ws.send('{"op": "subscribe", "channels": ["orders", "trades:AAPL"]}')
        assert '"subscribed"' in ws.recv()
        messages = until_closed(ws)
    finally:
        ws.close()
    assert '"TOKEN_EXPIRED"' in messages[-1], messages


def test_a_user_has_a_bounded_number_of_websockets(api: Server) -> None:
    _, token = funded(api)
    first = [ws_connect(api, token) for _ in range(WS_PER_USER)]
    try:
        for ws in first:
            assert '"authenticated"' in ws.recv()
        extra = ws_connect(api, token)
        try:
            messages = until_closed(extra)
        finally:
            extra.close()
        assert '"TOO_MANY_CONNECTIONS"' in messages[-1], messages
        first.pop().close()
        time.sleep(0.2)  # the server notices the close
        again = ws_connect(api, token)
        assert '"authenticated"' in again.recv()
        first.append(again)
    finally:
        for ws in first:
            ws.close()


def test_an_address_has_a_bounded_number_of_websockets(untrusted: Server) -> None:
    held = [ws_connect(untrusted) for _ in range(WS_PER_IP)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(untrusted)
        assert refused.value.status_code == 429
    finally:
        for ws in held:
            ws.close()


# -- slow HTTP clients ---------------------------------------------------------------------

SLOW_SOCKETS = 3_000  # more than Granian's 2,048 connections a worker held by default


def partial_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /v1/symbols HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    return sock


def test_a_client_that_sends_its_headers_slowly_is_cut_off(api: Server) -> None:
    sock = partial_request(api.port)
    try:
        started = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT_S * 5)
        for _ in range(int(HEADER_TIMEOUT_S * 4)):  # a byte every half second
            try:
                sock.sendall(b"a")
            except OSError:
                break
            time.sleep(0.5)
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert b" 200 " not in data
        assert time.monotonic() - started < HEADER_TIMEOUT_S * 4
    finally:
        sock.close()


def test_thousands_of_slow_sockets_leave_others_served(api: Server) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_SOCKETS):
            slow.append(partial_request(api.port))
        started = time.monotonic()
        status, _ = api.request("GET", "/healthz")
        assert status == 200
        # Served at once, not after the slow sockets' header timeout freed their places.
        assert time.monotonic() - started < HEADER_TIMEOUT_S / 2
    finally:
        for sock in slow:
            sock.close()
