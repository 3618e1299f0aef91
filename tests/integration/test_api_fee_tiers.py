"""Fee tiers over real HTTP: the admin routes (PUT, GET, DELETE /v1/admin/fee-tiers/{user}),
their refusals, and the rates the API then puts into each order it queues, read back from
the orders stream. No matching worker runs: the queued command is what these tests need.
The tiers reach an API process that did not set them through its refresh (api/fee_tiers.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from api.fee_tiers import REFRESH_S
from schema import keys
from schema.fees import FeeTier
from schema.messages import Place
from schema.streams import CommandEntry
from schema.symbols import SymbolSpec
from store import fee_tiers
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, user_token

SHARDS = 10
SPEC = SymbolSpec(symbol="FEE-USD", base="FEE", quote="USD", maker_fee_bps=10, taker_fee_bps=20)
_users = itertools.count(1)


@pytest.fixture(scope="module")
def api(
    redis_url: str, aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    async def seed() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            await list_symbol(client, SPEC, SHARDS)
        finally:
            await client.aclose()

    aio.run(seed())
    server = start_api(tmp_path_factory.mktemp("api"), redis_url=redis_url, shards=str(SHARDS))
    try:
        yield server
    finally:
        stop_api(server)


@pytest.fixture(scope="module")
def db(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


def trader(api: Server) -> tuple[str, str]:
    user = f"tiered{next(_users)}"
    deposit = {"user_id": user, "asset": "USD", "amount": 10_000_000}
    assert api.request("POST", "/v1/admin/deposits", deposit, token=admin())[0] == 200
    return user, user_token(user)


def queued(api: Server, db: sync_redis.Redis, token: str) -> Place:
    """Place an order over HTTP; the command the API queued for it."""
    order = {"symbol": "FEE-USD", "side": "BUY", "price": 100, "quantity": 1}
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202, reply
    stream = keys.orders(keys.home_shard(SPEC.symbol, SHARDS))
    for _, fields in reversed(db.xrange(stream)):
        command = CommandEntry.from_fields(fields).decode_command()
        if command.order_id == reply["order_id"]:
            assert isinstance(command, Place)
            return command
    raise AssertionError("the order is not in its stream")


def tier_path(user: str) -> str:
    return f"/v1/admin/fee-tiers/{user}"


def test_a_tier_is_set_read_removed_and_carried_by_each_order(
    api: Server, db: sync_redis.Redis
) -> None:
    user, token = trader(api)
    before = queued(api, db, token)
    assert (before.maker_fee_bps, before.taker_fee_bps) == (None, None)  # the symbol's

    status, reply = api.request(
        "PUT", tier_path(user), {"maker_fee_bps": -2, "taker_fee_bps": 5}, token=admin()
    )
    assert (status, reply) == (200, {"user_id": user, "maker_fee_bps": -2, "taker_fee_bps": 5})
    assert api.request("GET", tier_path(user), token=admin()) == (200, reply)
    after = queued(api, db, token)
    assert (after.maker_fee_bps, after.taker_fee_bps) == (-2, 5)  # at once, on this process

    _, other = trader(api)
    untouched = queued(api, db, other)
    assert (untouched.maker_fee_bps, untouched.taker_fee_bps) == (None, None)

    assert api.request("DELETE", tier_path(user), token=admin()) == (200, reply)
    status, gone = api.request("GET", tier_path(user), token=admin())
    assert (status, gone["error"]) == (404, "NO_FEE_TIER")
    assert api.request("DELETE", tier_path(user), token=admin())[0] == 404
    last = queued(api, db, token)
    assert (last.maker_fee_bps, last.taker_fee_bps) == (None, None)


async def test_a_tier_set_elsewhere_applies_within_the_refresh(
    api: Server, db: sync_redis.Redis, redis_url: str
) -> None:
    # As `spot fee-tier` or another API process would: straight into Redis. (Not the
    # `redis` fixture: it flushes the module's symbols.)
    user, token = trader(api)
    client = Redis.from_url(redis_url)
    try:
        await fee_tiers.set_tier(client, user, FeeTier(0, 7))
        deadline = time.monotonic() + REFRESH_S * 3
        while queued(api, db, token).taker_fee_bps != 7:
            assert time.monotonic() < deadline, "the API never took the tier"
            await asyncio.sleep(0.1)
        await fee_tiers.delete_tier(client, user)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"maker_fee_bps": -6, "taker_fee_bps": 5}, 422, "FEE_RATE_INVALID"),  # rebate > fee
        ({"maker_fee_bps": 0, "taker_fee_bps": -1}, 422, "FEE_RATE_INVALID"),
        ({"maker_fee_bps": 0, "taker_fee_bps": 10_001}, 422, "FEE_RATE_INVALID"),
        ({"maker_fee_bps": 10_001, "taker_fee_bps": 0}, 422, "FEE_RATE_INVALID"),
        ({"maker_fee_bps": 1.5, "taker_fee_bps": 2}, 400, "MALFORMED"),
        ({"maker_fee_bps": "1", "taker_fee_bps": 2}, 400, "MALFORMED"),
        ({"maker_fee_bps": True, "taker_fee_bps": 2}, 400, "MALFORMED"),
        ({"maker_fee_bps": 1}, 400, "MALFORMED"),
        ({"maker_fee_bps": 1, "taker_fee_bps": 2, "vip": True}, 400, "MALFORMED"),
        ({"maker_fee_bps": 1, "taker_fee_bps": 2**70}, 400, "MALFORMED"),
    ],
)
def test_rates_that_break_the_rules_are_refused(
    api: Server, body: dict[str, Any], status: int, error: str
) -> None:
    user, _ = trader(api)
    got, reply = api.request("PUT", tier_path(user), body, token=admin())
    assert (got, reply["error"]) == (status, error), reply
    assert api.request("GET", tier_path(user), token=admin())[0] == 404  # nothing was set


@pytest.mark.parametrize("user", ["~fees", "a:b", "x" * 65, "%7Efees"])
def test_a_path_that_names_no_user_is_400(api: Server, user: str) -> None:
    for method in ("PUT", "GET", "DELETE"):
        body = {"maker_fee_bps": 0, "taker_fee_bps": 0} if method == "PUT" else None
        status, reply = api.request(method, tier_path(user), body, token=admin())
        assert (status, reply["error"]) == (400, "MALFORMED"), (method, reply)


def test_tiers_are_for_admins(api: Server) -> None:
    user, token = trader(api)
    body = {"maker_fee_bps": -10, "taker_fee_bps": 10}
    assert api.request("PUT", tier_path(user), body, token=token)[1]["error"] == "FORBIDDEN"
    assert api.request("GET", tier_path(user), token=token)[0] == 403
    assert api.request("DELETE", tier_path(user))[0] == 401


def test_openapi_has_the_tier_routes(api: Server) -> None:
    document = api.request("GET", "/openapi.json")[1]
    assert set(document["paths"]["/v1/admin/fee-tiers/{user_id}"]) == {"put", "get", "delete"}
