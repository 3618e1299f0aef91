"""`spot up`: the whole exchange on one machine.

Starts Redis and PostgreSQL (embedded unless URLs are given), then the API, one
matching worker per shard, the batcher and (with SPOT_REBALANCER=1) the rebalancer, each
its own process. A process that dies
is restarted (a worker recovers from its snapshot). Ctrl-C stops everything: the
children get SIGTERM, so workers snapshot their books before they exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from schema.settings import Settings

STOP_GRACE_S = 20.0
RESTART_BACKOFF_S = 1.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0


def spot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spot.cli", *args]


def children(settings: Settings) -> list[Child]:
    procs = [Child("api", spot_command("api"))]
    workers = min(settings.worker_processes or os.cpu_count() or 1, settings.shards)
    for n, shards in enumerate(deal(settings.shards, workers)):
        procs.append(Child(f"worker-{n}", spot_command("worker", "--shards", shards)))
    # One batcher: two measured slower, their flushes waiting on each other's balance rows.
    procs.append(Child("batcher", spot_command("batcher")))
    if settings.rebalancer:  # SPOT_REBALANCER=1
        procs.append(Child("rebalancer", spot_command("rebalancer")))
    return procs


def deal(shards: int, processes: int) -> list[str]:
    """Shard lists, round robin: deal(10, 3) -> ["0,3,6,9", "1,4,7", "2,5,8"]."""
    processes = min(processes, shards)
    return [",".join(str(s) for s in range(n, shards, processes)) for n in range(processes)]


class Supervisor:
    def __init__(self, procs: list[Child], env: dict[str, str]) -> None:
        self.procs = procs
        self.env = env
        self.stopping = False

    def start(self, child: Child) -> None:
        # Own session: a Ctrl-C reaches only the supervisor, which stops children in order.
        child.process = subprocess.Popen(child.argv, env=self.env, start_new_session=True)
        child.started_at = time.monotonic()

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        for child in self.procs:
            self.start(child)
        while not self.stopping:
            time.sleep(0.2)
            for child in self.procs:
                assert child.process is not None
                code = child.process.poll()
                if code is None or self.stopping:
                    continue
                if time.monotonic() - child.started_at < RESTART_BACKOFF_S:
                    time.sleep(RESTART_BACKOFF_S)
                child.restarts += 1
                print(f"spot up: {child.name} exited ({code}); restarting", file=sys.stderr)
                self.start(child)
        self.shutdown()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        running = [c.process for c in self.procs if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_env(redis_url: str, database_url: str) -> dict[str, str]:
    return {**os.environ, "SPOT_REDIS_URL": redis_url, "SPOT_DATABASE_URL": database_url}
