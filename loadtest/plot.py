"""A PNG of a run over time: throughput from Locust's stats history, HTTP latency
percentiles beside acceptance→committed (each batcher flush's oldest order), and Redis's
used_memory."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path


def plot(
    history_csv: Path,
    flushes: list[dict[str, float]],
    redis_memory: list[tuple[float, int]],
    out: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; before pyplot is imported
    import matplotlib.pyplot as plt

    rows = [r for r in _read(history_csv) if r.get("Name") == "Aggregated"]
    if not rows:
        return
    start = float(rows[0]["Timestamp"])
    t = [float(r["Timestamp"]) - start for r in rows]

    fig, (top, bottom, memory) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, height_ratios=(3, 3, 2)
    )
    top.plot(t, [_num(r["Requests/s"]) for r in rows], label="requests/s")
    top.plot(t, [_num(r["Failures/s"]) for r in rows], label="failures/s", color="tab:red")
    top.set_ylabel("per second")
    users = top.twinx()
    users.plot(t, [_num(r["User Count"]) for r in rows], color="grey", ls=":", label="users")
    users.set_ylabel("users")
    top.legend(loc="upper left")
    top.set_title(textwrap.fill(title, 110), fontsize=9)

    for column in ("50%", "95%", "99%"):
        bottom.plot(t, [_num(r[column]) for r in rows], label=f"HTTP p{column[:-1]}")
    if flushes:
        bottom.plot(
            [f["at_ms"] / 1000 - start for f in flushes],
            [f["lag_ms"] for f in flushes],
            ".",
            ms=2,
            color="black",
            label="acceptance→committed (per flush)",
        )
    bottom.set_yscale("log")
    bottom.set_ylabel("ms (log)")
    bottom.legend(loc="upper left", fontsize="small")
    memory.plot(
        [at_ms / 1000 - start for at_ms, _ in redis_memory],
        [used / 2**20 for _, used in redis_memory],
        color="tab:purple",
        label="Redis used_memory",
    )
    memory.set_ylabel("MB")
    memory.set_ylim(bottom=0)
    memory.set_xlabel("seconds since Locust started")
    memory.legend(loc="upper left", fontsize="small")
    for axis in (top, bottom, memory):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "N/A" before the first response
        return float("nan")
