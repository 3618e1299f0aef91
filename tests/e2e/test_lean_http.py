"""loadtest/lean_http.py against a real socket server: tests/e2e/lean_http_check.py.

Locust monkeypatches the process with gevent when imported, so the checks run in their own
process, never in this one; they print which passed and which failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import locust"], capture_output=True).returncode,
    reason="locust is not installed",
)
def test_lean_http_client_checks_pass() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.e2e.lean_http_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
