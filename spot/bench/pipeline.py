"""`spot bench pipeline`: wrk posts orders to the whole stack on this machine.

The stack is the one `spot up` runs (API, one worker per shard, the batcher, Redis,
PostgreSQL), in a throwaway data folder. wrk is native, so the load generator costs
little. Prints accepted orders/s, latency percentiles, CPU µs per order per process
kind, and whether the workers kept up (their lag when wrk stops, and how long they
took to drain it).

`--api v3` sends the same orders, user for user, to Binance's POST /api/v3/order
(api/binance/) instead of /v1's: form-encoded, X-MBX-APIKEY and an HMAC-SHA256 signature,
`newOrderRespType=ACK` (answered once queued, as /v1's 202). wrk's Lua has no HMAC, so the
requests are signed here just before wrk starts, with timestamp = now and the largest
recvWindow the server takes; Binance has no nonce, so a signed request may be sent again
within its window, and wrk rotates over them. That bounds a v3 run to V3_MAX_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from api.apikeys import READ, TRADE, ApiKeyStore, master_key
from api.auth import make_token
from api.binance.signing import MAX_RECV_WINDOW_MS, sign
from api.binance.translate import Scale
from api.order_gateway import OrderGateway
from schema.settings import Settings
from spot.processes import (
    cpu_seconds,
    pid_listening,
    spot_environment,
    unlimited,
    wait_ready,
)
from spot.seed import DEMO_DECIMALS, DEMO_SYMBOLS
from spot.stack import Stack
from spot.status import shard_status
from spot.supervisor import child_env, children
from store import db
from store.symbols import list_asset, list_symbol

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_orders.lua"
# A v3 run ends within the signatures' window: the largest recvWindow, less the time
# from signing to wrk's first request and to its last answer.
V3_MAX_SECONDS = MAX_RECV_WINDOW_MS // 1000 - 5


def _orders() -> list[tuple[str, str, int]]:
    """(symbol, side, price) that requests rotate over, each for a quantity of 1: every
    symbol, both sides, prices within ±0.5% of the reference so that about half cross and
    the books stay small."""
    out = []
    for spec in DEMO_SYMBOLS:
        ref = spec.reference_price or 10_000
        for step in range(-5, 6):
            for side, offset in (("BUY", step), ("SELL", -step)):
                out.append((spec.symbol, side, ref + ref * offset // 1_000))
    return out


def _bodies() -> list[str]:
    return [
        json.dumps({"symbol": symbol, "side": side, "price": price, "quantity": 1})
        for symbol, side, price in _orders()
    ]


def signed_requests(keys: list[tuple[str, str]], now_ms: int) -> list[str]:
    """`API-KEY BODY` lines, signed with each key's secret: the v1 rotation (request n by
    user n % users with order n % orders) over one whole period of it, so wrk cycling
    over these lines sends exactly /v1's mix."""
    specs = {spec.symbol: spec for spec in DEMO_SYMBOLS}
    orders = [
        (symbol, side, Scale(specs[symbol], DEMO_DECIMALS).px(price))
        for symbol, side, price in _orders()
    ]
    out = []
    for n in range(math.lcm(len(keys), len(orders))):
        api_key, secret = keys[n % len(keys)]
        symbol, side, price = orders[n % len(orders)]
        query = (
            f"symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity=1&price={price}"
            f"&newOrderRespType=ACK&recvWindow={MAX_RECV_WINDOW_MS}&timestamp={now_ms}"
        )
        out.append(f"{api_key} {query}&signature={sign(secret, query)}")
    return out


async def prepare(redis_url: str, settings: Settings, users: int) -> list[str]:
    """An empty Redis with the demo assets and symbols listed and users
    bench0..bench{users - 1} funded; returns a bearer token for each."""
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        router = OrderGateway(redis)
        for asset, decimals in DEMO_DECIMALS.items():
            await list_asset(redis, asset, decimals)
        for spec in DEMO_SYMBOLS:
            await list_symbol(redis, spec, settings.shards)
        assets = {"USD"} | {spec.base for spec in DEMO_SYMBOLS}
        for n in range(users):
            for asset in assets:
                await router.transfer(f"bench{n}", asset, 10**14, "bench")
    finally:
        await redis.aclose()
    return [make_token(f"bench{n}", secret=settings.jwt_secret) for n in range(users)]


async def api_keys(redis_url: str, settings: Settings, users: int) -> list[tuple[str, str]]:
    """A trading API key for each of bench0..bench{users - 1}: (key, secret)."""
    redis = Redis.from_url(redis_url)
    try:
        store = ApiKeyStore(redis, master_key(settings.api_key_secret, settings.jwt_secret))
        created = [await store.create(f"bench{n}", [READ, TRADE]) for n in range(users)]
    finally:
        await redis.aclose()
    return [(key.api_key, key.secret) for key in created]


def _parse_wrk(output: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    latency = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    return {"requests": requests, "non_2xx": int(errors.group(1)) if errors else 0, **latency}


def pipeline(
    settings: Settings, seconds: int, connections: int, users: int, api: str = "v1"
) -> int:
    if shutil.which("wrk") is None:
        print("spot bench pipeline needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if api == "v3" and seconds > V3_MAX_SECONDS:
        print(
            f"--api v3 runs at most {V3_MAX_SECONDS} s: its requests are signed once, "
            f"and a signature is good for recvWindow = {MAX_RECV_WINDOW_MS} ms at most",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({**spot_environment(), "SPOT_DATA_DIR": data})
        with Stack(settings, durable=False) as (redis_url, database_url):
            db.upgrade(database_url)
            tokens = asyncio.run(prepare(redis_url, settings, users))
            keys = asyncio.run(api_keys(redis_url, settings, users)) if api == "v3" else None
            return _measure(settings, redis_url, database_url, tokens, keys, seconds, connections)


def _wrk_args(tokens: list[str], keys: list[tuple[str, str]] | None) -> list[str]:
    """wrk_orders.lua's arguments: v1's tokens and bodies, or v3's signed requests (signed
    now, so just before wrk starts)."""
    if keys is None:
        tokens_file = Path(tempfile.mkstemp(suffix=".txt")[1])
        tokens_file.write_text("".join(f"{t}\n" for t in tokens))
        bodies_file = Path(tempfile.mkstemp(suffix=".txt")[1])
        bodies_file.write_text("".join(f"{b}\n" for b in _bodies()))
        return ["v1", str(tokens_file), str(bodies_file)]
    signed_file = Path(tempfile.mkstemp(suffix=".txt")[1])
    now_ms = time.time_ns() // 1_000_000
    signed_file.write_text("".join(f"{line}\n" for line in signed_requests(keys, now_ms)))
    return ["v3", str(signed_file)]


def _measure(
    settings: Settings,
    redis_url: str,
    database_url: str,
    tokens: list[str],
    keys: list[tuple[str, str]] | None,
    seconds: int,
    connections: int,
) -> int:
    env = unlimited(child_env(redis_url, database_url))
    procs = {
        c.name: subprocess.Popen(c.argv, env=env, start_new_session=True)
        for c in children(settings)
    }
    try:
        wait_ready(settings.api_port, server=procs["api"].pid)
        groups = {
            "api": [procs["api"].pid],
            "workers": [p.pid for n, p in procs.items() if n.startswith("worker")],
            "batcher": [p.pid for n, p in procs.items() if n.startswith("batcher")],
        }
        redis_pid = pid_listening(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        postgres_pid = pid_listening(int(database_url.rsplit(":", 1)[1].split("/")[0]))
        groups["redis"] = [redis_pid] if redis_pid else []
        groups["postgres"] = [postgres_pid] if postgres_pid else []
        script_args = _wrk_args(tokens, keys)
        before = cpu_seconds(groups)
        wrk = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
             str(WRK_SCRIPT), f"http://127.0.0.1:{settings.api_port}", "--", *script_args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        after = cpu_seconds(groups)
        lag, drain_s = asyncio.run(_lag_and_drain(redis_url, settings.shards))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
    result = _parse_wrk(wrk.stdout)
    accepted = result["requests"] - result["non_2xx"]
    print(
        f"{'/api/v3/order' if keys else '/v1/orders'}: "
        f"accepted {accepted / seconds:,.0f} orders/s ({result['non_2xx']} refused) with "
        f"{connections} connections for {seconds} s; latency p50 {result['50']:.2f} ms, "
        f"p90 {result['90']:.2f} ms, p99 {result['99']:.2f} ms"
    )
    print("CPU per accepted order: " + ", ".join(
        f"{kind} {(after[kind] - before[kind]) / max(accepted, 1) * 1e6:.0f} µs"
        for kind in groups
    ))  # fmt: skip
    print(f"worker lag when wrk stopped: {lag} orders; drained in {drain_s:.2f} s")
    return 0


async def _lag_and_drain(redis_url: str, shards: int) -> tuple[int, float]:
    redis = Redis.from_url(redis_url)
    try:
        started = time.monotonic()
        lag = sum(row["lag"] for row in await shard_status(redis, shards))
        while sum(row["lag"] for row in await shard_status(redis, shards)):
            if time.monotonic() - started > 60:
                break
            await asyncio.sleep(0.05)
        return lag, time.monotonic() - started
    finally:
        await redis.aclose()
