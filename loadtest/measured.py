"""What the load test's runner measured besides Locust's own files: loadtest/run.py fills
a `Run`, loadtest/results.py turns it into the summary table."""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_S = 0.2  # how often the worker streams are sampled for acceptance→matched
MEMORY_S = 5.0  # how often Redis's used_memory is sampled


@dataclass
class Run:
    """What the runner measured besides Locust's own files."""

    scenario: str
    rate: float
    seconds: int
    users: int
    traders: int
    processes: int
    client: str = "lean"
    speed: float = 1.0
    locust_code: int = 0
    started_ms: float = 0.0  # wall clock when Locust started
    load_s: float = 0.0  # Locust's whole run, spawning included
    matched_ms: list[float] = field(default_factory=list)  # acceptance→events, sampled
    # (wall ms, bytes) of Redis's used_memory every MEMORY_S: whether it levels off
    redis_memory: list[tuple[float, int]] = field(default_factory=list)
    sample_s: float = SAMPLE_S
    flushes: list[dict[str, float]] = field(default_factory=list)
    backlog: int = 0  # orders queued but not matched when Locust stopped
    drained_s: float = 0.0  # until workers and batcher had caught up
    behind: list[str] = field(default_factory=list)
    server_buckets: dict[float, int] = field(default_factory=dict)  # API's own timing
    cpu_s: dict[str, float] = field(default_factory=dict)
    persisted: tuple[int, float] = (0, 0.0)  # orders rows, seconds between first and last
    trades: tuple[int, float] = (0, 0.0)
    audit_clean: bool = False
    audit_output: str = ""
