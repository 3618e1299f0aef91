"""The admin migration API over real HTTP: a Granian server in a subprocess, a matching
worker process for every shard but one (DEAD, so that a step can be made to time out), on a
real Redis. A migration started by POST runs in the API process to its end; the symbol then
trades on its new shard. The DB is flushed and seeded once for the module, so tests here never
use the `redis` fixture (it flushes); each test moves its own symbols.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from control import migration
from schema import keys
from schema.symbols import SymbolSpec
from store.symbols import list_symbol
from tests.integration.http import ROOT, Server, admin, start_api, stop_api, user_token

SHARDS = 10
DEAD = 9  # no worker owns it: a migration to it times out in TRANSFER
TTL_S = 86_400  # SPOT_MIGRATION_TTL_S of the API under test
WAIT_S = 90.0  # generous: the machine is shared
PRICE = 10_000


def _spec(symbol: str) -> SymbolSpec:
    return SymbolSpec(symbol=symbol, base=symbol, quote="USD", band_bps=2000, reference_price=PRICE)


# Home shards (keys.home_shard over 10): AAPL 2, MSFT 1, NFLX 7, AMZN 6, TSLA 5; none is DEAD.
SYMBOLS = ("AAPL", "MSFT", "NFLX", "AMZN", "TSLA")


async def _seed(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        for symbol in SYMBOLS:
            assert await list_symbol(client, _spec(symbol), SHARDS) != DEAD
    finally:
        await client.aclose()


def _start_workers(redis_url: str, shards: list[int], folder: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {"SPOT_REDIS_URL": redis_url, "SPOT_SHARDS": str(SHARDS)}
    log = folder / f"worker-{shards[0]}.log"
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "spot.cli", "worker", "--shards", ",".join(map(str, shards))],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _start_api(redis_url: str, folder: Path) -> Server:
    return start_api(folder, redis_url=redis_url, shards=str(SHARDS), migration_ttl_s=str(TTL_S))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-migrations")


@pytest.fixture(scope="module")
def api(redis_url: str, aio: Any, folder: Path) -> Iterator[Server]:
    aio.run(_seed(redis_url))
    workers = _start_workers(redis_url, [n for n in range(SHARDS) if n != DEAD], folder)
    try:
        server = _start_api(redis_url, folder)
        try:
            yield server
        finally:
            stop_api(server)
    finally:
        _stop(workers)


@pytest.fixture(scope="module")
def db(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def traders(api: Server) -> tuple[str, str]:
    """Tokens of two users holding USD and every symbol's base asset."""
    tokens = []
    for user in ("alice", "bob"):
        for asset in ("USD", *SYMBOLS):
            status, reply = api.request(
                "POST",
                "/v1/admin/deposits",
                {"user_id": user, "asset": asset, "amount": 10**12},
                token=admin(),
            )
            assert status == 200, reply
        tokens.append(user_token(user))
    return tokens[0], tokens[1]


# -- helpers --------------------------------------------------------------------------------


def start(api: Server, symbol: str, to_shard: int, **extra: Any) -> dict[str, Any]:
    body = {"symbol": symbol, "to_shard": to_shard, **extra}
    status, reply = api.request("POST", "/v1/admin/migrations", body, token=admin())
    assert status == 202, reply
    return reply


def finished(api: Server, migration_id: str) -> dict[str, Any]:
    """Polls GET /v1/admin/migrations/{id} until the migration has ended."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, reply = api.request("GET", f"/v1/admin/migrations/{migration_id}", token=admin())
        assert status == 200, reply
        if reply["step"] == "DONE":
            return reply
        time.sleep(0.05)
    raise AssertionError(f"migration {migration_id} did not end: {reply}")


def place(api: Server, token: str, symbol: str, side: str, quantity: int = 10) -> int:
    order = {"symbol": symbol, "side": side, "price": PRICE, "quantity": quantity}
    status, reply = api.request("POST", "/v1/orders", order, token=token)
    assert status == 202, reply
    return int(reply["order_id"])


def order_status(api: Server, token: str, order_id: int, *wanted: str) -> str:
    """Polls the order until its status is one of `wanted`; returns it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, reply = api.request("GET", f"/v1/orders/{order_id}", token=token)
        assert status == 200, reply
        if reply["status"] in wanted:
            return str(reply["status"])
        time.sleep(0.05)
    raise AssertionError(f"order {order_id} is {reply['status']}, not one of {wanted}")


def route(db: sync_redis.Redis, symbol: str) -> tuple[int, bytes]:
    shard, status = db.hmget(keys.route(symbol), ["shard", "status"])
    return int(shard), status


def assert_expires(db: sync_redis.Redis, migration_id: str) -> None:
    """The finished record expires within SPOT_MIGRATION_TTL_S; so does its handoff."""
    assert 0 < db.ttl(keys.migration(migration_id)) <= TTL_S
    if db.exists(keys.handoff(migration_id)):
        assert 0 < db.ttl(keys.handoff(migration_id)) <= TTL_S
    assert not db.exists(keys.migrating(migration_id.rpartition("-")[0]))
    assert db.zscore(keys.MIGRATIONS_RUNNING, migration_id) is None
    assert db.zscore(keys.MIGRATIONS_FINISHED, migration_id) is not None


def metrics(api: Server) -> dict[str, float]:
    status, text = api.request("GET", "/metrics")
    assert status == 200
    return {
        name: float(value)
        for name, value in re.findall(r"^(spot_migration\S*) (\S+)$", text, re.MULTILINE)
    }


# -- a migration, start to end --------------------------------------------------------------


def test_a_migration_moves_the_symbol_and_it_trades_on_the_new_shard(
    api: Server, db: sync_redis.Redis, traders: tuple[str, str]
) -> None:
    alice, bob = traders
    home, target = route(db, "AAPL")[0], 4
    resting = place(api, alice, "AAPL", "SELL")
    assert order_status(api, alice, resting, "OPEN") == "OPEN"

    # Orders keep coming during the migration: some wait in pending:AAPL and are replayed.
    during: list[int] = []
    refused: list[Any] = []
    stop = threading.Event()

    def flow() -> None:
        while not stop.is_set():
            order = {"symbol": "AAPL", "side": "BUY", "price": PRICE - 100, "quantity": 1}
            status, reply = api.request("POST", "/v1/orders", order, token=bob)
            if status != 202:
                refused.append(reply)
                return
            during.append(int(reply["order_id"]))
            time.sleep(0.005)

    thread = threading.Thread(target=flow)
    thread.start()
    try:
        time.sleep(0.2)
        started = start(api, "AAPL", target, timeout_s=30)
        done = finished(api, started["id"])
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()

    assert (started["symbol"], started["from_shard"], started["to_shard"]) == ("AAPL", home, target)
    assert started["state"] == "RUNNING"
    assert (done["state"], done["step"], done["epoch"]) == ("DONE", "DONE", 1)
    assert [s["step"] for s in done["steps"]] == list(migration.STEPS)
    assert all(s["duration_ms"] == s["end_ms"] - s["start_ms"] >= 0 for s in done["steps"])
    assert done["paused_for_ms"] == done["switched_ms"] - done["paused_ms"] >= 0
    assert done["pending"] >= 0 and "rollback_reason" not in done
    assert done["expires_ms"] == done["finished_ms"] + TTL_S * 1000
    assert route(db, "AAPL") == (target, b"ACTIVE")
    assert_expires(db, started["id"])

    # The book moved: a buy placed now trades with the sell that rested on the old shard.
    taker = place(api, bob, "AAPL", "BUY")
    assert order_status(api, bob, taker, "FILLED") == "FILLED"
    assert order_status(api, alice, resting, "FILLED") == "FILLED"
    assert not refused and len(during) > 5
    steps = ", ".join(f"{s['step']} {s['duration_ms']}" for s in done["steps"])
    print(
        f"\nAAPL {home}->{target} over HTTP: paused {done['paused_for_ms']} ms, "
        f"{done['pending']} orders buffered and replayed of {len(during)} sent during; "
        f"steps (ms): {steps}"
    )
    for order_id in during:  # each applied once, none lost in the pause
        assert order_status(api, bob, order_id, "OPEN") == "OPEN"


def test_a_step_that_times_out_rolls_back_and_expires_too(
    api: Server, db: sync_redis.Redis, traders: tuple[str, str]
) -> None:
    alice, bob = traders
    home = route(db, "MSFT")[0]
    resting = place(api, alice, "MSFT", "SELL")
    order_status(api, alice, resting, "OPEN")

    done = finished(api, start(api, "MSFT", DEAD, timeout_s=0.5)["id"])

    assert (done["state"], done["rolled_back_at"]) == ("ROLLED_BACK", "TRANSFER")
    assert f"shard {DEAD}" in done["rollback_reason"]
    assert "ROLLBACK" in [s["step"] for s in done["steps"]]
    assert route(db, "MSFT") == (home, b"ACTIVE")
    assert_expires(db, done["id"])
    # The source took its book back: the resting sell still trades there.
    taker = place(api, bob, "MSFT", "BUY")
    assert order_status(api, bob, taker, "FILLED") == "FILLED"


# -- listing, conflicts, metrics, status ------------------------------------------------------


async def test_one_migration_at_a_time_and_the_list_shows_running_ones_first(
    api: Server, db: sync_redis.Redis, redis_url: str
) -> None:
    client = Redis.from_url(redis_url)
    try:
        # A migration whose orchestrator never ran a step: it stays RUNNING at PAUSE.
        stuck = await migration.start(client, "NFLX", 8, timeout_s=30, ttl_s=TTL_S)
        for to_shard in (8, 0):  # to the same target or another one: the same answer
            status, reply = api.request(
                "POST",
                "/v1/admin/migrations",
                {"symbol": "NFLX", "to_shard": to_shard},
                token=admin(),
            )
            assert (status, reply["error"], reply["migration_id"]) == (
                409,
                "MIGRATION_RUNNING",
                stuck,
            )
        status, view = api.request("GET", f"/v1/admin/migrations/{stuck}", token=admin())
        assert status == 200
        assert (view["state"], view["step"], view["steps"]) == ("RUNNING", "PAUSE", [])
        assert "expires_ms" not in view and db.ttl(keys.migration(stuck)) == -1

        other = finished(api, start(api, "AMZN", 0)["id"])
        status, listed = api.request("GET", "/v1/admin/migrations", token=admin())
        assert status == 200
        ids = [m["id"] for m in listed["migrations"]]
        assert ids[:2] == [stuck, other["id"]]  # running first, then the newest finished
        _check_order(listed["migrations"])
        status, one = api.request("GET", "/v1/admin/migrations?limit=1", token=admin())
        assert [m["id"] for m in one["migrations"]] == [stuck]

        # Its orchestrator resumes it (as `spot migrate` would): now it is the newest finished.
        await migration.run(client, stuck)
        assert route(db, "NFLX") == (8, b"ACTIVE")
        assert_expires(db, stuck)
        status, listed = api.request("GET", "/v1/admin/migrations", token=admin())
        assert [m["id"] for m in listed["migrations"]][:2] == [stuck, other["id"]]
        _check_order(listed["migrations"])
    finally:
        await client.aclose()

    # /metrics: read from Redis at most once a second.
    deadline = time.monotonic() + WAIT_S
    while (found := metrics(api)).get('spot_migrations_total{state="DONE"}', 0) < 2:
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert found["spot_migrations_running"] == 0
    assert found["spot_migration_last_pause_ms"] >= 0

    # `spot status` lists them, one line each.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {"SPOT_REDIS_URL": redis_url, "SPOT_SHARDS": str(SHARDS)}
    out = subprocess.run(
        [sys.executable, "-m", "spot.cli", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    head = next(n for n, line in enumerate(lines) if line.startswith("migrations:"))
    assert lines[head + 1].split() == [
        "id",
        "symbol",
        "shards",
        "state",
        "step",
        "paused",
        "pending",
        "started",
    ]
    assert lines[head + 2].split()[:5] == [stuck, "NFLX", "7->8", "DONE", "DONE"]
    assert any(line.split()[0] == other["id"] for line in lines[head + 2 :])
    print("\n" + "\n".join(lines[head:]))


def _check_order(listed: list[dict[str, Any]]) -> None:
    running = [m for m in listed if m["step"] != "DONE"]
    ended = [m for m in listed if m["step"] == "DONE"]
    assert listed == running + ended
    assert [m["created_ms"] for m in running] == sorted(
        (m["created_ms"] for m in running), reverse=True
    )
    assert [m["finished_ms"] for m in ended] == sorted(
        (m["finished_ms"] for m in ended), reverse=True
    )


# -- what a client may send -------------------------------------------------------------------


def test_bad_requests_get_a_4xx_json_error(api: Server, db: sync_redis.Redis) -> None:
    path = "/v1/admin/migrations"
    home = route(db, "TSLA")[0]

    def check(expected: int, method: str = "POST", where: str = path, **kwargs: Any) -> dict:
        status, reply = api.request(method, where, **kwargs)
        assert status == expected, (kwargs, reply)
        assert isinstance(reply, dict) and reply["error"] and reply["message"], reply
        return reply

    body = {"symbol": "TSLA", "to_shard": 3}
    check(401, body=body)
    check(403, body=body, token=user_token("mallory"))
    check(403, "GET", token=user_token("mallory"))
    check(403, "GET", f"{path}/TSLA-1", token=user_token("mallory"))
    check(405, "DELETE", token=admin())

    token = admin()
    for raw in (b"", b"{", b"[]", b'"TSLA"', b"null", b"3", b"{'symbol': 'TSLA'}", b"\xff\xfe"):
        check(400, raw=raw, token=token)
    malformed = [
        {"to_shard": 3},
        {"symbol": "TSLA"},
        {**body, "from_shard": 1},
        {"symbol": 5, "to_shard": 3},
        {"symbol": "", "to_shard": 3},
        {"symbol": "T" * 33, "to_shard": 3},
        {"symbol": "TSLA", "to_shard": "3"},
        {"symbol": "TSLA", "to_shard": 3.5},
        {"symbol": "TSLA", "to_shard": True},
        {"symbol": "TSLA", "to_shard": None},
        {"symbol": "TSLA", "to_shard": 10**30},
        {"symbol": "TSLA", "to_shard": 2**60},
        {**body, "timeout_s": "5"},
        {**body, "timeout_s": 0},
        {**body, "timeout_s": -1},
        {**body, "timeout_s": 301},
        {**body, "timeout_s": None},
    ]
    for sent in malformed:
        check(400, body=sent, token=token)
    check(400, raw=b'{"symbol": "TSLA", "to_shard": 3, "timeout_s": 1e999}', token=token)
    check(413, raw=json.dumps({**body, "pad": "x" * 5000}).encode(), token=token)
    assert check(404, body={"symbol": "NOPE", "to_shard": 3}, token=token)["error"] == (
        "UNKNOWN_SYMBOL"
    )
    for to_shard in (SHARDS, -1, 2**53, -(10**30)):
        assert (
            check(422, body={"symbol": "TSLA", "to_shard": to_shard}, token=token)["error"]
            == "SHARD_OUT_OF_RANGE"
        )
    reply = check(409, body={"symbol": "TSLA", "to_shard": home}, token=token)
    assert reply["error"] == "ALREADY_ON_SHARD"

    for unknown in ("TSLA-999999", "x" * 65, "%00", "..", "TSLA-1%2F2"):
        check(404, "GET", f"{path}/{unknown}", token=token)
    for query in ("limit=0", "limit=101", "limit=abc", "limit=-1", "limit=" + "9" * 40):
        check(400, "GET", f"{path}?{query}", token=token)

    # Random bodies: never a 5xx, and none starts a migration (no listed symbol is sent).
    rng = random.Random(7)
    values: list[Any] = [
        None,
        True,
        0,
        -1,
        1,
        9,
        10,
        2**31,
        2**63,
        2**64,
        -(2**63) - 1,
        0.5,
        1e308,
        -1e-300,
        "",
        "TSLA!",
        "Ω" * 40,
        "\x00",
        [],
        [1],
        {},
        {"a": 1},
    ]
    fields = ["symbol", "to_shard", "timeout_s", "extra"]
    for _ in range(200):
        sent = {
            name: rng.choice(values) for name in rng.sample(fields, rng.randint(0, len(fields)))
        }
        status, reply = api.request("POST", path, sent, token=token)
        assert status in (400, 404, 422), (sent, status, reply)
        assert reply["error"], reply
    assert route(db, "TSLA") == (home, b"ACTIVE")
    assert not db.exists(keys.migrating("TSLA"))


def test_openapi_documents_the_migration_routes(api: Server) -> None:
    status, doc = api.request("GET", "/openapi.json")
    assert status == 200
    assert set(doc["paths"]["/v1/admin/migrations"]) == {"get", "post"}
    assert "get" in doc["paths"]["/v1/admin/migrations/{id}"]
    schemas = doc["components"]["schemas"]
    assert {"StartMigration", "MigrationView", "Migrations", "MigrationConflict"} <= set(schemas)
    assert schemas["StartMigration"]["required"] == ["symbol", "to_shard"]


# -- an API that stops mid-migration --------------------------------------------------------


def test_an_api_stopped_mid_migration_leaves_it_to_be_resumed(
    api: Server,
    db: sync_redis.Redis,
    redis_url: str,
    aio: Any,
    folder: Path,
    traders: tuple[str, str],
) -> None:
    alice, bob = traders
    home = route(db, "TSLA")[0]
    resting = place(api, alice, "TSLA", "SELL")
    order_status(api, alice, resting, "OPEN")
    second = _start_api(redis_url, folder)
    try:
        # The target has no worker: the migration waits in TRANSFER, the symbol paused.
        status, started = second.request(
            "POST",
            "/v1/admin/migrations",
            {"symbol": "TSLA", "to_shard": DEAD, "timeout_s": 300},
            token=admin(),
        )
        assert status == 202, started
        deadline = time.monotonic() + WAIT_S
        while (
            api.request("GET", f"/v1/admin/migrations/{started['id']}", token=admin())[1]["step"]
            != "TRANSFER"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop_api(second)
    assert second.process.returncode == 0
    assert started["id"] in second.log.read_text()  # the shutdown names what it left

    # Left as it was: not rolled back, not resumed by the other API process.
    time.sleep(1.0)
    _, left = api.request("GET", f"/v1/admin/migrations/{started['id']}", token=admin())
    assert (left["state"], left["step"]) == ("RUNNING", "TRANSFER")
    assert route(db, "TSLA") == (home, b"MIGRATING")
    paused_order = place(api, bob, "TSLA", "BUY")  # waits in pending:TSLA

    # The target's worker comes up; an orchestrator resumes the migration to its end.
    worker = _start_workers(redis_url, [DEAD], folder)
    try:
        done = aio.run(_resume(redis_url, "TSLA", DEAD))
        assert (done["id"], done["state"]) == (started["id"], "DONE")
        assert route(db, "TSLA") == (DEAD, b"ACTIVE")
        assert order_status(api, bob, paused_order, "FILLED") == "FILLED"
        assert order_status(api, alice, resting, "FILLED") == "FILLED"
        # Back home before shard DEAD loses its worker again.
        back = aio.run(_resume(redis_url, "TSLA", home))
        assert back["state"] == "DONE"
    finally:
        _stop(worker)


async def _resume(redis_url: str, symbol: str, to_shard: int) -> dict[str, Any]:
    client = Redis.from_url(redis_url)
    try:
        return await migration.migrate(client, symbol, to_shard, timeout_s=60, ttl_s=TTL_S)
    finally:
        await client.aclose()
