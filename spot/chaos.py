"""`spot chaos`: SIGKILL the processes of a `spot up` at random under load, then check that
nothing was lost (issue #19's own experiment, as a command).

It runs `spot up --seed` with embedded servers in a throwaway data folder. Traders (one
thread each) place orders, each with a client_order_id retried with the same id while no
answer comes (a timeout, a refused connection, a 503 or 429), and cancel some of them.
Meanwhile `--kills` times, `--interval` seconds after the stack came back from the last,
one process is SIGKILLed: the API, a matching worker, the batcher, Redis or PostgreSQL,
every kind once in a random order, then again. Then, with the load stopped:

- `spot audit` is clean (Redis and the database agree, money is conserved);
- every accepted order (a 202, or a 409 naming the order its id already has) is in the
  database, once per client_order_id, with a status; every cancel answered 202 ended its
  order (CANCELED, or FILLED first);
- no answer was a 500;
- once `spot up` stops, none of its processes is left.

It prints the kills, the orders, what was lost (0) and how long each kind of process took
to come back (until it runs again and /readyz answers 200). Exit 1 on any failure.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs
import psutil  # type: ignore[import-untyped]  # psutil ships no stubs (types-psutil unlocked)

from api.auth import make_token
from spot.seed import DEMO_SYMBOLS
from spot.supervisor import spot_command

SECRET = "spot-chaos-secret-long-enough-for-hs256"
KINDS = ("api", "worker", "batcher", "redis", "postgres")
START_TIMEOUT_S = 120.0
RECOVER_TIMEOUT_S = 90.0
RETRY_FOR_S = 60.0  # a command is retried with the same id this long at most
SYMBOLS = DEMO_SYMBOLS[:4]
# The embedded servers' pid files in the data folder (spot/stack.py).
SERVER_PIDS = {"redis": "redis/redis.pid", "postgres": "postgres/postmaster.pid"}


@dataclass
class Tally:
    """What the traders saw, shared by their threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (user, cid)
    canceled: set[int] = field(default_factory=set)  # cancels answered 202
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    given_up: int = 0  # commands never answered within RETRY_FOR_S
    errors: list[str] = field(default_factory=list)  # 500s


class Trader(threading.Thread):
    def __init__(self, port: int, user: str, tally: Tally, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.user, self.tally, self.stop = port, user, tally, stop
        self.token = make_token(user, secret=SECRET)
        self.rng = random.Random(user)
        self.mine: list[int] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            if self.mine and self.rng.random() < 0.3:
                self.cancel(self.mine.pop(self.rng.randrange(len(self.mine))))
            else:
                self.place(f"{self.user}-{n}")

    def place(self, cid: str) -> None:
        spec = self.rng.choice(SYMBOLS)
        ref = spec.reference_price or 10_000
        body = {
            "symbol": spec.symbol,
            "side": self.rng.choice(("BUY", "SELL")),
            "price": ref + self.rng.randrange(-5, 6) * ref // 1_000,
            "quantity": self.rng.randrange(1, 5),
            "client_order_id": cid,
        }
        status, reply = self.send("POST", "/v1/orders", body)
        order_id = reply.get("order_id") if status in (202, 409) else None
        if order_id is not None:  # 409: the id is an earlier (retried) order's
            with self.tally.lock:
                self.tally.accepted[int(order_id)] = (self.user, cid)
            self.mine.append(int(order_id))

    def cancel(self, order_id: int) -> None:
        if self.send("DELETE", f"/v1/orders/{order_id}")[0] == 202:
            with self.tally.lock:
                self.tally.canceled.add(order_id)

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """Until answered (anything but 503, 429 or no answer), or RETRY_FOR_S."""
        deadline = time.monotonic() + RETRY_FOR_S
        while time.monotonic() < deadline and not self.stop.is_set():
            status, reply = self._once(method, path, body)
            with self.tally.lock:
                self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
                if status >= 500 and status != 503:
                    self.tally.errors.append(f"{method} {path}: {status} {reply}")
            if status not in (0, 429, 503):
                return status, reply
            time.sleep(0.2)
        with self.tally.lock:
            self.tally.given_up += 1
        return 0, {}

    def _once(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else {}
        except (OSError, http.client.HTTPException, ValueError):
            return 0, {}  # no answer (or half of one): retried
        finally:
            conn.close()


class Stack:
    """The `spot up` under test and its processes."""

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.seen: set[int] = set()  # every pid of the stack, for the leak check
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
        env |= {"SPOT_DATA_DIR": str(data), "SPOT_API_PORT": str(port), "SPOT_JWT_SECRET": SECRET}
        self.env = env
        self.log = (data.parent / "spot-up.log").open("wb")
        self.up = subprocess.Popen(
            [*spot_command("up", "--seed", "--users", "10")], env=env, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def pids(self) -> dict[str, list[int]]:
        """Live processes by kind: the API (`spot api`), workers, batcher, servers."""
        out: dict[str, list[int]] = {kind: [] for kind in KINDS}
        for proc in psutil.Process(self.up.pid).children():
            try:
                args = proc.cmdline()
            except psutil.Error:
                continue
            kind = next((k for k in ("api", "worker", "batcher") if k in args), None)
            if kind is not None:
                out[kind].append(proc.pid)
        for kind, pidfile in SERVER_PIDS.items():
            pid = _pid_in(self.data / pidfile)
            if pid is not None and _alive(pid):
                out[kind].append(pid)
        for group in out.values():
            self.seen.update(group)
        with_children = [psutil.Process(p) for group in out.values() for p in group if _alive(p)]
        for proc in with_children:
            try:
                self.seen.update(c.pid for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        return out

    def ready(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while not self.ready():
            if self.up.poll() is not None or time.monotonic() - started > timeout:
                raise RuntimeError(f"the stack did not come back; see {self.log.name}")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill(self, kind: str, rng: random.Random) -> float:
        """SIGKILL one process of `kind`; seconds until one runs again and /readyz is 200."""
        before = self.pids()[kind]
        victim = rng.choice(before)
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while True:
            now = self.pids()[kind]
            if victim not in now and len(now) >= len(before) and self.ready():
                return time.monotonic() - started
            if self.up.poll() is not None or time.monotonic() - started > RECOVER_TIMEOUT_S:
                raise RuntimeError(f"{kind} did not come back; see {self.log.name}")
            time.sleep(0.1)

    def database_url(self) -> str:
        port = (self.data / "postgres.port").read_text().split()[1]
        return f"postgresql://postgres@127.0.0.1:{port}/spot"

    def audit(self) -> tuple[bool, str]:
        done = subprocess.run(
            spot_command("audit", "--wait", "60"), env=self.env, capture_output=True, text=True
        )
        return done.returncode == 0, done.stdout + done.stderr

    def stop(self) -> list[int]:
        """Ctrl-C, as a person would; the pids of the stack still alive after."""
        self.up.send_signal(signal.SIGINT)
        try:
            self.up.wait(60)
        except subprocess.TimeoutExpired:
            self.up.kill()
            self.up.wait()
        self.log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in self.seen):
            time.sleep(0.2)
        return sorted(p for p in self.seen if _alive(p))


def chaos(kills: int, interval: float, traders: int, seed: int) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="spot-chaos-") as folder:
        stack = Stack(Path(folder) / "data", _free_port())
        try:
            stack.wait_ready(START_TIMEOUT_S)
            return _run(stack, kills, interval, traders, rng)
        finally:
            if stack.up.poll() is None:
                left = stack.stop()
                if left:
                    print(f"LEAKED: {left} outlived spot up", file=sys.stderr)


def _run(stack: Stack, kills: int, interval: float, traders: int, rng: random.Random) -> int:
    tally, stop = Tally(), threading.Event()
    load = [Trader(stack.port, f"u{n + 1}", tally, stop) for n in range(traders)]
    for trader in load:
        trader.start()
    recoveries: dict[str, list[float]] = {kind: [] for kind in KINDS}
    order: list[str] = []
    for _ in range(kills):
        time.sleep(interval)
        if not order:
            order = rng.sample(KINDS, len(KINDS))
        kind = order.pop()
        recoveries[kind].append(stack.kill(kind, rng))
        print(f"chaos: killed {kind}, back in {recoveries[kind][-1]:.1f} s", flush=True)
    stop.set()
    for trader in load:
        trader.join(RETRY_FOR_S + 10)
    clean, report = stack.audit()
    lost, repeated, uncanceled = asyncio.run(_check(stack.database_url(), tally))
    left = stack.stop()
    failures = {
        "audit": not clean,
        "lost": bool(lost),
        "repeated client ids": bool(repeated),
        "cancels not honoured": bool(uncanceled),
        "500s": bool(tally.errors),
        "leaked processes": bool(left),
    }
    killed = sum(len(v) for v in recoveries.values())
    print(f"chaos: {killed} kills, {len(tally.accepted)} accepted orders, {len(lost)} lost, "
          f"{len(tally.canceled)} cancels, {tally.given_up} commands never answered")  # fmt: skip
    for kind, times in recoveries.items():
        if times:
            back = ", ".join(f"{t:.1f}" for t in times)
            print(f"  {kind:<9} {len(times)} kills, back in {back} s")
    print(f"  answers: {dict(sorted(tally.statuses.items()))}")
    for name, failed in failures.items():
        if failed:
            print(f"FAILED: {name}", file=sys.stderr)
    for detail in (lost[:10], repeated[:10], uncanceled[:10], tally.errors[:10], left):
        if detail:
            print(f"  {detail}", file=sys.stderr)
    if not clean:
        print(report, file=sys.stderr)
    return 1 if any(failures.values()) else 0


async def _check(url: str, tally: Tally) -> tuple[list[int], list[Any], list[int]]:
    """Accepted orders missing from the database; client ids with two orders; cancels
    answered 202 whose order did not end."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT order_id, status FROM orders WHERE order_id = ANY($1)", list(tally.accepted)
        )
        status = {r["order_id"]: r["status"] for r in rows}
        repeated = await conn.fetch(
            "SELECT user_id, client_order_id, count(*) FROM orders"
            " WHERE client_order_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1"
        )
    finally:
        await conn.close()
    lost = sorted(set(tally.accepted) - set(status))
    uncanceled = sorted(
        o for o in tally.canceled if o in status and status[o] not in ("CANCELED", "FILLED")
    )
    return lost, [tuple(r) for r in repeated], uncanceled


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
