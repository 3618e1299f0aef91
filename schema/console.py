"""The operator console's snapshot: the body of GET /v1/admin/console (api/console.py).

One snapshot a second, made once per API process however many consoles read it. Rates
are per second over the interval since the previous snapshot (None in the first one, or
when what they are measured from is not there yet); times are Unix milliseconds; counts
of orders are commands (a place, a cancel, a replace) unless a name says otherwise.
"""

import msgspec

from schema.wire import MigrationView


class ShardSymbol(msgspec.Struct, kw_only=True, gc=False):
    symbol: str
    migrating: bool  # its route is MIGRATING: new orders wait in pending:{symbol}
    orders_per_s: int  # places routed to it in the last whole second


class ShardView(msgspec.Struct, kw_only=True):
    shard: int
    owned: bool  # a worker holds the shard's lease
    orders_per_s: int  # places routed to its symbols in the last whole second
    applied_per_s: float | None  # commands its worker settled per second (shard:stats)
    lag: int  # commands queued and not settled yet, counted up to `lag_capped`
    lag_capped: bool  # `lag` is the cap: at least that many
    lag_ms: int | None  # how long the oldest unsettled command has waited; None: none waits
    # As the rebalancer last weighed the shard (None when none has run): orders/s over
    # capacity, its level NORMAL | WARN | PREPARE | MOVE, the capacity in commands per
    # busy second and whether that was measured (else SPOT_SHARD_CAPACITY)
    load: float | None
    level: str | None
    capacity: int | None
    capacity_measured: bool
    symbols: list[ShardSymbol]


class BatcherView(msgspec.Struct, kw_only=True, gc=False):
    flushes: int | None  # since the batcher started; None: no flush yet
    last_flush_ms: int | None  # when the last flush committed
    flush_ms: float | None  # how long it took
    events: int | None  # events it wrote
    lag_ms: float | None  # acceptance of its oldest order to its commit
    held_streams: int  # event streams waiting on a sequence gap (a migration's older half)
    held: str  # the longest-waiting one, and what it waits for


class Rates(msgspec.Struct, kw_only=True, gc=False):
    """The moving chart's point: orders accepted (places routed), trades matched and order
    rows persisted per second; HTTP over the interval, this API process's requests only
    (the console's own long polls left out), p99 interpolated in the latency histogram."""

    accepted: int  # places routed in the last whole second
    matched: float | None  # trades committed by the batcher per second
    persisted: float | None  # order rows committed by the batcher per second
    http_requests_per_s: float | None
    http_p99_ms: float | None  # None: no request in the interval


class Decision(msgspec.Struct, kw_only=True, gc=False):
    """One entry of the rebalancer's decision stream: a decision that differed from the
    one before (BALANCED, WARN, PREPARE, WAITING, MOVE, ...) or a move's end (MOVED,
    MOVE_FAILED)."""

    at_ms: int
    code: str
    reason: str
    symbol: str
    from_shard: int | None
    to_shard: int | None


class RebalancerView(msgspec.Struct, kw_only=True, gc=False):
    at_ms: int | None  # its last evaluation; None: it never ran
    code: str | None  # its last decision
    reason: str | None
    dry_run: bool
    evaluations: int
    moves: int
    moves_failed: int
    decisions: list[Decision]  # the most recent first


class ConsoleSnapshot(msgspec.Struct, kw_only=True):
    at_ms: int  # when it was made; GET /v1/admin/console?after=<at_ms> waits for the next
    interval_ms: int
    shards: list[ShardView]
    batcher: BatcherView
    rates: Rates
    migrations: list[MigrationView]  # running first, then finished, each newest first
    rebalancer: RebalancerView


CONSOLE_TYPES = (ConsoleSnapshot,)  # documented in the OpenAPI document
