"""`spot up`: the whole exchange on one machine.

Starts Redis and PostgreSQL (embedded unless URLs are given), then the API, one
matching worker per shard, the batcher and (with SPOT_REBALANCER=1) the rebalancer, each
its own process. A process that dies is restarted (a worker recovers from its snapshot),
at once if it had run a while, else after a delay that doubles with each quick exit in a
row: a child that cannot start (a port taken, a server down) is retried calmly, not 86
times a minute. An embedded Redis or PostgreSQL that dies is restarted the same way, on
its port and data. Ctrl-C stops everything: the children get SIGTERM, so workers snapshot
their books before they exit.

Lifetimes (spot/lifetime.py): each child leads its own process group and gets SIGTERM
from the kernel if `spot up` dies; what is left in a child's group once the child exited
(a Granian worker, say) is killed; before the API starts, an orphaned Spot API of this data
folder that still holds its port is ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Protocol

from schema.settings import Settings
from spot import lifetime
from spot.processes import pid_listening

STOP_GRACE_S = 20.0
POLL_S = 0.2
# A child (or server) that ran this long before it exited is restarted at once; quicker
# exits in a row wait BACKOFF_FIRST_S, then twice as long each time, at most BACKOFF_MAX_S.
STABLE_S = 10.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0  # a batcher waiting out PostgreSQL catches up at most this late
SERVER_CHECK_S = 1.0  # how often the embedded servers are looked at


def backoff_s(failures: int) -> float:
    """The wait before a restart after `failures` quick exits in a row (0: none)."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1)))


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pid: int = 0  # of its last start: the process group it leads
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # exits in a row that came within STABLE_S of their start
    due: float = 0.0  # while it is down: when (monotonic) it is started again
    port: int | None = None  # what it listens on (the API): freed of orphans before a start


class Server(Protocol):
    """An embedded server the supervisor keeps alive (spot/stack.py)."""

    def alive(self) -> bool: ...
    def restart(self) -> str: ...


@dataclass
class Watched:
    name: str
    server: Server
    failures: int = 0
    due: float = 0.0
    down_since: float | None = None


def spot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spot.cli", *args]


def children(settings: Settings) -> list[Child]:
    procs = [Child("api", spot_command("api"), port=settings.api_port or None)]
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


def say(line: str) -> None:
    print(f"spot up: {line}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(
        self,
        procs: list[Child],
        env: dict[str, str],
        *,
        servers: dict[str, Server] | None = None,
        data_dir: str = ".data",
    ) -> None:
        self.procs = procs
        self.env = env
        self.servers = [Watched(name, server) for name, server in (servers or {}).items()]
        self.data_dir = data_dir
        self.stopping = False
        self._servers_checked = 0.0

    def start(self, child: Child) -> None:
        if child.port is not None:
            self._free_port(child)
        me = os.getpid()
        # Own session: a Ctrl-C reaches only the supervisor, which stops children in order.
        # SIGTERM from the kernel if the supervisor dies, however (a SIGKILL included).
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=lambda: lifetime.die_with_parent(me),
        )
        child.pid = child.process.pid
        child.started_at = time.monotonic()

    def _free_port(self, child: Child) -> None:
        assert child.port is not None
        listener = pid_listening(child.port)
        orphan = None if listener is None else lifetime.orphan_of_ours(listener, self.data_dir)
        if orphan is not None:
            lifetime.end_tree(orphan)
            say(f"ended pid {orphan}, an orphaned Spot API of this stack on port {child.port}")

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        for child in self.procs:
            self.start(child)
        while not self.stopping:
            time.sleep(POLL_S)
            if self.stopping:
                break
            self._watch_servers()
            for child in self.procs:
                self._watch(child)
        self.shutdown()

    def _watch(self, child: Child) -> None:
        now = time.monotonic()
        if child.process is None:  # down, waiting for its start
            if now >= child.due and not self.stopping:
                child.restarts += 1
                self.start(child)
            return
        code = child.process.poll()
        if code is None:
            return
        ran_s = now - child.started_at
        child.process = None
        # What it leaves behind in its group (a Granian worker of the API) goes with it.
        leftovers = lifetime.end_group(child.pid) if child.pid else []
        child.failures = 0 if ran_s >= STABLE_S else child.failures + 1
        wait = backoff_s(child.failures)
        child.due = now + wait
        left = f", ended what it left running ({leftovers})" if leftovers else ""
        say(f"{child.name} exited ({code}) after {ran_s:.1f} s{left}; restarting in {wait:.1f} s")

    def _watch_servers(self) -> None:
        now = time.monotonic()
        if now - self._servers_checked < SERVER_CHECK_S:
            return
        self._servers_checked = now
        for watched in self.servers:
            if watched.server.alive():
                continue
            if watched.down_since is None:
                watched.down_since = now
                say(f"{watched.name} is down; restarting it on its port and data")
            if now < watched.due:
                continue
            try:
                url = watched.server.restart()
            except Exception as exc:  # a taken port, a slow shutdown: try again later
                watched.failures += 1
                wait = backoff_s(watched.failures)
                watched.due = time.monotonic() + wait
                why = " ".join(str(exc).split())
                say(f"{watched.name} did not restart ({why}); trying again in {wait:.1f} s")
                continue
            down_s = time.monotonic() - watched.down_since
            say(f"{watched.name} restarted at {url}, {down_s:.1f} s after it was found down")
            watched.failures, watched.down_since = 0, None

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        running = [c for c in self.procs if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        # Nothing of ours outlives `spot up`: whatever a child left in its group.
        for child in self.procs:
            if child.pid:
                lifetime.end_group(child.pid)


def child_env(redis_url: str, database_url: str) -> dict[str, str]:
    return {**os.environ, "SPOT_REDIS_URL": redis_url, "SPOT_DATABASE_URL": database_url}
