"""`spot status`, `spot audit`, `spot migrate` and `spot rebalancer` look at the stack that
runs (issue #19): without URLs they find the embedded servers `spot up` runs in the data
folder, and say so when there are none, instead of starting empty servers of their own and
reporting on those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from spot.stack import EmbeddedRedis
from tests.integration.http import ROOT


def spot(*args: str, data: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {"SPOT_DATA_DIR": str(data), **{f"SPOT_{k.upper()}": v for k, v in settings.items()}}
    return subprocess.run(
        [sys.executable, "-m", "spot.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def servers_of(data: Path) -> list[int]:
    """Processes whose command line names the data folder: an embedded server there."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(data) in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found


@pytest.mark.parametrize(
    "command", [["status"], ["audit", "--wait", "0"], ["migrate", "AAPL", "--to", "1"]]
)
def test_without_a_stack_they_say_so_and_start_nothing(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    done = spot(*command, data=data)
    assert done.returncode == 1, done
    assert "no Spot stack is running here: no embedded Redis runs in" in done.stderr
    assert "spot up" in done.stderr
    assert not data.exists()  # no server was started there
    assert servers_of(data) == []


def test_they_find_the_running_embedded_servers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    redis = EmbeddedRedis(data / "redis", durable=False)  # where `spot up` puts it
    redis.start()
    try:
        done = spot("status", data=data)
        assert done.returncode == 0, done
        assert "batcher: no flush yet" in done.stdout
        # the audit needs the database too: none runs, and it says which
        done = spot("audit", "--wait", "0", data=data)
        assert done.returncode == 1
        assert "no embedded PostgreSQL runs in" in done.stderr
        assert not (data / "postgres").exists()
    finally:
        redis.stop()


def test_with_urls_they_use_those(redis_url: str, tmp_path: Path) -> None:
    done = spot("status", data=tmp_path / "data", redis_url=redis_url)
    assert done.returncode == 0, done
    assert not (tmp_path / "data").exists()
