"""The summary table of a run: Locust's stats CSV plus what the runner measured."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from loadtest.measured import Run
from loadtest.plot import plot
from loadtest.thresholds import Thresholds

ORDER_METHODS = ("POST", "DELETE", "PATCH")
EXPECTED = "[409 "  # the name suffix locustfile.py gives expected conflicts


@dataclass
class Table:
    text: str
    misses: list[str]


@dataclass
class Locust:
    """Locust's totals after the stats reset (spawning done), per kind of request."""

    steady_s: float
    requests: int
    failures: int
    offered: int  # order commands sent
    accepted: dict[str, int]  # 202s by command: place, cancel, replace
    expected_409: int
    queries: int
    percentiles: dict[str, float]  # "50%", "95%", "99%", "100%" of all requests, ms


def read_locust(stats_csv: Path) -> Locust:
    with stats_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    requests = int(total["Request Count"])
    rps = float(total["Requests/s"] or 0)
    accepted = {"place": 0, "cancel": 0, "replace": 0}
    offered = expected = queries = 0
    for r in rows:
        if r["Name"] == "Aggregated":
            continue
        count, failed = int(r["Request Count"]), int(r["Failure Count"])
        if r["Type"] not in ORDER_METHODS:
            queries += count
            continue
        offered += count
        if EXPECTED in r["Name"]:
            expected += count - failed
        else:
            command = {"POST": "place", "DELETE": "cancel", "PATCH": "replace"}[r["Type"]]
            accepted[command] += count - failed
    return Locust(
        steady_s=requests / rps if rps else 0.0,
        requests=requests,
        failures=int(total["Failure Count"]),
        offered=offered,
        accepted=accepted,
        expected_409=expected,
        queries=queries,
        percentiles={p: _num(total[p]) for p in ("50%", "95%", "99%", "100%")},
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(run: Run, out: Path, thresholds: Thresholds) -> Table:
    stats = read_locust(out / "locust_stats.csv")
    s = stats.steady_s or 1.0
    accepted = sum(stats.accepted.values())
    # What the threshold counts: order commands the exchange answered as it should. A
    # cancel of an order that filled meanwhile costs the exchange what an accepted one does.
    handled = accepted + stats.expected_409
    committed = [f["lag_ms"] for f in run.flushes]
    error_rate = stats.failures / stats.requests if stats.requests else 1.0
    http = stats.percentiles
    model = f", model clock ×{run.speed:.2f}" if run.scenario == "model" and run.speed > 1 else ""
    lines = [
        f"Spot load test: scenario {run.scenario} ({run.users:,} Locust users{model}, "
        f"{run.traders:,} traders, Locust processes: {run.processes}, client {run.client}), "
        f"target {run.rate:,.0f} order commands/s for {run.seconds} s",
        f"steady window {s:.1f} s (Locust's stats reset once every user had spawned)",
        "",
        f"{'throughput':<46}{'per s':>9}{'total':>11}",
        _row("offered: order commands sent", stats.offered / s, stats.offered),
        _row("handled: accepted + expected 409s", handled / s, handled),
        _row("accepted (202)", accepted / s, accepted),
        *(_row(f"  {k}s", v / s, v) for k, v in stats.accepted.items()),
        _row(
            "expected 409s (already closed / replace queued)",
            stats.expected_409 / s,
            stats.expected_409,
        ),
        _row("queries (GET)", stats.queries / s, stats.queries),
        _row(
            f"persisted orders: DB rows over {run.persisted[1]:.1f} s of commits",
            _rate(run.persisted),
            run.persisted[0],
        ),
        _row(
            f"matched: trades in the DB over {run.trades[1]:.1f} s",
            _rate(run.trades),
            run.trades[0],
        ),
        f"{'errors':<46}{stats.failures:>20,}  ({error_rate:.4%} of "
        f"{stats.requests:,} requests; see locust_failures.csv)",
        "",
        f"{'latency, ms':<46}{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}",
        _lat("HTTP response, all requests", [http["50%"], http["95%"], http["99%"], http["100%"]]),
        _lat("  of which the API's own (histogram bucket bound)", _bucket_pcts(run.server_buckets)),
        _lat(
            f"acceptance→matched (worker batches, n={len(run.matched_ms)})", _pcts(run.matched_ms)
        ),
        _lat(f"acceptance→committed (batcher flushes, n={len(committed)})", _pcts(committed)),
        "  (a worker batch or a flush is timed by its oldest order: an upper bound per order;",
        f"   worker batches sampled every {run.sample_s:.1f} s per shard)",
        "",
        _batcher(run),
        _redis_memory(run),
        "",
        _cpu(run, handled),
        "",
    ]
    lines.append("audit: clean" if run.audit_clean else "audit: DIFFERENCES FOUND")
    if not run.audit_clean:
        lines.append(run.audit_output.rstrip())
    if run.locust_code not in (0, 1):  # 1: some requests failed, counted above
        lines.append(f"Locust exited {run.locust_code}: see {out / 'locust.log'}")
    misses = thresholds.misses(
        orders_per_s=handled / s,
        p95_ms=http["95%"],
        p99_ms=http["99%"],
        error_rate=error_rate,
        commit_p99_ms=percentile(committed, 99) if committed else None,
        audit_clean=run.audit_clean and run.locust_code in (0, 1),
    )
    lines.append(
        "thresholds MISSED: " + "; ".join(misses)
        if misses
        else f"thresholds met: ≥ {thresholds.orders_per_s:,.0f} orders/s, "
        f"p95 < {thresholds.p95_ms:.0f} ms, p99 < {thresholds.p99_ms:.0f} ms, "
        f"errors ≤ {thresholds.error_rate:.4%}"
        + (
            f", committed p99 < {thresholds.commit_p99_ms:.0f} ms"
            if thresholds.commit_p99_ms
            else ""
        )
    )
    png = out / "timeline.png"
    plot(out / "locust_stats_history.csv", run.flushes, run.redis_memory, png, lines[0])
    lines.append(f"report: {out / 'report.html'}  plot: {png}")
    return Table("\n".join(lines), misses)


def _batcher(run: Run) -> str:
    flush_ms = [f["flush_ms"] for f in run.flushes]
    events = [f["events"] for f in run.flushes]
    behind = f"; STILL BEHIND: {', '.join(run.behind)}" if run.behind else ""
    return (
        f"batcher: {len(run.flushes):,} flushes, {percentile(events, 50):.0f} events each "
        f"(median), flush p50 {percentile(flush_ms, 50):.1f} ms / p99 "
        f"{percentile(flush_ms, 99):.1f} ms; when Locust stopped {run.backlog:,} orders were "
        f"queued, all persisted {run.drained_s:.1f} s later{behind}"
    )


def _redis_memory(run: Run) -> str:
    """Where Redis's memory went: a bounded Redis grows while the books and windows fill,
    then levels off; one that keeps what traffic leaves behind grows to the end."""
    samples = run.redis_memory
    if len(samples) < 3:
        return "Redis used_memory: too few samples"
    (t0, first), (t1, half), (t2, last) = samples[0], samples[len(samples) // 2], samples[-1]
    per_min = (last - half) / max(t2 - t1, 1.0) * 60_000
    return (
        f"Redis used_memory: {first / 2**20:.1f} MB when Locust started, "
        f"{half / 2**20:.1f} MB at {(t1 - t0) / 1000:.0f} s, {last / 2**20:.1f} MB at "
        f"{(t2 - t0) / 1000:.0f} s ({per_min / 2**20:+.2f} MB/min over the second half)"
    )


def _cpu(run: Run, accepted: int) -> str:
    cores = os.cpu_count() or 1
    window = run.load_s + run.drained_s
    total = sum(run.cpu_s.values())
    parts = [
        f"  {kind:<9}{seconds:7.1f} s  {seconds / window / cores:5.1%} of the machine  "
        f"{seconds / max(accepted, 1) * 1e6:6.0f} µs per order command"
        for kind, seconds in sorted(run.cpu_s.items(), key=lambda kv: -kv[1])
    ]
    head = (
        f"CPU seconds over {window:.0f} s (load and drain) on {cores} cores: {total:.1f} s, "
        f"{total / window / cores:.0%} busy"
    )
    return "\n".join([head, *parts])


def _row(label: str, per_s: float, total: int) -> str:
    return f"{label:<46}{per_s:>9,.0f}{total:>11,}"


def _lat(label: str, values: list[float]) -> str:
    return f"{label:<46}" + "".join(f"{v:>7.0f}" if v == v else f"{'-':>7}" for v in values)


def _pcts(values: list[float]) -> list[float]:
    return [percentile(values, p) for p in (50, 95, 99, 100)]


def _bucket_pcts(buckets: dict[float, int]) -> list[float]:
    """The bucket bound under which p% of the requests fell (Prometheus cumulative)."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0
    out = []
    for p in (50, 95, 99, 100):
        bound = next((le for le, n in ordered if total and n >= p / 100 * total), float("nan"))
        out.append(bound * 1000)
    return out


def _rate(rows_span: tuple[int, float]) -> float:
    rows, span = rows_span
    return rows / span if span > 0 else float("nan")


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")
