"""The `spot` command: one entry point, one subcommand per job."""

import argparse
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

    commands.add_parser("cost", help="monthly AWS cost of infra/terraform (see spot cost -h)")

    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cost"]:  # spot cost parses its own options
        from spot import cost

        return cost.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "replay":
        from spot.replay import run

        return run(args.file, args.symbols, sys.stdout.buffer)
    if args.command == "bench":
        from spot import bench

        bench.engine(args.orders, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
