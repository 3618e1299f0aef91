"""`python -m loadtest.run` end to end, small: the stack, the seed, Locust, the summary.

Locust runs on gevent, so it runs in the runner's subprocesses only, never in this one.
The latency thresholds are set out of reach on purpose: tests assert behaviour, not
timings (the machine may be busy with anything); errors and the audit must be clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import locust"], capture_output=True).returncode,
    reason="locust is not installed",
)
def test_a_short_low_rate_run_passes_with_a_clean_audit(tmp_path: Path) -> None:
    # Embedded servers in a throwaway folder, whatever servers the machine has.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env["SPOT_JWT_SECRET"] = "loadtest-e2e-secret-long-enough-for-hs256"
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--seconds", "10", "--rate", "200",
         "--users", "60", "--processes", "1", "--out", str(out),
         "--min-orders-per-s", "100", "--p95-ms", "60000", "--p99-ms", "60000",
         "--max-error-rate", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    summary = run.stdout
    for line in ("offered: order commands sent", "accepted (202)", "persisted orders",
                 "matched: trades", "HTTP response, all requests", "acceptance→committed",
                 "Redis used_memory", "CPU seconds", "audit: clean", "thresholds met"):  # fmt: skip
        assert line in summary, summary
    for name in ("report.html", "locust_stats.csv", "locust_stats_history.csv", "timeline.png"):
        assert (out / name).stat().st_size > 0, name
