"""The operator console over real HTTP: the page at /console (public, strict headers) and its
data at GET /v1/admin/console (admin only), a Granian server in a subprocess on a real
Redis. No worker runs: the tests write what the workers, the batcher and the rebalancer
would write (a shard's backlog, the rebalancer's state) and read it back through the
snapshot. The DB is flushed and seeded once for the module; tests never use the `redis`
fixture (it flushes)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from api.console import STALE_MS
from api.console_page import FILES
from control import migration
from schema import keys
from schema.symbols import SymbolSpec
from store.symbols import list_symbol
from tests.integration.http import Server, admin, free_port, start_api, stop_api, user_token

SHARDS = 10
SYMBOLS = ("AAPL", "MSFT", "NFLX", "AMZN", "TSLA")  # home shards 2, 1, 7, 6, 5


async def _seed(redis_url: str) -> dict[str, int]:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        return {
            s: await list_symbol(
                client, SymbolSpec(symbol=s, base=s, quote="USD", reference_price=100), SHARDS
            )
            for s in SYMBOLS
        }
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def homes(redis_url: str, aio: asyncio.Runner) -> dict[str, int]:
    return aio.run(_seed(redis_url))


@pytest.fixture(scope="module")
def api(
    redis_url: str, homes: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_api(tmp_path_factory.mktemp("console"), redis_url=redis_url, shards=str(SHARDS))
    try:
        yield server
    finally:
        stop_api(server)


@pytest.fixture(scope="module")
def db(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


def snapshot(api: Server, after: int = 0) -> dict[str, Any]:
    status, body = api.request("GET", f"/v1/admin/console?after={after}", token=admin())
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def until(api: Server, done: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Snapshots one after another until `done(snapshot)`."""
    deadline = time.monotonic() + timeout
    snap = snapshot(api)
    while not done(snap):
        assert time.monotonic() < deadline, snap
        snap = snapshot(api, snap["at_ms"])
    return snap


# -- the page ----------------------------------------------------------------------------------


def test_the_page_is_public_with_a_strict_policy(api: Server) -> None:
    status, body, headers = api.exchange("GET", "/console")

    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (FILES / "index.html").read_text()
    policy = dict(d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["form-action"] == "'none'"  # no form can post the token anywhere
    assert policy["frame-ancestors"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    # Scripts are modules, loaded from the API itself: nothing inline for the policy to allow.
    assert not re.search(r"<script(?![^>]*\bsrc=)", body)
    assert re.search(r'<script type="module" src="/console/console\.js">', body)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("console.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_each_file_has_its_type_and_a_validator(api: Server, name: str, kind: str) -> None:
    status, body, headers = api.exchange("GET", f"/console/{name}")

    assert (status, headers["content-type"]) == (200, kind)
    assert body == (FILES / name).read_text()
    etag = headers["etag"]
    status, body, again = api.exchange("GET", f"/console/{name}", headers={"If-None-Match": etag})
    assert (status, body, again["etag"]) == (304, "", etag)
    status, _, _ = api.exchange("GET", f"/console/{name}", headers={"If-None-Match": '"other"'})
    assert status == 200


def test_every_module_the_page_imports_is_served(api: Server) -> None:
    for script in FILES.glob("*.js"):
        for imported in re.findall(r"from '\./([\w.]+)'", script.read_text()):
            status, _, headers = api.exchange("GET", f"/console/{imported}")
            assert (status, headers["content-type"].split(";")[0]) == (200, "text/javascript")


def test_an_unknown_file_is_a_json_404(api: Server) -> None:
    for path in ("/console/nope.js", "/console/index.html", "/console/..%2Fapp.py"):
        status, body = api.request("GET", path)
        assert status == 404 and body["error"] == "NOT_FOUND", (path, body)


# -- who may read the data -----------------------------------------------------------------


def test_the_data_needs_an_admin_token(api: Server) -> None:
    status, body, headers = api.exchange("GET", "/v1/admin/console")
    assert (status, body["error"]) == (401, "UNAUTHENTICATED")
    assert headers["www-authenticate"] == "Bearer"

    status, body = api.request("GET", "/v1/admin/console", token=user_token("alice"))
    assert (status, body["error"]) == (403, "FORBIDDEN")

    status, body = api.request("GET", "/v1/admin/console", token="not-a-token")
    assert (status, body["error"]) == (401, "INVALID_TOKEN")

    status, body, headers = api.exchange("GET", "/v1/admin/console", token=admin())
    assert status == 200 and "shards" in body
    assert headers["cache-control"] == "no-store"  # private: kept in no cache


def test_a_bad_after_is_a_400(api: Server) -> None:
    for after in ("-1", "x", "1e3", str(2**70)):
        status, body = api.request("GET", f"/v1/admin/console?after={after}", token=admin())
        assert (status, body["error"]) == (400, "MALFORMED"), after


# -- what it shows ---------------------------------------------------------------------------


def test_every_shard_with_its_symbols(api: Server, homes: dict[str, int]) -> None:
    snap = snapshot(api)

    assert [s["shard"] for s in snap["shards"]] == list(range(SHARDS))
    on = {sym["symbol"]: s["shard"] for s in snap["shards"] for sym in s["symbols"]}
    assert on == homes
    assert all(not s["owned"] for s in snap["shards"])  # no worker runs here
    assert snap["interval_ms"] == 1000
    assert abs(snap["at_ms"] - time.time() * 1000) < 5_000


def test_a_shards_backlog_is_counted_with_the_age_of_its_oldest(
    api: Server, db: sync_redis.Redis
) -> None:
    stream, shard = keys.orders(4), 4
    settled = db.xadd(stream, {"c": "settled"})
    db.set(keys.applied(shard), settled)
    first = db.xadd(stream, {"c": "waiting"})
    for _ in range(4):
        db.xadd(stream, {"c": "waiting"})
    queued_ms = int(first.decode().partition("-")[0])
    try:
        snap = until(api, lambda s: s["shards"][shard]["lag"] == 5)
        view = snap["shards"][shard]
        assert view["lag_capped"] is False
        assert 0 <= view["lag_ms"] <= snap["at_ms"] - queued_ms + 1
        db.set(keys.applied(shard), db.xrevrange(stream, count=1)[0][0])  # caught up
        view = until(api, lambda s: s["shards"][shard]["lag"] == 0)["shards"][shard]
        assert view["lag_ms"] is None
    finally:
        db.delete(stream, keys.applied(shard))


def test_a_migration_and_the_rebalancers_view(
    api: Server, db: sync_redis.Redis, aio: asyncio.Runner, redis_url: str, homes: dict[str, int]
) -> None:
    async def start() -> str:
        client = Redis.from_url(redis_url)
        try:
            return await migration.start(client, "TSLA", 0, 5.0)
        finally:
            await client.aclose()

    migration_id = aio.run(start())  # created, and no orchestrator runs it: RUNNING at PAUSE
    now_ms = int(time.time() * 1000)
    db.hset(
        keys.REBALANCER,
        mapping={"at_ms": now_ms, "code": "WARN", "reason": "shards 5 at 55%", "dry_run": 1,
                 "evaluations": 7, "moves": 1, "moves_failed": 0,
                 "5:load": 0.55, "5:level": "WARN", "5:capacity": 4200, "5:measured": 1},
    )  # fmt: skip
    db.xadd(
        keys.REBALANCER_DECISIONS,
        {"at_ms": now_ms, "code": "WARN", "reason": "shards 5 at 55%", "symbol": "",
         "from": "", "to": ""},
    )  # fmt: skip
    try:
        snap = until(api, lambda s: s["rebalancer"]["evaluations"] == 7)
        (running,) = [m for m in snap["migrations"] if m["id"] == migration_id]
        assert (running["symbol"], running["from_shard"], running["to_shard"]) == (
            "TSLA",
            homes["TSLA"],
            0,
        )
        assert running["state"] == "RUNNING"
        shard = snap["shards"][5]
        assert (shard["load"], shard["level"], shard["capacity"]) == (0.55, "WARN", 4200)
        assert shard["capacity_measured"] is True
        assert snap["shards"][4]["level"] is None  # not in the rebalancer's state
        rebalancer = snap["rebalancer"]
        assert (rebalancer["code"], rebalancer["dry_run"], rebalancer["moves"]) == ("WARN", True, 1)
        assert rebalancer["decisions"][0] | {"at_ms": 0} == {
            "at_ms": 0, "code": "WARN", "reason": "shards 5 at 55%", "symbol": "",
            "from_shard": None, "to_shard": None,
        }  # fmt: skip
    finally:
        db.delete(keys.REBALANCER, keys.REBALANCER_DECISIONS)


def test_the_batchers_running_totals_become_rates(api: Server, db: sync_redis.Redis) -> None:
    at_ms = int(time.time() * 1000)
    db.hset(
        keys.BATCHER_STATS,
        mapping={"flushes": 1, "at_ms": at_ms, "events": 3, "flush_ms": 2.5, "lag_ms": 80,
                 "orders_total": 100, "trades_total": 40, "held_streams": 0, "held": ""},
    )  # fmt: skip
    try:
        until(api, lambda s: s["batcher"]["last_flush_ms"] == at_ms)
        # The next flush, 500 ms later, wrote 50 order rows and 10 trades.
        db.hset(
            keys.BATCHER_STATS,
            mapping={"flushes": 2, "at_ms": at_ms + 500, "orders_total": 150, "trades_total": 50},
        )
        snap = until(api, lambda s: s["batcher"]["last_flush_ms"] == at_ms + 500)
        assert (snap["rates"]["persisted"], snap["rates"]["matched"]) == (100.0, 20.0)
        assert snap["batcher"]["flushes"] == 2
        # No flush since: the rate stands while the flush is fresh, then nothing was written.
        snap = until(api, lambda s: s["rates"]["persisted"] != 100.0)
        assert (snap["rates"]["persisted"], snap["rates"]["matched"]) == (0.0, 0.0)
        assert snap["at_ms"] - (at_ms + 500) > STALE_MS
    finally:
        db.delete(keys.BATCHER_STATS)


def test_http_requests_are_counted_without_the_consoles_own(api: Server) -> None:
    snap = snapshot(api)
    for _ in range(20):
        assert api.request("GET", "/v1/symbols")[0] == 200
    snap = snapshot(api, snap["at_ms"])
    rates = snap["rates"]
    assert rates["http_requests_per_s"] >= 10  # 20 in about a second, not 0
    assert 0 < rates["http_p99_ms"] < 1000  # the long polls (~1 s each) are not in it


# -- made once, however many read ------------------------------------------------------------


def _evalsha_calls(db: sync_redis.Redis) -> int:
    stats = db.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_snapshot_a_second_for_any_number_of_readers(api: Server, db: sync_redis.Redis) -> None:
    readers, seconds = 20, 4.0
    seen: list[list[tuple[int, bytes]]] = [[] for _ in range(readers)]
    token = admin()

    def follow(mine: list[tuple[int, bytes]]) -> None:
        after, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            status, body = api.request("GET", f"/v1/admin/console?after={after}", token=token)
            assert status == 200
            after = body["at_ms"]
            mine.append((after, json.dumps(body, sort_keys=True).encode()))

    snapshot(api)  # the task runs
    before = _evalsha_calls(db)  # nothing but the console runs scripts here
    threads = [threading.Thread(target=follow, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = _evalsha_calls(db) - before

    made = {at for mine in seen for at, _ in mine}
    # Each shard's backlog is one script call per snapshot: some 4 or 5 snapshots in 4 s,
    # for twenty readers, not one per reader and request.
    assert len(made) <= seconds + 2
    assert (len(made) - 1) * SHARDS <= calls <= (len(made) + 1) * SHARDS
    bodies: dict[int, set[bytes]] = {}
    for mine in seen:
        ats = [at for at, _ in mine]
        assert ats == sorted(set(ats))  # each reader saw every snapshot once, in order
        for at, body in mine:
            bodies.setdefault(at, set()).add(body)
    assert all(len(b) == 1 for b in bodies.values())  # the same bytes for everyone


def test_after_waits_for_the_next_snapshot(api: Server) -> None:
    first = snapshot(api)
    started = time.monotonic()
    second = snapshot(api, first["at_ms"])
    waited = time.monotonic() - started

    assert second["at_ms"] > first["at_ms"]
    assert second["at_ms"] - first["at_ms"] <= 1_500  # the next one, a second later
    assert waited < 2.5
    assert snapshot(api, 0)["at_ms"] >= second["at_ms"]  # after=0: the latest, at once


def test_each_reply_says_when_the_next_snapshot_comes(api: Server) -> None:
    snapshot(api)
    status, first, headers = api.exchange("GET", "/v1/admin/console", token=admin())
    next_ms = int(headers["x-next-snapshot-ms"])
    assert status == 200 and 0 <= next_ms <= 1_000

    time.sleep((next_ms + 150) / 1000)  # just after it: it is made, and comes at once
    started = time.monotonic()
    status, second, headers = api.exchange(
        "GET", f"/v1/admin/console?after={first['at_ms']}", token=admin()
    )
    assert status == 200 and second["at_ms"] > first["at_ms"]
    assert time.monotonic() - started < 0.5
    assert 500 <= int(headers["x-next-snapshot-ms"]) <= 1_000


def test_redis_down_is_a_503_with_retry_after(tmp_path: Path) -> None:
    server = start_api(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/15")
    try:
        status, body, headers = server.exchange("GET", "/v1/admin/console", token=admin())
        assert (status, body["error"]) == (503, "UNAVAILABLE")
        assert headers["retry-after"] == "1"
        # the page itself needs no Redis
        assert server.request("GET", "/console")[0] == 200
    finally:
        stop_api(server)
