"""`spot chaos`, short (issue #19): every kind of process of a `spot up` (the API, a
worker, the batcher, Redis, PostgreSQL) SIGKILLed once under load, then nothing lost, no
client order id twice, cancels honoured, no 500, the audit clean, no process left behind.
README has the long run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.http import ROOT

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("SPOT_REDIS_URL") or os.environ.get("SPOT_DATABASE_URL")),
    reason="kills the embedded servers: runs without SPOT_REDIS_URL / SPOT_DATABASE_URL",
)


def test_nothing_is_lost_when_every_kind_of_process_is_killed() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    done = subprocess.run(
        [sys.executable, "-m", "spot.cli", "chaos", "--kills", "5", "--interval", "3",
         "--traders", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 lost," in done.stdout
    for kind in ("api", "worker", "batcher", "redis", "postgres"):
        assert f"killed {kind}," in done.stdout, done.stdout
