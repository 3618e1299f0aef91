"""The local processes a benchmark or the load test starts and measures: CPU time per
kind of process, who listens on a port, when the API is ready, the SPOT_* environment a
child inherits. Used by `spot bench` and loadtest/run.py alike."""

from __future__ import annotations

import os
import time
import urllib.request

import psutil  # type: ignore[import-untyped]  # psutil ships no stubs (types-psutil unlocked)


def spot_environment() -> dict[str, str]:
    """The SPOT_* variables of this process: what a stack it starts is configured by."""
    return {k: v for k, v in os.environ.items() if k.startswith("SPOT_")}


# The benchmarks drive the whole load through a few users from this machine: the abuse
# limits (api/limits.py, the open-order caps) would refuse most of it. Off for them, unless
# the caller's own SPOT_* environment sets them.
UNLIMITED = {
    "SPOT_RATE_LIMIT_USER": "0",
    "SPOT_RATE_LIMIT_ORDERS": "0",
    "SPOT_RATE_LIMIT_IP": "0",
    "SPOT_MAX_OPEN_ORDERS_PER_SYMBOL": str(10**9),
    "SPOT_MAX_OPEN_ORDERS": str(10**9),
}


def unlimited(env: dict[str, str]) -> dict[str, str]:
    """`env` with the abuse limits off where it does not set them."""
    return {**UNLIMITED, **env}


def pid_listening(port: int) -> int | None:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            pid: int | None = conn.pid
            return pid
    return None


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per process kind, children (granian workers, postgres
    backends) included."""
    out: dict[str, float] = {}
    for kind, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    times = p.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        out[kind] = total
    return out


def wait_ready(port: int, timeout: float = 60, server: int | None = None) -> None:
    """Until the API on `port` answers /readyz; with `server` (its pid), also that no other
    process listens there: Granian shares a port with any other Granian on it
    (SO_REUSEPORT), and a load test half against another stack measures nonsense."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    if server is not None:
                        check_sole_listener(port, server)
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the API never became ready")


def check_sole_listener(port: int, server: int) -> None:
    try:
        proc = psutil.Process(server)
        ours = {server} | {p.pid for p in proc.children(recursive=True)}
    except psutil.NoSuchProcess:
        raise RuntimeError(f"the API exited; whatever answers on port {port} is not it") from None
    listening = [
        conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    ]
    others = {pid for pid in listening if pid is not None} - ours  # None: not ours to see
    if others:
        raise RuntimeError(f"port {port} is also served by pid {sorted(others)}: another stack")
