"""The HTTP API over real HTTP: a Granian server in a subprocess (`python -m spot.api_server`)
on a real Redis. No matching worker runs: accepted orders stay queued, which is all these
tests need (holds, records, errors). The DB is flushed and seeded once for the module, so
tests here never use the `redis` fixture (it flushes); each test works with its own users.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from api.auth import make_token
from schema import keys
from schema.messages import CancelAll, Side, Trade
from schema.streams import CommandEntry
from schema.symbols import SymbolSpec
from store.symbols import list_symbol
from tests.integration.http import SECRET, Server, admin, free_port, start_api, stop_api, user_token

MAX_BODY = 4096
SHARDS = 10

BTC = SymbolSpec(
    symbol="BTC-USD",
    base="BTC",
    quote="USD",
    tick=10,
    lot=5,
    min_qty=5,
    max_qty=1000,
    band_bps=1000,  # ±10% around 50_000: 45_000..55_000
    reference_price=50_000,
)
ETH = SymbolSpec(symbol="ETH-USD", base="ETH", quote="USD")  # no band
BAND = SymbolSpec(symbol="BAND-USD", base="BAND", quote="USD", band_bps=100, reference_price=10_000)

_users = itertools.count(1)


def _start(redis_url: str, folder: Path) -> Server:
    return start_api(folder, redis_url=redis_url, max_body_bytes=str(MAX_BODY), shards=str(SHARDS))


async def _seed(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        for spec in (BTC, ETH, BAND):
            await list_symbol(client, spec, SHARDS)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def api(
    redis_url: str, aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    aio.run(_seed(redis_url))
    server = _start(redis_url, tmp_path_factory.mktemp("api"))
    try:
        yield server
    finally:
        stop_api(server)


@pytest.fixture(scope="module")
def db(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


def funded(api: Server, **amounts: int) -> tuple[str, str]:
    """A new user with these available amounts, deposited over HTTP; (user id, token)."""
    user = f"user{next(_users)}"
    for asset, amount in amounts.items():
        status, reply = api.request(
            "POST",
            "/v1/admin/deposits",
            {"user_id": user, "asset": asset, "amount": amount},
            token=admin(),
        )
        assert (status, reply["available"]) == (200, amount), reply
    return user, user_token(user)


def balances(api: Server, token: str) -> dict[str, tuple[int, int]]:
    status, reply = api.request("GET", "/v1/balances", token=token)
    assert status == 200
    return {b["asset"]: (b["available"], b["locked"]) for b in reply["balances"]}


def buy(price: int | None = 50_000, quantity: int = 10, **extra: Any) -> dict[str, Any]:
    order = {"symbol": "BTC-USD", "side": "BUY", "quantity": quantity, **extra}
    if price is not None:
        order["price"] = price
    return order


def stop(price: int | None = None, stop_price: int | None = None, **extra: Any) -> dict[str, Any]:
    """A STOP_LIMIT buy (as given: the rules tests leave parts out)."""
    order = buy(price, **{"type": "STOP_LIMIT", **extra})
    if stop_price is not None:
        order["stop_price"] = stop_price
    return order


NOW_MS = int(time.time() * 1000)
IN_AN_HOUR, AN_HOUR_AGO, IN_A_YEAR = (
    NOW_MS + 3_600_000,
    NOW_MS - 3_600_000,
    NOW_MS + 365 * 86_400_000,
)


# -- the order path -------------------------------------------------------------------------


def test_place_holds_funds_and_queues_a_new_order(api: Server, db: sync_redis.Redis) -> None:
    _, token = funded(api, USD=1_000_000)
    stream = keys.orders(keys.home_shard("BTC-USD", SHARDS))
    queued = db.xlen(stream)

    status, reply = api.request("POST", "/v1/orders", buy(50_000, 10), token=token)

    assert status == 202
    assert reply["status"] == "NEW"
    assert balances(api, token) == {"USD": (500_000, 500_000)}
    assert db.xlen(stream) == queued + 1
    status, view = api.request("GET", f"/v1/orders/{reply['order_id']}", token=token)
    assert status == 200
    assert view | {"created_ms": 0} == {
        "order_id": reply["order_id"],
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
        "client_order_id": None,
        "status": "NEW",
        "created_ms": 0,
    }
    assert abs(view["created_ms"] - time.time() * 1000) < 60_000


def test_sell_holds_the_base_asset(api: Server) -> None:
    _, token = funded(api, BTC=100)

    status, _ = api.request(
        "POST", "/v1/orders", buy(51_000, 30, side="SELL", time_in_force="IOC"), token=token
    )

    assert status == 202
    assert balances(api, token) == {"BTC": (70, 30)}


def test_market_buy_is_held_at_the_upper_band_edge(api: Server) -> None:
    _, token = funded(api, USD=10_000_000)

    status, _ = api.request("POST", "/v1/orders", buy(None, 10, type="MARKET"), token=token)

    assert status == 202
    assert balances(api, token)["USD"] == (10_000_000 - 550_000, 550_000)


@pytest.mark.parametrize(
    ("order", "held"),
    [
        (stop(50_100, 51_000, quantity=10), ("USD", 501_000)),  # at its limit
        (stop(None, 51_000, quantity=10, type="STOP_MARKET"), ("USD", 550_000)),  # band's edge
        (stop(49_000, 49_500, quantity=10, side="SELL"), ("BTC", 10)),
        (stop(None, 49_500, quantity=10, side="SELL", type="STOP_MARKET"), ("BTC", 10)),
    ],
)
def test_a_stop_is_held_from_placement_as_the_order_it_becomes(
    api: Server, order: dict[str, Any], held: tuple[str, int]
) -> None:
    _, token = funded(api, USD=10_000_000, BTC=100)
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202, reply
    asset, amount = held
    funds = {"USD": 10_000_000, "BTC": 100}
    assert balances(api, token)[asset] == (funds[asset] - amount, amount)
    status, view = api.request("GET", f"/v1/orders/{reply['order_id']}", token=token)
    assert (view["type"], view["stop_price"], view["triggered"], view["status"]) == (
        order["type"], order["stop_price"], False, "NEW"
    )  # fmt: skip
    assert "expire_at_ms" not in view


def test_a_gtd_order_is_queued_with_its_expiry(api: Server, db: sync_redis.Redis) -> None:
    _, token = funded(api, USD=1_000_000)
    order = buy(50_000, 10, time_in_force="GTD", expire_at_ms=IN_AN_HOUR)
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202, reply
    _, view = api.request("GET", f"/v1/orders/{reply['order_id']}", token=token)
    assert (view["time_in_force"], view["expire_at_ms"]) == ("GTD", IN_AN_HOUR)
    assert "stop_price" not in view and "triggered" not in view
    stream = keys.orders(keys.home_shard("BTC-USD", SHARDS))
    _, fields = db.xrevrange(stream, count=1)[0]
    command = CommandEntry.from_fields(fields).decode_command()
    assert (command.order_id, command.expire_at_ms) == (reply["order_id"], IN_AN_HOUR)


def test_a_stop_waiting_for_its_trigger_cannot_be_replaced(
    api: Server, db: sync_redis.Redis
) -> None:
    _, token = funded(api, USD=10_000_000)
    _, placed = api.request("POST", "/v1/orders", stop(50_100, 51_000), token=token)
    order_id = placed["order_id"]
    for status_now in ("NEW", "UNTRIGGERED"):
        db.hset(keys.order(order_id), "status", status_now)
        status, reply = api.request(
            "PATCH", f"/v1/orders/{order_id}", {"price": 50_200}, token=token
        )
        assert (status, reply["error"]) == (422, "STOP_NOT_REPLACEABLE"), reply
    # Triggered, a STOP_LIMIT rests as its limit order: that one is replaced like any.
    db.hset(keys.order(order_id), "status", "OPEN")
    status, _ = api.request("PATCH", f"/v1/orders/{order_id}", {"price": 50_200}, token=token)
    assert status == 202
    _, market = api.request(
        "POST", "/v1/orders", stop(None, 51_000, type="STOP_MARKET"), token=token
    )
    db.hset(keys.order(market["order_id"]), "status", "OPEN")  # triggered: it never rests
    status, reply = api.request(
        "PATCH", f"/v1/orders/{market['order_id']}", {"quantity": 5}, token=token
    )
    assert (status, reply["error"]) == (409, "ORDER_NOT_OPEN")
    assert balances(api, token)["USD"] == (10_000_000 - 501_000 - 550_000 - 502_000, 1_553_000)


def test_cancel_all_queues_one_cancel_all_per_symbol(api: Server, db: sync_redis.Redis) -> None:
    user, token = funded(api)
    before = {n: db.xlen(keys.orders(n)) for n in range(SHARDS)}
    status, reply = api.request("DELETE", "/v1/orders", token=token)
    assert status == 202
    assert reply == {
        "status": "CANCEL_ALL_REQUESTED",
        "symbols": ["BAND-USD", "BTC-USD", "ETH-USD"],
    }
    queued = []
    for n in range(SHARDS):
        for _, fields in db.xrange(keys.orders(n))[before[n] :]:
            queued.append(CommandEntry.from_fields(fields).decode_command())
    assert sorted(queued, key=lambda c: c.symbol) == [
        CancelAll(user_id=user, symbol=s) for s in ("BAND-USD", "BTC-USD", "ETH-USD")
    ]
    status, reply = api.request("DELETE", "/v1/orders?symbol=ETH-USD", token=token)
    assert (status, reply["symbols"]) == (202, ["ETH-USD"])
    status, reply = api.request("DELETE", "/v1/orders?symbol=XYZ-USD", token=token)
    assert (status, reply["error"]) == (422, "UNKNOWN_SYMBOL")
    status, reply = api.request("DELETE", "/v1/orders?symbol=" + "A" * 40, token=token)
    assert (status, reply["error"]) == (400, "MALFORMED")
    assert api.request("DELETE", "/v1/orders")[0] == 401


def test_average_price_is_notional_over_filled(api: Server, db: sync_redis.Redis) -> None:
    _, token = funded(api, USD=1_000_000)
    _, reply = api.request("POST", "/v1/orders", buy(50_000, 10), token=token)
    order_id = reply["order_id"]
    # What a worker writes after two fills: 3 @ 49_990 and 2 @ 50_000.
    db.hset(
        keys.order(order_id),
        mapping={"filled": 5, "remaining": 5, "notional": 249_970, "status": "PARTIALLY_FILLED"},
    )

    _, view = api.request("GET", f"/v1/orders/{order_id}", token=token)

    assert (view["status"], view["filled"], view["average_price"]) == (
        "PARTIALLY_FILLED",
        5,
        49_994,
    )


def test_duplicate_client_order_id_is_409_with_the_original_id(api: Server) -> None:
    _, token = funded(api, USD=1_000_000)
    order = buy(50_000, 5, client_order_id="my-1")
    status, first = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202

    status, reply = api.request("POST", "/v1/orders", order, token=token)

    assert status == 409
    assert reply["error"] == "DUPLICATE_CLIENT_ORDER_ID"
    assert reply["order_id"] == first["order_id"]
    assert balances(api, token)["USD"] == (750_000, 250_000)  # held once


def test_cancel_and_replace_are_queued(api: Server) -> None:
    _, token = funded(api, USD=10_000_000)
    _, placed = api.request("POST", "/v1/orders", buy(50_000, 10), token=token)
    path = f"/v1/orders/{placed['order_id']}"

    assert api.request("PATCH", path, {"price": 50_010}, token=token)[0] == 202
    status, reply = api.request("PATCH", path, {"quantity": 20}, token=token)
    assert (status, reply["error"]) == (409, "REPLACE_PENDING")
    status, reply = api.request("DELETE", path, token=token)
    assert status == 202
    assert reply == {"order_id": placed["order_id"], "status": "CANCEL_REQUESTED"}


def test_replace_follows_the_symbol_rules(api: Server) -> None:
    _, token = funded(api, USD=10_000_000)
    _, placed = api.request("POST", "/v1/orders", buy(50_000, 10), token=token)
    path = f"/v1/orders/{placed['order_id']}"

    for change, error in [
        ({}, "REPLACE_WITHOUT_CHANGE"),
        ({"price": 50_001}, "PRICE_OFF_TICK"),
        ({"price": 60_000}, "PRICE_OUT_OF_BAND"),
        ({"quantity": 7}, "QUANTITY_OFF_LOT"),
    ]:
        status, reply = api.request("PATCH", path, change, token=token)
        assert (status, reply["error"]) == (422, error), change


def test_an_order_of_another_user_is_404(api: Server) -> None:
    _, owner = funded(api, USD=1_000_000)
    _, other = funded(api)
    _, placed = api.request("POST", "/v1/orders", buy(50_000, 5), token=owner)
    path = f"/v1/orders/{placed['order_id']}"

    for method, body in [("GET", None), ("DELETE", None), ("PATCH", {"price": 50_010})]:
        status, reply = api.request(method, path, body, token=other)
        assert (status, reply["error"]) == (404, "UNKNOWN_ORDER"), method
    # An id Redis does not hold is the database's to answer, and this API has none
    # (test_api_history.py has the 404).
    # A cancel or replace of it too: it may be an order that ended and left Redis.
    for method, body in [("GET", None), ("DELETE", None), ("PATCH", {"price": 50_010})]:
        status, reply = api.request(method, "/v1/orders/999999999", body, token=owner)
        assert (status, reply["error"]) == (503, "NO_DATABASE"), method
    assert api.request("GET", "/v1/orders/abc", token=owner)[0] == 404


def test_deposit_and_withdrawal(api: Server) -> None:
    user, token = funded(api, USD=1_000)
    transfer = {"user_id": user, "asset": "USD", "amount": 400}

    status, reply = api.request("POST", "/v1/admin/withdrawals", transfer, token=admin())
    assert (status, reply) == (200, {"user_id": user, "asset": "USD", "available": 600})

    status, reply = api.request(
        "POST", "/v1/admin/withdrawals", transfer | {"amount": 601}, token=admin()
    )
    assert (status, reply["error"]) == (422, "INSUFFICIENT_BALANCE")
    status, reply = api.request(
        "POST", "/v1/admin/deposits", transfer | {"asset": "DOGE"}, token=admin()
    )
    assert (status, reply["error"]) == (422, "UNKNOWN_ASSET")
    status, reply = api.request(
        "POST", "/v1/admin/deposits", transfer | {"amount": 0}, token=admin()
    )
    assert status == 400
    assert balances(api, token) == {"USD": (600, 0)}


@pytest.mark.parametrize(
    "change",
    [{"reference": "bank\u0000ref"}, {"reference": "a\x7fb"}, {"user_id": "{user}\n"}],
)
def test_transfer_text_the_database_cannot_store_is_400(
    api: Server, change: dict[str, str]
) -> None:
    user, token = funded(api, USD=1_000)
    transfer = {"user_id": user, "asset": "USD", "amount": 1} | change
    transfer["user_id"] = transfer["user_id"].format(user=user)

    status, reply = api.request("POST", "/v1/admin/deposits", transfer, token=admin())

    assert (status, reply["error"]) == (400, "MALFORMED")
    assert balances(api, token) == {"USD": (1_000, 0)}


# -- every error class ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"symbol": "BTC-USD", "side": "BUY"', "truncated"),
        (b'{"symbol": BTC-USD}', "malformed"),
        (b"[1, 2]", "Expected `object`"),
        (b"", "truncated"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":50000,"quantity":5,"colour":1}', "colour"),
        # 50000.0 is the integer 50000 to JSON Schema, so taken; a fraction is no price
        (b'{"symbol":"BTC-USD","side":"BUY","price":50000.5,"quantity":5}', "$.price"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":"50000","quantity":5}', "$.price"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":50000,"quantity":true}', "$.quantity"),
        (b'{"symbol":"BTC-USD","side":"HOLD","price":50000,"quantity":5}', "$.side"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":50000}', "quantity"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":1e400,"quantity":5}', "$.price"),
        (b'{"symbol":"BTC-USD","side":"BUY","price":99999999999999999999,"quantity":5}', "<="),
        (b'{"symbol":"BTC-USD","side":"BUY","quantity":5,"client_order_id":""}', "$.client"),
        # PostgreSQL cannot store NUL: accepted, it stopped every later flush (issue #19)
        (
            b'{"symbol":"BTC-USD","side":"BUY","price":50000,"quantity":5,'
            b'"client_order_id":"a\\u0000b"}',
            "$.client_order_id",
        ),
        (
            b'{"symbol":"BTC-USD","side":"BUY","price":50000,"quantity":5,'
            b'"client_order_id":"a\\n"}',
            "$.client_order_id",
        ),
    ],
)
def test_a_malformed_body_is_400(api: Server, raw: bytes, fragment: str) -> None:
    _, token = funded(api)

    status, reply = api.request("POST", "/v1/orders", raw=raw, token=token)

    assert status == 400
    assert reply["error"] == "MALFORMED"
    assert fragment.lower() in reply["message"].lower()


@pytest.mark.parametrize(
    ("order", "error"),
    [
        # stops: the band 45_000..55_000 around 50_000, no trade yet
        (stop(50_000), "STOP_PRICE_REQUIRED"),
        (stop(None, 51_000), "PRICE_REQUIRED"),
        (stop(50_000, 51_005), "STOP_PRICE_OFF_TICK"),
        (stop(50_000, 0), "STOP_PRICE_NOT_POSITIVE"),
        (stop(50_000, 55_010), "STOP_PRICE_OUT_OF_BAND"),
        (stop(50_000, 50_000), "STOP_WOULD_TRIGGER"),  # a buy stop at or below the last price
        (stop(50_000, 51_000, side="SELL"), "STOP_WOULD_TRIGGER"),  # a sell one at or above
        (stop(50_000, 51_000, time_in_force="FOK"), "TIME_IN_FORCE_NOT_ALLOWED"),
        (stop(50_000, 51_000, post_only=True), "POST_ONLY_NOT_GTC_LIMIT"),
        (stop(50_000, 51_000, type="STOP_MARKET"), "PRICE_NOT_ALLOWED"),
        (stop(None, 10, symbol="ETH-USD", type="STOP_MARKET"), "MARKET_BUY_WITHOUT_BAND"),
        (stop(50_000, 51_000, quantity=1000), "INSUFFICIENT_BALANCE"),
        (buy(stop_price=51_000), "STOP_PRICE_NOT_ALLOWED"),
        # GTD: ahead of now, at most 90 days
        (buy(time_in_force="GTD"), "EXPIRE_AT_REQUIRED"),
        (buy(expire_at_ms=IN_AN_HOUR), "EXPIRE_AT_NOT_ALLOWED"),
        (buy(time_in_force="GTD", expire_at_ms=AN_HOUR_AGO), "EXPIRE_AT_PASSED"),
        (buy(time_in_force="GTD", expire_at_ms=IN_A_YEAR), "EXPIRE_AT_TOO_FAR"),
        (
            buy(None, type="MARKET", time_in_force="GTD", expire_at_ms=IN_AN_HOUR),
            "TIME_IN_FORCE_NOT_ALLOWED",
        ),  # fmt: skip
        (buy() | {"symbol": "XYZ-USD"}, "UNKNOWN_SYMBOL"),
        (buy(50_005), "PRICE_OFF_TICK"),
        (buy(0), "PRICE_NOT_POSITIVE"),
        (buy(quantity=7), "QUANTITY_OFF_LOT"),
        (buy(quantity=0), "QUANTITY_BELOW_MIN"),
        (buy(quantity=1005), "QUANTITY_ABOVE_MAX"),
        (buy(44_990), "PRICE_OUT_OF_BAND"),
        (buy(55_010), "PRICE_OUT_OF_BAND"),
        (buy(50_000, type="MARKET"), "PRICE_NOT_ALLOWED"),
        (buy(None), "PRICE_REQUIRED"),
        (buy(post_only=True, time_in_force="IOC"), "POST_ONLY_NOT_GTC_LIMIT"),
        (buy(None, type="MARKET", post_only=True), "POST_ONLY_NOT_GTC_LIMIT"),
        (buy(None, symbol="ETH-USD", type="MARKET"), "MARKET_BUY_WITHOUT_BAND"),
        (buy(50_000, 1000), "INSUFFICIENT_BALANCE"),
        (buy(10**13, 1000, symbol="ETH-USD"), "AMOUNT_TOO_LARGE"),
    ],
)
def test_a_broken_rule_is_422(api: Server, order: dict[str, Any], error: str) -> None:
    _, token = funded(api, USD=1_000_000)

    status, reply = api.request("POST", "/v1/orders", order, token=token)

    assert (status, reply["error"]) == (422, error), reply
    assert reply["message"]
    assert balances(api, token) == {"USD": (1_000_000, 0)}


def test_the_band_follows_the_last_trade(api: Server, db: sync_redis.Redis) -> None:
    _, token = funded(api, USD=10_000_000)
    order = {"symbol": "BAND-USD", "side": "BUY", "price": 10_150, "quantity": 1}
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert (status, reply["error"]) == (422, "PRICE_OUT_OF_BAND")

    db.set(keys.last_price("BAND-USD"), 10_100)  # band now 9_999..10_201
    deadline = time.monotonic() + 5
    while (status := api.request("POST", "/v1/orders", order, token=token)[0]) == 422:
        assert time.monotonic() < deadline, "the band never moved"
        time.sleep(0.05)
    assert status == 202


def test_auth_failures_are_401(api: Server) -> None:
    expired = make_token("someone", secret=SECRET, ttl_s=-10)
    forged = make_token("someone", secret="another-secret-of-at-least-32-bytes")
    for headers, error in [
        ({}, "UNAUTHENTICATED"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer not.a.jwt"}, "INVALID_TOKEN"),
        ({"Authorization": f"Bearer {forged}"}, "INVALID_TOKEN"),
        ({"Authorization": f"Bearer {expired}"}, "TOKEN_EXPIRED"),
    ]:
        for method, path in [("POST", "/v1/orders"), ("GET", "/v1/balances")]:
            status, reply = api.request(method, path, buy(), headers=headers)
            assert (status, reply["error"]) == (401, error), (headers, path)


def test_deposits_need_an_admin_token_403(api: Server) -> None:
    user, token = funded(api)
    transfer = {"user_id": user, "asset": "USD", "amount": 1}

    for path in ("/v1/admin/deposits", "/v1/admin/withdrawals"):
        status, reply = api.request("POST", path, transfer, token=token)
        assert (status, reply["error"]) == (403, "FORBIDDEN")


def test_unknown_path_404_and_wrong_method_405(api: Server) -> None:
    _, token = funded(api)

    assert api.request("GET", "/v2/orders", token=token)[0] == 404
    assert api.request("GET", "/v1/orders/", token=token)[0] == 404
    assert api.request("GET", "/v1/book/NOPE-USD")[0] == 404
    status, reply = api.request("PUT", "/v1/orders", token=token)
    assert (status, reply["error"]) == (405, "METHOD_NOT_ALLOWED")
    assert api.request("PUT", "/v1/orders/1", {}, token=token)[0] == 405
    assert api.request("POST", "/healthz")[0] == 405


def test_a_body_over_the_limit_is_413(api: Server) -> None:
    _, token = funded(api)
    big = b'{"symbol": "' + b"x" * MAX_BODY + b'"}'

    status, reply = api.request("POST", "/v1/orders", raw=big, token=token)
    assert (status, reply["error"]) == (413, "BODY_TOO_LARGE")

    def chunks() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/orders",
            body=chunks(),
            headers={"Authorization": f"Bearer {token}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413
        response.read()
    finally:
        conn.close()


# -- market data and operations -------------------------------------------------------------


def test_symbols_book_and_trades(api: Server, db: sync_redis.Redis) -> None:
    status, reply = api.request("GET", "/v1/symbols")
    assert status == 200
    assert [s["symbol"] for s in reply["symbols"]] == ["BAND-USD", "BTC-USD", "ETH-USD"]

    levels = [[50_000 - 10 * i, 5] for i in range(30)]
    db.set(keys.depth("ETH-USD"), json.dumps({"bids": levels, "asks": [], "seq": 42}))
    trade = Trade("ETH-USD", 43, 2_000, 3, 1, 2, "maker-user", "taker-user", Side.SELL)
    db.lpush(keys.trades("ETH-USD"), msgspec.json.encode(trade))

    status, book = api.request("GET", "/v1/book/ETH-USD")
    assert (status, len(book["bids"]), book["seq"]) == (200, 20, 42)
    status, book = api.request("GET", "/v1/book/ETH-USD?depth=3")
    assert book == {"symbol": "ETH-USD", "bids": levels[:3], "asks": [], "seq": 42}
    assert api.request("GET", "/v1/book/ETH-USD?depth=51")[0] == 400
    assert api.request("GET", "/v1/book/BTC-USD")[1]["bids"] == []

    status, trades = api.request("GET", "/v1/trades/ETH-USD?limit=5")
    assert (status, trades["trades"]) == (
        200,
        [{"seq": 43, "price": 2_000, "quantity": 3, "taker_side": "SELL"}],
    )
    assert api.request("GET", "/v1/trades/ETH-USD?limit=0")[0] == 400


def test_health_and_readiness(api: Server) -> None:
    assert api.request("GET", "/healthz") == (200, {"status": "ok"})
    assert api.request("GET", "/readyz") == (200, {"status": "ready"})


METRIC_LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')


def test_metrics_are_prometheus_text(api: Server) -> None:
    _, token = funded(api, USD=1_000_000)
    assert api.request("POST", "/v1/orders", buy(50_000, 5), token=token)[0] == 202

    status, text = api.request("GET", "/metrics")

    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert METRIC_LINE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    placed = 'spot_http_requests_total{method="POST",route="/v1/orders",status="202"}'
    assert samples[placed] >= 1
    histogram = 'spot_http_request_duration_seconds_count{method="POST",route="/v1/orders"}'
    assert samples[histogram] >= samples[placed]
    shard = keys.home_shard("BTC-USD", SHARDS)
    assert samples[f'spot_queue_depth{{shard="{shard}"}}'] >= 1
    assert all(f'spot_queue_depth{{shard="{s}"}}' in samples for s in range(SHARDS))


def test_openapi_lists_every_path(api: Server) -> None:
    status, document = api.request("GET", "/openapi.json")

    assert status == 200
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {
        "/v1/orders",
        "/v1/orders/{id}",
        "/v1/balances",
        "/v1/symbols",
        "/v1/book/{symbol}",
        "/v1/trades/{symbol}",
        "/v1/admin/deposits",
        "/v1/admin/withdrawals",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    schemas = document["components"]["schemas"]
    assert {"PlaceOrder", "OrderAccepted", "Error"} <= set(schemas)
    assert schemas["PlaceOrder"]["properties"]["price"]
    assert {"stop_price", "expire_at_ms"} <= set(schemas["PlaceOrder"]["properties"])
    assert {"stop_price", "triggered", "expire_at_ms"} <= set(schemas["OrderView"]["properties"])
    cancel_all = document["paths"]["/v1/orders"]["delete"]
    assert cancel_all["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CancelAllAccepted"
    }
    ref = document["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert ref["schema"]["$ref"] == "#/components/schemas/PlaceOrder"


def test_redis_down_is_503_not_500(tmp_path: Path) -> None:
    server = _start(f"redis://127.0.0.1:{free_port()}/15", tmp_path)
    try:
        assert server.request("GET", "/healthz")[0] == 200
        status, reply = server.request("GET", "/readyz")
        assert (status, reply["error"]) == (503, "UNAVAILABLE")
        status, _ = server.request("GET", "/v1/balances", token=user_token("anyone"))
        assert status == 503
    finally:
        stop_api(server)
