"""The `spot` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the whole exchange on this machine")
    up.add_argument("--seed", action="store_true", help="list demo symbols, fund demo users")
    up.add_argument("--users", type=int, default=100, help="demo users to fund with --seed")

    seed = commands.add_parser("seed", help="list demo symbols and fund demo users u1..uN")
    seed.add_argument("--users", type=int, default=100)

    commands.add_parser("status", help="shards, owners, lag, symbols, order rates, migrations")
    commands.add_parser("api", help="the HTTP API (Granian, RSGI, uvloop)")

    worker = commands.add_parser("worker", help="a matching worker for some shards")
    worker.add_argument(
        "--shards",
        type=_shard_list,
        help="a shard number or a comma-separated list (default: every shard)",
    )

    batcher = commands.add_parser("batcher", help="persist events and the ledger to the database")
    batcher.add_argument("--shards", type=_shard_list, help="default: every shard")

    audit = commands.add_parser("audit", help="check Redis against the database, and money")
    audit.add_argument("--wait", type=float, default=30.0, help="seconds to wait to catch up")

    db = commands.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="default: head (upgrade), -1 (downgrade)")

    token = commands.add_parser("token", help="print a bearer token for a user")
    token.add_argument("user")
    token.add_argument("--admin", action="store_true", help="with the admin role")

    replay = commands.add_parser("replay", help="feed JSON-line commands through the engine")
    replay.add_argument("file", help="commands, one JSON object a line")
    replay.add_argument("--symbols", help="JSON list of symbol specs (default: tick 1, lot 1)")

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench.add_argument("target", choices=["engine", "pipeline", "batcher", "migration"])
    bench.add_argument("--orders", type=int, default=500_000, help="engine: orders per run")
    bench.add_argument("--runs", type=int, default=3, help="engine: runs; the median is printed")
    bench.add_argument(
        "--workload",
        action="append",
        choices=["liquibook", "realistic", "fees", "stops"],
        help="engine: this workload only (repeatable); all four by default",
    )
    bench.add_argument("--seconds", type=int, default=15, help="pipeline: how long wrk runs")
    bench.add_argument("--connections", type=int, default=64, help="pipeline: wrk connections")
    bench.add_argument("--users", type=int, default=50, help="pipeline: distinct traders")
    bench.add_argument("--rate", type=int, default=20_000, help="batcher: orders/s offered")
    bench.add_argument("--load", type=int, default=5_000, help="migration: orders/s offered")
    bench.add_argument("--migrations", type=int, default=20, help="migration: moves to make")
    bench.add_argument("--hot-share", type=float, default=0.8, help="migration: hot symbol's share")

    move = commands.add_parser("migrate", help="move a symbol to another shard, live")
    move.add_argument("symbol")
    move.add_argument("--to", type=int, required=True, dest="to_shard", help="target shard")
    move.add_argument("--timeout", type=float, default=5.0, help="seconds per step")

    rebalance = commands.add_parser(
        "rebalancer", help="move hot symbols off overloaded shards, automatically"
    )
    rebalance.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    rebalance.add_argument("--once", action="store_true", help="one evaluation, then exit")
    rebalance.add_argument("--dry-run", action="store_true", help="decide and log, move nothing")

    commands.add_parser("cost", help="monthly AWS cost of infra/terraform (see spot cost -h)")
    return parser


def _shard_list(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shard list: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cost"]:  # spot cost parses its own options
        from spot import cost

        return cost.main(argv[1:])
    args = _parser().parse_args(argv)
    from schema.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as e:
        print(f"spot: {e}", file=sys.stderr)
        return 2
    command: Callable[[Any, Settings], int] = COMMANDS[args.command]
    return command(args, settings)


def _up(args: argparse.Namespace, settings: Any) -> int:
    from spot.stack import Stack
    from spot.supervisor import Supervisor, child_env, children
    from store import db

    with Stack(settings) as (redis_url, database_url):
        db.upgrade(database_url)
        if args.seed:
            _with_redis(redis_url, lambda redis: _seed_into(redis, settings, args.users))
        secret_note = " (the dev secret: set SPOT_JWT_SECRET)" if settings.dev_secret else ""
        print(
            f"Spot is up: API at http://{settings.api_host}:{settings.api_port}, "
            f"{settings.shards} matching workers, Redis {redis_url}\n"
            f"  a token: spot token u1{secret_note}\n"
            f"  status:  spot status\n"
            f"Ctrl-C stops everything (workers snapshot their books first).",
            flush=True,
        )
        Supervisor(children(settings), child_env(redis_url, database_url)).run()
    return 0


def _seed(args: argparse.Namespace, settings: Any) -> int:
    from spot.stack import Stack

    with Stack(settings) as (redis_url, _):
        _with_redis(redis_url, lambda redis: _seed_into(redis, settings, args.users))
    return 0


async def _seed_into(redis: Any, settings: Any, users: int) -> None:
    from spot.seed import seed

    placement = await seed(redis, settings.shards, users)
    print(f"seeded {len(placement)} symbols and users u1..u{users}:")
    for symbol, shard in sorted(placement.items(), key=lambda item: item[1]):
        print(f"  {symbol:<10} shard {shard}")


def _status(args: argparse.Namespace, settings: Any) -> int:
    from spot.stack import Stack
    from spot.status import (
        batcher_status,
        migration_status,
        rebalancer_status,
        render,
        shard_status,
    )

    async def show(redis: Any) -> None:
        print(render(await shard_status(redis, settings.shards)))
        print(await batcher_status(redis))
        print(await migration_status(redis))
        print(await rebalancer_status(redis))

    with Stack(settings) as (redis_url, _):
        _with_redis(redis_url, show)
    return 0


def _api(args: argparse.Namespace, settings: Any) -> int:
    from spot.api_server import serve

    if settings.redis_url is None:
        print("spot api: set SPOT_REDIS_URL (spot up does it for you)", file=sys.stderr)
        return 2
    serve(settings)
    return 0


def _worker(args: argparse.Namespace, settings: Any) -> int:
    from workers.worker import run_worker

    if settings.redis_url is None:
        print("spot worker: set SPOT_REDIS_URL (spot up does it for you)", file=sys.stderr)
        return 2
    shards = list(range(settings.shards)) if args.shards is None else args.shards
    if not shards or not all(0 <= n < settings.shards for n in shards):
        print(f"spot worker: shards must be within 0..{settings.shards - 1}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(settings, shards)
    return 0


def _batcher(args: argparse.Namespace, settings: Any) -> int:
    from batcher.batcher import run_batcher

    if settings.redis_url is None or settings.database_url is None:
        print("spot batcher: set SPOT_REDIS_URL and SPOT_DATABASE_URL", file=sys.stderr)
        return 2
    shards = list(range(settings.shards)) if args.shards is None else args.shards
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_batcher(settings, shards)
    return 0


def _audit(args: argparse.Namespace, settings: Any) -> int:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs

    from spot.audit import audit, render, wait_caught_up
    from spot.stack import Stack

    verdict: list[bool] = []

    async def check(redis: Any) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            behind = await wait_caught_up(redis, conn, settings.shards, args.wait)
            found = await audit(redis, conn)
        finally:
            await conn.close()
        print(render(found, behind))
        verdict.append(not behind and not any(found.values()))

    with Stack(settings) as (redis_url, database_url):
        _with_redis(redis_url, check)
    print("audit: clean" if verdict[0] else "audit: DIFFERENCES FOUND")
    return 0 if verdict[0] else 1


def _db(args: argparse.Namespace, settings: Any) -> int:
    from spot.stack import Stack
    from store import db

    with Stack(settings) as (_, database_url):
        if args.action == "upgrade":
            db.upgrade(database_url, args.revision or "head")
        else:
            db.downgrade(database_url, args.revision or "-1")
    return 0


def _token(args: argparse.Namespace, settings: Any) -> int:
    from api.auth import make_token

    try:
        print(make_token(args.user, secret=settings.jwt_secret, admin=args.admin))
    except ValueError as e:
        print(f"spot token: {e}", file=sys.stderr)
        return 2
    return 0


def _replay(args: argparse.Namespace, settings: Any) -> int:
    from spot.replay import run

    return run(args.file, args.symbols, sys.stdout.buffer)


def _bench(args: argparse.Namespace, settings: Any) -> int:
    if args.target == "engine":
        from spot.bench.engine import engine

        engine(args.orders, args.runs, args.workload)
        return 0
    if args.target == "batcher":
        from spot.bench.batcher import batcher

        return batcher(settings, args.rate, args.seconds)
    if args.target == "migration":
        from spot.bench.migration import migration_bench

        return migration_bench(settings, args.load, args.migrations, args.hot_share, args.users)
    from spot.bench.pipeline import pipeline

    return pipeline(settings, args.seconds, args.connections, args.users)


def _migrate(args: argparse.Namespace, settings: Any) -> int:
    from control import migration, wiring
    from spot.stack import Stack

    if not 0 <= args.to_shard < settings.shards:
        print(f"spot migrate: --to must be within 0..{settings.shards - 1}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {}

    async def move(redis: Any) -> None:
        orchestrator = wiring.orchestrator(redis, settings)
        result.update(await orchestrator.migrate(args.symbol, args.to_shard, args.timeout))

    with Stack(settings) as (redis_url, _):
        try:
            _with_redis(redis_url, move)
        except migration.MigrationError as e:
            print(f"spot migrate: {e}", file=sys.stderr)
            return 1
    print(
        f"migration {result['id']}: {result['symbol']} shard {result['from']} -> "
        f"{result['to']}: {result['state']}"
    )
    for step, ms in result["timings_ms"].items():
        print(f"  {step:<9} {ms:>6} ms")
    if "paused_for_ms" in result:
        print(f"  paused {result['paused_for_ms']} ms, {result['pending']} commands buffered")
    return 0 if result["state"] == "DONE" else 1


def _rebalancer(args: argparse.Namespace, settings: Any) -> int:
    from control import wiring
    from control.rebalancer import Rebalancer, run_rebalancer
    from spot.stack import Stack

    if args.interval <= 0:
        print("spot rebalancer: --interval must be positive", file=sys.stderr)
        return 2

    def build(redis: Any) -> Rebalancer:
        return wiring.rebalancer(redis, settings, interval_s=args.interval, dry_run=args.dry_run)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with Stack(settings) as (redis_url, _):
        if not args.once:
            run_rebalancer(redis_url, build)
            return 0

        async def once(redis: Any) -> None:
            rebalancer = build(redis)
            await rebalancer.start()
            decision = await rebalancer.evaluate()
            for n in range(settings.shards):
                symbols = ",".join(sorted(rebalancer.last_loads[n].rates)) or "-"
                print(
                    f"shard {n:>3}  {rebalancer.rebalance.levels[n].name:<7}  "
                    f"{rebalancer.last_loads[n].load:>6.1%}  {symbols}"
                )
            print(f"{decision.code}: {decision.reason}")

        _with_redis(redis_url, once)
    return 0


def _with_redis(url: str, work: Callable[[Any], Awaitable[None]]) -> None:
    from redis.asyncio import Redis

    async def run() -> None:
        redis = Redis.from_url(url)
        try:
            await work(redis)
        finally:
            await redis.aclose()

    asyncio.run(run())


COMMANDS: dict[str, Callable[[Any, Any], int]] = {
    "up": _up,
    "seed": _seed,
    "status": _status,
    "api": _api,
    "worker": _worker,
    "batcher": _batcher,
    "audit": _audit,
    "db": _db,
    "token": _token,
    "replay": _replay,
    "bench": _bench,
    "migrate": _migrate,
    "rebalancer": _rebalancer,
}

if __name__ == "__main__":
    sys.exit(main())
