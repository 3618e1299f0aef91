"""`python -m loadtest.run`: the whole stack under Locust on this machine, one summary.

Starts what `spot up` starts (embedded Redis and PostgreSQL unless SPOT_REDIS_URL /
SPOT_DATABASE_URL are set, in a throwaway data folder; the API, the matching workers, the
batcher), seeds users u1..uN, runs Locust headless with `--processes` for `--seconds` at
`--rate` order commands per second, then prints one table: offered, accepted, matched and
persisted orders/s, latency percentiles, errors, batcher lag, CPU seconds per process and
`spot audit`'s verdict. Exits 1 when a threshold is missed, naming it.

Locust's HTML report, its CSVs, its log, a PNG timeline and the table land in
loadtest/results/<timestamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]  # psutil ships no stubs (types-psutil unlocked)
from redis.asyncio import Redis

from api.auth import make_token
from loadtest import results
from loadtest.measured import MEMORY_S, Run
from loadtest.thresholds import Thresholds
from schema import keys
from schema.settings import Settings
from schema.streams import EventsEntry
from spot.audit import wait_caught_up
from spot.processes import cpu_seconds, pid_listening, spot_environment, wait_ready
from spot.seed import DEMO_SYMBOLS, demo_user, seed
from spot.stack import Stack
from spot.status import shard_status
from spot.supervisor import child_env, children
from store import db, scripts
from store.database import dialect_of, open_database

HERE = Path(__file__).resolve().parent
# Orders per second one user of the seed's model sends, on average over the weights in
# locustfile.py: (75 × 1/10 + 18 × 1/3 + 7 × 1) / 100.
MODEL_RATE = (75 / 10 + 18 / 3 + 7 / 1) / 100
MODEL_CLASSES = ["OrdinaryUser", "ActiveTrader", "DayTrader"]
MAX_USER_RATE = 20.0  # order commands per second one open-loop MaxUser offers
DRAIN_TIMEOUT_S = 120.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = args.out or HERE / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    run = _plan(args)
    env = spot_environment()
    with tempfile.TemporaryDirectory(prefix="spot-loadtest-") as data:
        env["SPOT_DATA_DIR"] = data
        env.setdefault("SPOT_API_PORT", str(_free_port()))
        settings = Settings.from_env(env)
        # Durable like `spot up` (Redis AOF every second): the machine pays what it would.
        with Stack(settings) as (redis_url, database_url):
            env |= {"SPOT_REDIS_URL": redis_url, "SPOT_DATABASE_URL": database_url}
            _execute(run, settings, env, Path(data), out)
    if not (out / "locust_stats.csv").exists():
        log = (out / "locust.log").read_text(errors="replace").splitlines()[-20:]
        print("\n".join(log), file=sys.stderr)
        print(f"Locust exited with {run.locust_code} before writing its stats", file=sys.stderr)
        return 2
    table = results.summary(run, out, Thresholds.from_args(args))
    print(table.text)
    (out / "summary.txt").write_text(table.text + "\n")
    return 0 if not table.misses else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=60, help="how long Locust runs")
    parser.add_argument("--rate", type=float, default=5_000, help="order commands/s offered")
    parser.add_argument(
        "--scenario",
        choices=["model", "max"],
        default="model",
        help="model: the seed's ordinary / active / day-trader users (closed loop, paced); "
        "max: open loop, a fixed rate whatever the response times",
    )
    parser.add_argument(
        "--users",
        type=int,
        help="Locust users (model: default rate/0.205 up to --max-users, the model's clock "
        "sped up past that; max: default rate/20)",
    )
    parser.add_argument("--max-users", type=int, default=1_000, help="model: connections cap")
    parser.add_argument("--traders", type=int, default=1_000, help="seeded users at most")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Locust worker processes (the lean client needs half a core at 5,000 orders/s; "
        "one process had lower latency than two)",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "fasthttp"],
        default="lean",
        help="the users' HTTP client: lean (loadtest/lean_http.py) or Locust's FastHttpUser, "
        "3-4 times the CPU per request",
    )
    parser.add_argument("--out", type=Path, help="default: loadtest/results/<timestamp>")
    Thresholds.add_arguments(parser)
    return parser


def _plan(args: argparse.Namespace) -> Run:
    if args.scenario == "model":
        users = args.users or max(1, min(args.max_users, round(args.rate / MODEL_RATE)))
        speed = args.rate / (users * MODEL_RATE)
    else:
        users = args.users or max(1, math.ceil(args.rate / MAX_USER_RATE))
        speed = 1.0
    return Run(
        scenario=args.scenario,
        rate=args.rate,
        seconds=args.seconds,
        users=users,
        traders=min(users, args.traders),
        processes=args.processes,
        client=args.client,
        speed=speed,
    )


def _execute(run: Run, settings: Settings, env: dict[str, str], data: Path, out: Path) -> None:
    redis_url, database_url = env["SPOT_REDIS_URL"], env["SPOT_DATABASE_URL"]
    db.upgrade(database_url)
    before = asyncio.run(_prepare(run, settings, redis_url, database_url))
    config = data / "locust.json"
    config.write_text(
        json.dumps(
            {
                "tokens": [
                    make_token(demo_user(n), secret=settings.jwt_secret, ttl_s=24 * 3600)
                    for n in range(1, run.traders + 1)
                ],
                "symbols": {s.symbol: s.reference_price for s in DEMO_SYMBOLS},
                "speed": run.speed,
                "pace_s": run.users / run.rate,
                "processes": run.processes,
                "client": run.client,
            }
        )
    )
    env = child_env(redis_url, database_url) | env
    log = (out / "stack.log").open("ab")  # the API's, workers' and batchers' output
    procs = {
        c.name: subprocess.Popen(c.argv, env=env, start_new_session=True, stdout=log, stderr=log)
        for c in children(settings)
    }
    try:
        wait_ready(settings.api_port, server=procs["api"].pid)
        # The seed's deposits must be in the database before orders spend them: the
        # batcher applies its streams side by side, not in the order they were written.
        asyncio.run(_drain(run, settings, redis_url, database_url))
        if run.behind:
            raise RuntimeError(f"the batcher never persisted the seed: {run.behind}")
        groups = _groups(procs, redis_url, database_url)
        cpu_before = cpu_seconds(groups)
        self_before = _self_cpu()
        buckets_before = _server_buckets(settings.api_port)
        asyncio.run(_load(run, settings, redis_url, config, out))
        buckets_after = _server_buckets(settings.api_port)
        run.server_buckets = {le: n - buckets_before.get(le, 0) for le, n in buckets_after.items()}
        asyncio.run(_drain(run, settings, redis_url, database_url))
        cpu_after = cpu_seconds(groups)
        run.cpu_s |= {kind: cpu_after[kind] - cpu_before[kind] for kind in groups}
        run.cpu_s["runner"] = _self_cpu() - self_before
        asyncio.run(_count(run, redis_url, database_url, before))
        audit = subprocess.run(
            [sys.executable, "-m", "spot.cli", "audit", "--wait", "60"],
            env=env,
            capture_output=True,
            text=True,
        )
        run.audit_clean = audit.returncode == 0
        run.audit_output = audit.stdout + audit.stderr
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


async def _prepare(
    run: Run, settings: Settings, redis_url: str, database_url: str
) -> dict[str, int]:
    """Seed, and return how far the tables went before the run (a given database may
    hold earlier runs)."""
    conn = await open_database(database_url, max_size=1)
    try:
        before = {
            "order_id": int(await conn.fetchval("SELECT COALESCE(MAX(order_id), 0) FROM orders")),
            "trades": int(await conn.fetchval("SELECT COUNT(*) FROM trades")),
        }
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        # A new Redis (the embedded one, or a wiped one) beside a database of earlier runs
        # would hand out their order ids again, and the batcher would refuse every row.
        next_id = int(await redis.get(keys.ORDER_IDS) or 0)
        if before["order_id"] > next_id:
            raise SystemExit(
                f"the database already holds orders up to id {before['order_id']}, made with "
                f"another Redis (this one's ids start at {next_id + 1}): give an empty "
                "database in SPOT_DATABASE_URL, or the Redis of those runs in SPOT_REDIS_URL"
            )
        await seed(redis, settings.shards, run.traders)
    finally:
        await redis.aclose()
    return before


DATABASE_KINDS = {"postgresql": ("postgres", 5432), "mysql": ("mysql", 3306)}


def _groups(
    procs: dict[str, subprocess.Popen[bytes]], redis_url: str, database_url: str
) -> dict[str, list[int]]:
    groups = {
        "api": [procs["api"].pid],
        "workers": [p.pid for n, p in procs.items() if n.startswith("worker")],
        "batcher": [p.pid for n, p in procs.items() if n.startswith("batcher")],
    }
    # The database server's CPU, named for what it is (PostgreSQL's keeps its old name).
    database, database_port = DATABASE_KINDS[dialect_of(database_url)]
    for kind, url, default in (("redis", redis_url, 6379), (database, database_url, database_port)):
        parts = urlsplit(url)
        port = parts.port or default
        pid = pid_listening(port) if parts.hostname in ("127.0.0.1", "localhost") else None
        groups[kind] = [pid] if pid else []
    return groups


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _load(run: Run, settings: Settings, redis_url: str, config: Path, out: Path) -> None:
    """Run Locust to its end, sampling acceptance→matched meanwhile."""
    classes = MODEL_CLASSES if run.scenario == "model" else ["MaxUser"]
    argv = [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
        "--processes", str(run.processes), "--users", str(run.users),
        "--spawn-rate", str(max(1, run.users // 2)), "--run-time", f"{run.seconds}s",
        "--host", f"http://127.0.0.1:{settings.api_port}",
        "--csv", str(out / "locust"), "--html", str(out / "report.html"),
        "--only-summary", "--reset-stats", "--stop-timeout", "1", *classes,
    ]  # fmt: skip
    # Its own port between master and worker processes: another run on this machine
    # holds Locust's default 5557.
    master_port = str(_free_port())
    argv[-len(classes) : -len(classes)] = ["--master-bind-port", master_port,
                                           "--master-port", master_port]  # fmt: skip
    redis = Redis.from_url(redis_url)
    streams = [keys.events(n) for n in range(settings.shards)]
    await scripts.load(redis, scripts.NEWEST_BATCH)  # its calls ride a pipeline
    seen: dict[bytes, bytes] = {}
    locust_cpu: dict[int, float] = {}
    started = time.monotonic()
    memory_due = started
    run.started_ms = time.time() * 1000
    with (out / "locust.log").open("wb") as log:
        locust = subprocess.Popen(
            argv, env=os.environ | {"LOADTEST_CONFIG": str(config)}, stdout=log, stderr=log
        )
        try:
            while True:
                _sample_cpu(locust.pid, locust_cpu)
                pid, status, _ = os.wait4(locust.pid, os.WNOHANG)
                if pid:
                    locust.returncode = os.waitstatus_to_exitcode(status)
                    run.locust_code = locust.returncode
                    # Its forked workers are not all reaped by the master, so wait4's
                    # rusage misses them: the last sample of each process counts.
                    run.cpu_s["locust"] = sum(locust_cpu.values())
                    break
                if time.monotonic() - started > run.seconds + 120:
                    locust.kill()
                if time.monotonic() >= memory_due:
                    memory_due += MEMORY_S
                    used = (await redis.info("memory"))["used_memory"]
                    run.redis_memory.append((time.time() * 1000, int(used)))
                for settled, first in await _newest_batches(redis, streams):
                    if seen.get(first) != settled:
                        seen[first] = settled
                        run.matched_ms.append(_ms(settled) - _ms(first))
                await asyncio.sleep(run.sample_s)
        finally:
            run.load_s = time.monotonic() - started
            run.backlog = sum(r["lag"] for r in await shard_status(redis, settings.shards))
            await redis.aclose()


async def _newest_batches(redis: Redis, streams: list[str]) -> list[tuple[bytes, bytes]]:
    """Each shard's newest settled batch: (its entry id, the orders-stream id of its oldest
    order), in one round trip; a shard with none is left out."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        scripts.NEWEST_BATCH.queue(pipe, [stream], [EventsEntry.FIRST])
    return [(reply[0], reply[1]) for reply in await pipe.execute() if reply]


def _sample_cpu(root: int, seen: dict[int, float]) -> None:
    """CPU seconds so far of `root` and its descendants, kept per pid."""
    try:
        proc = psutil.Process(root)
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seen[p.pid] = times.user + times.system


def _ms(stream_id: bytes) -> float:
    return float(stream_id.partition(b"-")[0])


async def _drain(run: Run, settings: Settings, redis_url: str, database_url: str) -> None:
    """Wait for the workers and the batcher to catch up; read the batcher's flushes."""
    redis = Redis.from_url(redis_url)
    conn = await open_database(database_url, max_size=1)
    try:
        started = time.monotonic()
        run.behind = await wait_caught_up(redis, conn, settings.shards, DRAIN_TIMEOUT_S)
        run.drained_s = time.monotonic() - started
        raw = await redis.lrange(keys.BATCHER_FLUSHES, 0, -1)
        flushes = [json.loads(r) for r in reversed(raw)]
        run.flushes = [f for f in flushes if f["at_ms"] >= run.started_ms and f["events"]]
    finally:
        await conn.close()
        await redis.aclose()


async def _count(run: Run, redis_url: str, database_url: str, before: dict[str, int]) -> None:
    conn = await open_database(database_url, max_size=1)
    try:
        # The span in Python: each database spells timestamp arithmetic its own way.
        counted = []
        for table, key in (("orders", "order_id"), ("trades", "taker_order_id")):
            [row] = await conn.fetch(
                "SELECT COUNT(*) AS n, MIN(created_at) AS first, MAX(created_at) AS last "
                f"FROM {table} WHERE {key} > $1",
                before["order_id"],
            )
            span = (row["last"] - row["first"]).total_seconds() if row["n"] else 0.0
            counted.append((int(row["n"]), span))
    finally:
        await conn.close()
    run.persisted, run.trades = counted


def _server_buckets(port: int) -> dict[float, int]:
    """The API's latency histogram over every route: upper bound (s) -> requests at most
    that slow. Granian's time in the handler, without the client's or the network's."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[float, int] = {}
    for line in text.splitlines():
        if line.startswith("spot_http_request_duration_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            out[bound] = out.get(bound, 0) + int(line.rsplit(" ", 1)[1])
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
