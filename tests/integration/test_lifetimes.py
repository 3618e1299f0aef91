"""Process lifetimes (issue #19): a SIGKILLed `spot api` leaves no Granian worker behind
listening, and an orphaned Spot API is recognised as ours by its data folder. Against real
`spot api` processes on the tests' Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spot import lifetime
from spot.processes import pid_listening
from tests.integration.http import ROOT, SECRET, free_port

START_TIMEOUT_S = 30.0


def api_env(redis_url: str, port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    return env | {
        "SPOT_REDIS_URL": redis_url,
        "SPOT_API_PORT": str(port),
        "SPOT_JWT_SECRET": SECRET,
        "SPOT_DATA_DIR": str(data_dir),
    }


def wait_listening(port: int) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (pid := pid_listening(port)) is None:
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)
    return pid


def wait_gone(pids: list[int], port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(p) and _live(p) for p in pids) or pid_listening(port):
        assert time.monotonic() < deadline, f"still there: {pids}, port {port}"
        time.sleep(0.1)


def _live(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_a_killed_api_takes_its_granian_worker_with_it(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "api"],
        cwd=ROOT,
        env=api_env(redis_url, port, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        worker = wait_listening(port)
        assert psutil.Process(worker).ppid() == server.pid  # the worker, not the server, listens
        server.send_signal(signal.SIGKILL)
        server.wait()
        # Before the fix the worker went on serving for good, parented to init.
        wait_gone([worker], port)
    finally:
        lifetime.end_group(server.pid)


def start_orphan(redis_url: str, port: int, data_dir: Path) -> int:
    """A `spot api` whose parent is gone: started by a shell that exits at once."""
    subprocess.run(
        ["sh", "-c", f"{sys.executable} -m spot.cli api >/dev/null 2>&1 &"],
        cwd=ROOT,
        env=api_env(redis_url, port, data_dir),
        check=True,
    )
    worker = wait_listening(port)
    return int(psutil.Process(worker).ppid())


def test_an_orphaned_api_is_ours_by_its_data_folder(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    orphan = start_orphan(redis_url, port, tmp_path / "data")
    worker = wait_listening(port)  # what listens is its Granian worker
    try:
        assert lifetime.orphan_of_ours(worker, str(tmp_path / "data")) == orphan
        assert lifetime.orphan_of_ours(orphan, str(tmp_path / "data")) == orphan
        assert lifetime.orphan_of_ours(worker, str(tmp_path / "other")) is None
        assert lifetime.orphan_of_ours(os.getpid(), str(tmp_path / "data")) is None  # no API
        lifetime.end_tree(orphan)
        wait_gone([orphan, worker], port)
    finally:
        for pid in (orphan, worker):  # not end_group: the orphan shares this test's group
            if _live(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_running_api_is_no_orphan(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "api"],
        cwd=ROOT,
        env=api_env(redis_url, port, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        worker = wait_listening(port)
        assert lifetime.orphan_of_ours(worker, str(tmp_path)) is None  # this test runs it
        assert lifetime.orphan_of_ours(server.pid, str(tmp_path)) is None
    finally:
        server.terminate()
        server.wait()
        lifetime.end_group(server.pid)


@pytest.mark.parametrize("failures,wait", [(0, 0.0), (1, 0.5), (2, 1.0), (4, 4.0), (30, 8.0)])
def test_restarts_back_off_exponentially(failures: int, wait: float) -> None:
    from spot.supervisor import backoff_s

    assert backoff_s(failures) == wait
