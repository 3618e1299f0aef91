"""`spot bench pipeline`: wrk posts orders to the whole stack on this machine.

The stack is the one `spot up` runs (API, one worker per shard, the batcher, Redis,
PostgreSQL), in a throwaway data folder. wrk is native, so the load generator costs
little. Prints accepted orders/s, latency percentiles, CPU µs per order per process
kind, and whether the workers kept up (their lag when wrk stops, and how long they
took to drain it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from api.auth import make_token
from api.order_gateway import OrderGateway
from schema.settings import Settings
from spot.processes import (
    cpu_seconds,
    pid_listening,
    spot_environment,
    unlimited,
    wait_ready,
)
from spot.seed import DEMO_SYMBOLS
from spot.stack import Stack
from spot.status import shard_status
from spot.supervisor import child_env, children
from store import db
from store.symbols import list_symbol

# Requests rotate over these bodies: every symbol, both sides, prices within ±0.5% of the
# reference so that about half cross and the books stay small.
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_orders.lua"


def _bodies() -> list[str]:
    out = []
    for spec in DEMO_SYMBOLS:
        ref = spec.reference_price or 10_000
        for step in range(-5, 6):
            for side, offset in (("BUY", step), ("SELL", -step)):
                price = ref + ref * offset // 1_000
                out.append(
                    json.dumps({"symbol": spec.symbol, "side": side, "price": price, "quantity": 1})
                )
    return out


async def prepare(redis_url: str, settings: Settings, users: int) -> list[str]:
    """An empty Redis with the demo symbols listed and users bench0..bench{users - 1}
    funded; returns a bearer token for each."""
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        router = OrderGateway(redis)
        for spec in DEMO_SYMBOLS:
            await list_symbol(redis, spec, settings.shards)
        assets = {"USD"} | {spec.base for spec in DEMO_SYMBOLS}
        for n in range(users):
            for asset in assets:
                await router.transfer(f"bench{n}", asset, 10**14, "bench")
    finally:
        await redis.aclose()
    return [make_token(f"bench{n}", secret=settings.jwt_secret) for n in range(users)]


def _parse_wrk(output: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    latency = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    return {"requests": requests, "non_2xx": int(errors.group(1)) if errors else 0, **latency}


def pipeline(settings: Settings, seconds: int, connections: int, users: int) -> int:
    if shutil.which("wrk") is None:
        print("spot bench pipeline needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({**spot_environment(), "SPOT_DATA_DIR": data})
        with Stack(settings, durable=False) as (redis_url, database_url):
            db.upgrade(database_url)
            tokens = asyncio.run(prepare(redis_url, settings, users))
            return _measure(settings, redis_url, database_url, tokens, seconds, connections)


def _measure(
    settings: Settings,
    redis_url: str,
    database_url: str,
    tokens: list[str],
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
        tokens_file = Path(tempfile.mkstemp(suffix=".txt")[1])
        tokens_file.write_text("".join(f"{t}\n" for t in tokens))
        bodies_file = Path(tempfile.mkstemp(suffix=".txt")[1])
        bodies_file.write_text("".join(f"{b}\n" for b in _bodies()))
        groups = {
            "api": [procs["api"].pid],
            "workers": [p.pid for n, p in procs.items() if n.startswith("worker")],
            "batcher": [p.pid for n, p in procs.items() if n.startswith("batcher")],
        }
        redis_pid = pid_listening(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        postgres_pid = pid_listening(int(database_url.rsplit(":", 1)[1].split("/")[0]))
        groups["redis"] = [redis_pid] if redis_pid else []
        groups["postgres"] = [postgres_pid] if postgres_pid else []
        before = cpu_seconds(groups)
        wrk = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
             str(WRK_SCRIPT), f"http://127.0.0.1:{settings.api_port}", "--", str(tokens_file),
             str(bodies_file)],
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
