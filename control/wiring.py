"""Where Settings become the control plane's tunables: the one place (arq's `run_worker`).

`Orchestrator` and `Rebalancer` take keyword-only tunables and read no environment; a
process builds them here from the Settings it validated once, and a caller's keywords
(the command line's `--interval`, `--dry-run`) go over what the settings say.
"""

from __future__ import annotations

from typing import Any

from control.migration import Orchestrator
from control.policy import Policy
from control.rebalancer import Rebalancer
from schema.settings import Settings


def orchestrator(redis: Any, settings: Settings, **overrides: Any) -> Orchestrator:
    tunables: dict[str, Any] = {"ttl_s": settings.migration_ttl_s}
    return Orchestrator(redis, **(tunables | overrides))


def rebalancer(redis: Any, settings: Settings, **overrides: Any) -> Rebalancer:
    tunables: dict[str, Any] = {
        "shards": settings.shards,
        "policy": Policy(cooldown_s=settings.rebalancer_cooldown_s),
        "orchestrator": orchestrator(redis, settings),
        "default_capacity": settings.shard_capacity,
    }
    return Rebalancer(redis, **(tunables | overrides))
