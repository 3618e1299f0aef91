"""The `spot` command: one entry point, one subcommand per job."""

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="feed JSON-line commands through the engine")
    replay.add_argument("file", help="commands, one JSON object a line")
    replay.add_argument("--symbols", help="JSON list of symbol specs (default: tick 1, lot 1)")

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench.add_argument("target", choices=["engine"])
    bench.add_argument("--orders", type=int, default=500_000, help="orders per run")
    bench.add_argument("--runs", type=int, default=3, help="runs; the median is printed")

    worker = commands.add_parser("worker", help="a matching worker for some shards")
    worker.add_argument(
        "--shards",
        type=_shard_list,
        help="a shard number or a comma-separated list (default: every shard)",
    )

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
    if args.command == "replay":
        from spot.replay import run

        return run(args.file, args.symbols, sys.stdout.buffer)
    if args.command == "worker":
        return _worker(args.shards)
    if args.command == "bench":
        from spot import bench

        bench.engine(args.orders, args.runs)
    return 0


def _worker(shards: list[int] | None) -> int:
    from spot.settings import Settings
    from workers.consumer import run_worker

    settings = Settings.from_env()
    if settings.redis_url is None:
        print("spot worker: set SPOT_REDIS_URL (spot up does it for you)", file=sys.stderr)
        return 2
    shards = list(range(settings.shards)) if shards is None else shards
    if not shards or not all(0 <= n < settings.shards for n in shards):
        print(f"spot worker: shards must be within 0..{settings.shards - 1}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(settings.redis_url, shards, settings.worker_batch, settings.snapshot_interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
