"""The `spot` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
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

    apikey = commands.add_parser(
        "apikey", help="issue (or list, or revoke) a user's API keys for /api/v3"
    )
    apikey.add_argument("user")
    apikey.add_argument("--trade", action="store_true", help="may place and cancel orders too")
    apikey.add_argument("--list", action="store_true", help="list the user's keys instead")
    apikey.add_argument("--revoke", metavar="KEY", help="revoke this key of the user's instead")
    tier = commands.add_parser(
        "fee-tier",
        help="show, set or remove a user's fee tier (rates in place of every symbol's)",
    )
    tier.add_argument("user")
    tier.add_argument("--maker-bps", type=int, help="maker rate; negative: a rebate")
    tier.add_argument("--taker-bps", type=int, help="taker rate")
    tier.add_argument("--delete", action="store_true", help="the symbols' rates apply again")

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
    bench.add_argument(
        "--api",
        choices=["v1", "v3"],
        default="v1",
        help="pipeline: POST /v1/orders, or Binance's signed POST /api/v3/order",
    )
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

    chaos = commands.add_parser(
        "chaos", help="SIGKILL the processes of a spot up at random under load, then audit"
    )
    chaos.add_argument("--kills", type=int, default=10, help="processes to kill, one at a time")
    chaos.add_argument("--interval", type=float, default=5.0, help="seconds of load between")
    chaos.add_argument("--traders", type=int, default=8, help="trading threads")
    chaos.add_argument("--seed", type=int, default=1, help="of the kills' random order")

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

    stack = Stack(settings)
    with stack as (redis_url, database_url):
        db.upgrade(database_url)
        problems = _database_problems(database_url)
        if problems:
            print(f"spot up: {problems}", file=sys.stderr)
            return 2
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
        supervisor = Supervisor(
            children(settings),
            child_env(redis_url, database_url),
            servers=dict(stack.embedded()),
            data_dir=settings.data_dir,
        )
        supervisor.run()
    return 0


def _database_problems(database_url: str) -> str | None:
    """What the database lacks for Spot (named settings, each with its fix), or None: said
    before any process starts rather than found by the batcher's first flush."""
    from store.database import DatabaseSettingsError, open_database, require_settings

    async def check() -> None:
        database = await open_database(database_url, max_size=1)
        try:
            await require_settings(database)
        finally:
            await database.close()

    try:
        asyncio.run(check())
    except DatabaseSettingsError as e:
        return str(e)
    return None


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

    urls = _running(settings, "status", database=False)
    if urls is None:
        return 1
    _with_redis(urls[0], show)
    return 0


def _running(settings: Any, command: str, *, database: bool) -> tuple[str, Any] | None:
    """The running stack's URLs (spot/stack.py `Stack.running`), or None, said on stderr."""
    from spot.stack import NotRunning, Stack

    try:
        return Stack(settings).running(database=database)
    except NotRunning as exc:
        print(f"spot {command}: {exc}", file=sys.stderr)
        return None


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
    from spot.audit import audit, render, wait_caught_up
    from store.database import open_database

    verdict: list[bool] = []

    async def check(redis: Any) -> None:
        db = await open_database(database_url, max_size=1)
        try:
            behind = await wait_caught_up(redis, db, settings.shards, args.wait)
            found = await audit(redis, db)
        finally:
            await db.close()
        print(render(found, behind))
        verdict.append(not behind and not any(found.values()))

    urls = _running(settings, "audit", database=True)
    if urls is None:
        return 1
    redis_url, database_url = urls
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


def _apikey(args: argparse.Namespace, settings: Any) -> int:
    from api.apikeys import ApiKeyStore, master_key
    from schema.wire import USER_ID_PATTERN
    from spot.stack import Stack

    if not re.match(USER_ID_PATTERN, args.user):
        print(f"spot apikey: user id must match {USER_ID_PATTERN}", file=sys.stderr)
        return 2
    master = master_key(settings.api_key_secret, settings.jwt_secret)
    found: list[bool] = []

    async def act(redis: Any) -> None:
        store = ApiKeyStore(redis, master)
        if args.revoke is not None:
            found.append(await store.revoke(args.user, args.revoke))
        elif args.list:
            for view in await store.list(args.user):
                print(f"{view.api_key}  {','.join(view.permissions)}  created_ms {view.created_ms}")
        else:
            created = await store.create(args.user, ["read", "trade"] if args.trade else ["read"])
            print(f"api_key {created.api_key}\nsecret  {created.secret}")
            print(f"permissions {','.join(created.permissions)} (the secret is not shown again)")

    if settings.redis_url is not None:  # keys live in Redis alone: no database to start
        _with_redis(settings.redis_url, act)
    else:
        with Stack(settings) as (redis_url, _):
            _with_redis(redis_url, act)
    if found and not found[0]:
        print(f"spot apikey: {args.user} has no key {args.revoke}", file=sys.stderr)
        return 1
    return 0


def _fee_tier(args: argparse.Namespace, settings: Any) -> int:
    import re

    from schema.fees import FeeTier
    from schema.wire import USER_ID_PATTERN
    from spot.stack import Stack
    from store import fee_tiers

    given = [rate is not None for rate in (args.maker_bps, args.taker_bps)]
    if not re.match(USER_ID_PATTERN, args.user):
        print(f"spot fee-tier: a user id matches {USER_ID_PATTERN}", file=sys.stderr)
        return 2
    if given[0] != given[1] or (args.delete and any(given)):
        print("spot fee-tier: give --maker-bps and --taker-bps, or --delete", file=sys.stderr)
        return 2
    try:
        tier = FeeTier(args.maker_bps, args.taker_bps) if all(given) else None
    except ValueError as e:
        print(f"spot fee-tier: {e}", file=sys.stderr)
        return 2
    shown: list[str] = []

    async def change(redis: Any) -> None:
        if tier is not None:
            await fee_tiers.set_tier(redis, args.user, tier)
            found: FeeTier | None = tier
            note = " (every API process applies it within 1 s)"
        elif args.delete:
            found = await fee_tiers.delete_tier(redis, args.user)
            note = " removed: the symbols' rates apply"
        else:
            found = await fee_tiers.get_tier(redis, args.user)
            note = ""
        if found is None:
            shown.append(f"{args.user}: no fee tier, the symbols' rates apply")
        else:
            rates = f"maker {found.maker_bps} bps, taker {found.taker_bps} bps"
            shown.append(f"{args.user}: {rates}{note}")

    with Stack(settings) as (redis_url, _):
        _with_redis(redis_url, change)
    print(shown[0])
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

    return pipeline(settings, args.seconds, args.connections, args.users, args.api)


def _migrate(args: argparse.Namespace, settings: Any) -> int:
    from control import migration, wiring

    if not 0 <= args.to_shard < settings.shards:
        print(f"spot migrate: --to must be within 0..{settings.shards - 1}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {}

    async def move(redis: Any) -> None:
        orchestrator = wiring.orchestrator(redis, settings)
        result.update(await orchestrator.migrate(args.symbol, args.to_shard, args.timeout))

    urls = _running(settings, "migrate", database=False)
    if urls is None:
        return 1
    try:
        _with_redis(urls[0], move)
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

    if args.interval <= 0:
        print("spot rebalancer: --interval must be positive", file=sys.stderr)
        return 2

    def build(redis: Any) -> Rebalancer:
        return wiring.rebalancer(redis, settings, interval_s=args.interval, dry_run=args.dry_run)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    urls = _running(settings, "rebalancer", database=False)
    if urls is None:
        return 1
    redis_url = urls[0]
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


def _chaos(args: argparse.Namespace, settings: Any) -> int:
    from spot.chaos import chaos

    return chaos(args.kills, args.interval, args.traders, args.seed)


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
    "apikey": _apikey,
    "fee-tier": _fee_tier,
    "replay": _replay,
    "bench": _bench,
    "migrate": _migrate,
    "rebalancer": _rebalancer,
    "chaos": _chaos,
}

if __name__ == "__main__":
    sys.exit(main())
