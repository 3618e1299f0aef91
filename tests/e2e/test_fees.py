"""Fees end to end: a running stack (the API, a matching worker and the batcher, each its own
`spot` process, on real Redis and PostgreSQL), driven over HTTP alone, with a fee tier set
by `spot fee-tier`; then every balance is what the fee rules say to the minor unit, the
fills and the ledger say so too, and `spot audit` is clean.

The symbol charges makers 10 bps and takers 25 bps; the VIP's tier is maker -5 (a rebate),
taker 15. Fees round up, rebates down, each in what its side receives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from api.fee_tiers import REFRESH_S
from schema import keys
from schema.fees import FEE_ACCOUNT
from schema.symbols import SymbolSpec
from schema.tables import metadata
from store import db
from store.symbols import list_symbol
from tests.integration.http import (
    ROOT,
    SECRET,
    Server,
    admin,
    start_api,
    stop_api,
    user_token,
)

SHARDS = 10
SPEC = SymbolSpec(symbol="FEES-USD", base="FEES", quote="USD", maker_fee_bps=10, taker_fee_bps=25)
WAIT_S = 30.0


@pytest.fixture
def stack(
    redis: Redis, redis_url: str, database_url: str, aio: asyncio.Runner, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, str]]]:
    """An empty Redis DB (the `redis` fixture flushed it) and database, the symbol listed;
    the API, a worker and the batcher running; and the environment a `spot` command needs
    to reach the same stack."""
    url = redis_url

    async def prepare() -> None:
        await asyncio.to_thread(db.upgrade, database_url)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f"TRUNCATE {', '.join(metadata.tables)}")
        finally:
            await conn.close()
        await list_symbol(redis, SPEC, SHARDS)

    aio.run(prepare())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {
        "SPOT_REDIS_URL": url,
        "SPOT_DATABASE_URL": database_url,
        "SPOT_SHARDS": str(SHARDS),
        "SPOT_JWT_SECRET": SECRET,
    }
    processes = []
    for part in ("worker", "batcher"):
        with (tmp_path / f"{part}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "spot.cli", part],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    api = start_api(tmp_path, redis_url=url, database_url=database_url, shards=str(SHARDS))
    try:
        yield api, env
    finally:
        stop_api(api)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def spot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spot.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def until(api: Server, path: str, token: str, done: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        status, body = api.request("GET", path, token=token)
        if status == 200 and done(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {status} {body}"
        time.sleep(0.05)


def place(api: Server, token: str, side: str, price: int, quantity: int) -> int:
    order = {"symbol": SPEC.symbol, "side": side, "price": price, "quantity": quantity}
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202, reply
    order_id = int(reply["order_id"])
    until(api, f"/v1/orders/{order_id}", token, lambda o: o["status"] != "NEW")
    return order_id


def balances(api: Server, token: str) -> dict[str, tuple[int, int]]:
    status, reply = api.request("GET", "/v1/balances", token=token)
    assert status == 200, reply
    return {b["asset"]: (b["available"], b["locked"]) for b in reply["balances"]}


def test_a_maker_a_taker_and_a_tier_pay_exactly_their_fees_and_the_audit_is_clean(
    stack: tuple[Server, dict[str, str]], redis: Redis, database_url: str, aio: asyncio.Runner
) -> None:
    api, env = stack
    tokens = {user: user_token(user) for user in ("maker", "taker", "vip")}
    for user, asset, amount in (
        ("maker", "FEES", 10_000),
        ("taker", "USD", 2_000_000),
        ("vip", "USD", 7_000_000),
    ):
        deposit = {"user_id": user, "asset": asset, "amount": amount}
        assert api.request("POST", "/v1/admin/deposits", deposit, token=admin())[0] == 200

    tier = spot(env, "fee-tier", "vip", "--maker-bps", "-5", "--taker-bps", "15")
    assert tier.returncode == 0, tier.stderr
    assert "vip: maker -5 bps, taker 15 bps" in tier.stdout
    assert api.request("GET", "/v1/admin/fee-tiers/vip", token=admin()) == (
        200,
        {"user_id": "vip", "maker_fee_bps": -5, "taker_fee_bps": 15},
    )
    time.sleep(REFRESH_S * 2.5)  # the API process did not set it: its refresh brings it

    maker, taker, vip = tokens["maker"], tokens["taker"], tokens["vip"]
    resting = place(api, maker, "SELL", 2_000, 10_000)
    # 400 @ 2_000: the taker gets 400 FEES less 25 bps (1.0 -> 1), the maker 800_000 USD
    # less 10 bps (800)
    place(api, taker, "BUY", 2_000, 400)
    # 3_000 @ 2_000: the VIP takes at its 15 bps (4.5 -> 5; the symbol's 25 would be 8);
    # the maker pays 6_000 of 6_000_000
    place(api, vip, "BUY", 2_000, 3_000)
    assert api.request("DELETE", f"/v1/orders/{resting}", token=maker)[0] == 202
    until(api, f"/v1/orders/{resting}", maker, lambda o: o["status"] == "CANCELED")
    # 203 @ 2_101 = 426_503: the VIP makes at a 5 bp rebate (213.25 -> 213); the taker pays
    # 25 bps of 203 (0.5075 -> 1)
    until(api, "/v1/balances", vip, lambda b: any(x["asset"] == "FEES" for x in b["balances"]))
    place(api, vip, "SELL", 2_101, 203)
    place(api, taker, "BUY", 2_101, 203)

    expected = {
        "maker": {"FEES": (6_600, 0), "USD": (800_000 - 800 + 6_000_000 - 6_000, 0)},
        "taker": {"FEES": (400 - 1 + 203 - 1, 0), "USD": (2_000_000 - 800_000 - 426_503, 0)},
        "vip": {"FEES": (3_000 - 5 - 203, 0), "USD": (7_000_000 - 6_000_000 + 426_503 + 213, 0)},
    }
    for user, amounts in expected.items():
        until(api, "/v1/balances", tokens[user], lambda b, a=amounts: _as_dict(b) == a)
    # Per asset, the users and the fee account hold exactly what was deposited.
    fees = {"FEES": 1 + 5 + 1, "USD": 800 + 6_000 - 213}
    for asset, deposited in (("FEES", 10_000), ("USD", 9_000_000)):
        held = sum(sum(amounts[asset]) for amounts in expected.values())
        assert held + fees[asset] == deposited

    # The fills, once the batcher has written them, name each fee and its asset.
    fills = until(api, "/v1/fills", vip, lambda f: len(f["fills"]) == 2)["fills"]
    assert [(f["liquidity"], f["side"], f["fee"], f["fee_asset"]) for f in fills] == [
        ("MAKER", "SELL", -213, "USD"),
        ("TAKER", "BUY", 5, "FEES"),
    ]
    maker_fills = until(api, "/v1/fills", maker, lambda f: len(f["fills"]) == 2)["fills"]
    assert [(f["fee"], f["fee_asset"]) for f in maker_fills] == [(6_000, "USD"), (800, "USD")]
    # The ledger adds up to each user's balances.
    for user, amounts in expected.items():
        status, ledger = api.request("GET", "/v1/ledger", token=tokens[user])
        assert status == 200, ledger
        totals: dict[str, int] = {}
        for entry in ledger["entries"]:
            totals[entry["asset"]] = totals.get(entry["asset"], 0) + entry["amount"]
        assert totals == {asset: sum(pair) for asset, pair in amounts.items()}, user

    # No user can ask for the fee account's balances: Redis and the database hold them.
    in_redis = aio.run(redis.hgetall(keys.balance(FEE_ACCOUNT)))
    assert {k.decode(): int(v) for k, v in in_redis.items()} == {
        keys.available("FEES"): fees["FEES"],
        keys.available("USD"): fees["USD"],
    }
    audit = spot(env, "audit", "--wait", "30")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "ok   fees" in audit.stdout and "audit: clean" in audit.stdout
    assert FEE_ACCOUNT not in audit.stdout  # nothing about it is out of place
    assert aio.run(_fee_rows(database_url)) == [("FEES", fees["FEES"], 0), ("USD", fees["USD"], 0)]


async def _fee_rows(url: str) -> list[tuple[str, int, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT asset, available, locked FROM balances WHERE user_id = $1 ORDER BY asset",
            FEE_ACCOUNT,
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


def _as_dict(reply: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {b["asset"]: (b["available"], b["locked"]) for b in reply["balances"]}
