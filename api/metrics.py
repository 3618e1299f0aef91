"""Prometheus text exposition for the API: requests by route and status, a latency
histogram per route, and views of the pipeline read from Redis (orders routed per
symbol per second, the length of each shard's orders stream, the batcher's last flush,
hot-shard migrations: running, finished by outcome, the last pause; the rebalancer's
view of each shard's load and its moves).

Counting is two dict updates and a bisect per request. The Redis part is read at most
once a second however often /metrics is scraped. Each API worker process counts its
own requests: with SPOT_API_WORKERS > 1 a scrape sees one worker's counters.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from redis.asyncio import Redis

from schema import keys

# Seconds. The order path answers in well under a millisecond when Redis is near.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
PIPELINE_REFRESH_S = 1.0


class RouteStats:
    __slots__ = ("method", "route", "statuses", "buckets", "total_s", "count")

    def __init__(self, method: str, route: str) -> None:
        self.method = method
        self.route = route
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total_s = 0.0
        self.count = 0

    def observe(self, status: int, seconds: float) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.total_s += seconds
        self.count += 1


class Metrics:
    def __init__(self, redis: Redis, shards: int) -> None:
        self.redis = redis
        self.shards = shards
        self.routes: list[RouteStats] = []
        self._pipeline_text = ""
        self._pipeline_at = 0.0

    def route(self, method: str, route: str) -> RouteStats:
        stats = RouteStats(method, route)
        self.routes.append(stats)
        return stats

    async def render(self) -> str:
        if time.monotonic() - self._pipeline_at >= PIPELINE_REFRESH_S:
            self._pipeline_text = await self._pipeline()
            self._pipeline_at = time.monotonic()
        return self._http() + self._pipeline_text

    def _http(self) -> str:
        lines = [
            "# HELP spot_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE spot_http_requests_total counter",
        ]
        for r in self.routes:
            for status, n in sorted(r.statuses.items()):
                lines.append(
                    f'spot_http_requests_total{{method="{r.method}",route="{r.route}",'
                    f'status="{status}"}} {n}'
                )
        lines += [
            "# HELP spot_http_request_duration_seconds Time from request to response.",
            "# TYPE spot_http_request_duration_seconds histogram",
        ]
        for r in self.routes:
            if not r.count:
                continue
            labels = f'method="{r.method}",route="{r.route}"'
            cumulative = 0
            for bound, n in zip((*BUCKETS, "+Inf"), r.buckets, strict=True):
                cumulative += n
                lines.append(
                    f'spot_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} '
                    f"{cumulative}"
                )
            lines.append(f"spot_http_request_duration_seconds_sum{{{labels}}} {r.total_s:.6f}")
            lines.append(f"spot_http_request_duration_seconds_count{{{labels}}} {r.count}")
        return "\n".join(lines) + "\n"

    async def _pipeline(self) -> str:
        # The last complete second: the current one is still being counted.
        second = int(time.time()) - 1
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(f"{keys.RATE}{second}")
        pipe.hgetall(keys.BATCHER_STATS)
        pipe.zcard(keys.MIGRATIONS_RUNNING)
        pipe.hgetall(keys.MIGRATION_STATS)
        pipe.hgetall(keys.REBALANCER)
        for shard in range(self.shards):
            pipe.xlen(keys.orders(shard))
        rates, batcher, running, migrations, rebalancer, *lengths = await pipe.execute()
        lines = [
            "# HELP spot_orders_per_second Orders routed per symbol in the last complete second.",
            "# TYPE spot_orders_per_second gauge",
        ]
        for symbol, n in sorted(rates.items()):
            lines.append(f'spot_orders_per_second{{symbol="{symbol.decode()}"}} {int(n)}')
        lines += [
            "# HELP spot_queue_depth Entries in a shard's orders stream: not yet applied, plus"
            " those kept since the worker's last snapshot.",
            "# TYPE spot_queue_depth gauge",
        ]
        for shard, n in enumerate(lengths):
            lines.append(f'spot_queue_depth{{shard="{shard}"}} {n}')
        for name, field, help_text in BATCHER_GAUGES:
            if field.encode() in batcher:
                lines += [
                    f"# HELP {name} {help_text}",
                    f"# TYPE {name} gauge",
                    f"{name} {float(batcher[field.encode()])}",
                ]
        lines += _migrations(running, migrations)
        lines += _rebalancer({k.decode(): v.decode() for k, v in rebalancer.items()}, self.shards)
        return "\n".join(lines) + "\n"


def _migrations(running: int, stats: dict[bytes, bytes]) -> list[str]:
    """From the migration index (control/migration.py): the counts are kept in Redis, so every
    API process reports the same totals."""
    lines = [
        "# HELP spot_migrations_running Hot-shard migrations started and not finished.",
        "# TYPE spot_migrations_running gauge",
        f"spot_migrations_running {running}",
        "# HELP spot_migrations_total Hot-shard migrations finished, by how they ended.",
        "# TYPE spot_migrations_total counter",
    ]
    for state in MIGRATION_ENDS:
        lines.append(
            f'spot_migrations_total{{state="{state}"}} {int(stats.get(state.encode(), 0))}'
        )
    if b"last_paused_ms" in stats:
        lines += [
            "# HELP spot_migration_last_pause_ms How long the last finished migration held the"
            " symbol's new orders back (pause to switch), in milliseconds.",
            "# TYPE spot_migration_last_pause_ms gauge",
            f"spot_migration_last_pause_ms {int(float(stats[b'last_paused_ms']))}",
        ]
    return lines


MIGRATION_ENDS = ("DONE", "ROLLED_BACK")

# The batcher's last flush, as it records it in Redis (batcher/batcher.py).
BATCHER_GAUGES = [
    ("spot_batcher_flushes", "flushes", "Flushes since the batcher started."),
    ("spot_batcher_batch_events", "events", "Events written by the last flush."),
    ("spot_batcher_flush_ms", "flush_ms", "Duration of the last flush, in milliseconds."),
    ("spot_batcher_lag_ms", "lag_ms", "Acceptance to commit of the last flush's oldest order."),
    # A stream waits while a symbol's next event is in another stream not read that far
    # (a migration's older half): for long only if events went missing.
    ("spot_batcher_held_streams", "held_streams", "Event streams waiting on a sequence gap."),
    ("spot_batcher_held_ms", "held_ms", "How long the longest-waiting stream has waited."),
    ("spot_batcher_refused_events", "refused", "Events refused as already applied (want 0)."),
    # The database refused these entries' rows (a value a column cannot hold): they are in
    # its quarantine table, the rest went on.
    (
        "spot_batcher_quarantined_entries",
        "quarantined",
        "Stream entries the database refused, set aside in its quarantine table (want 0).",
    ),
]


def _rebalancer(state: dict[str, str], shards: int) -> list[str]:
    """From the rebalancer's last evaluation (control/rebalancer.py); nothing when none runs."""
    if "evaluations" not in state:
        return []
    lines = [
        "# HELP spot_shard_load A shard's order rate over its capacity, as the rebalancer saw"
        " it (0.85 and above moves its hottest symbol away).",
        "# TYPE spot_shard_load gauge",
    ]
    for shard in range(shards):
        if f"{shard}:load" in state:
            level = state[f"{shard}:level"]
            lines.append(
                f'spot_shard_load{{shard="{shard}",level="{level}"}} {state[f"{shard}:load"]}'
            )
    lines += [
        "# HELP spot_shard_capacity Commands per second a shard can apply: measured from its"
        " worker's busy time, else SPOT_SHARD_CAPACITY.",
        "# TYPE spot_shard_capacity gauge",
    ]
    for shard in range(shards):
        if f"{shard}:capacity" in state:
            measured = state[f"{shard}:measured"]
            lines.append(
                f'spot_shard_capacity{{shard="{shard}",measured="{measured}"}}'
                f" {state[f'{shard}:capacity']}"
            )
    lines += [
        "# HELP spot_rebalancer_evaluations_total Times the rebalancer weighed the shards.",
        "# TYPE spot_rebalancer_evaluations_total counter",
        f"spot_rebalancer_evaluations_total {state['evaluations']}",
        "# HELP spot_rebalancer_moves_total Symbols the rebalancer moved, by outcome.",
        "# TYPE spot_rebalancer_moves_total counter",
        f'spot_rebalancer_moves_total{{outcome="done"}} {state.get("moves", 0)}',
        f'spot_rebalancer_moves_total{{outcome="failed"}} {state.get("moves_failed", 0)}',
        "# HELP spot_rebalancer_last_evaluation_seconds When it last weighed the shards (Unix"
        " time): a stale value means no rebalancer runs.",
        "# TYPE spot_rebalancer_last_evaluation_seconds gauge",
        f"spot_rebalancer_last_evaluation_seconds {int(state['at_ms']) / 1000}",
    ]
    return lines
