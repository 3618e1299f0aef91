"""`spot rebalancer`: moves the hottest symbol off an overloaded shard, automatically.

Each evaluation reads, in two round trips, the symbols and their routes, the per-symbol
order counts the router keeps per second (`rate:{sec}`, over the last `window_s` whole
seconds), which shards have a worker, and the workers' busy-time counters
(`shard:stats`); turns them into each shard's load (its orders/s over its capacity);
asks the pure policy (control/policy.py) what to do; writes the outcome to
`rebalancer:state` and, when it differs from the last, to the `rebalancer:decisions`
stream and the log; and runs the migration it decided on to its end (control/migration.py).

Capacity is measured: commands per busy second of the shard's worker, an EWMA over
windows of at least `MIN_WINDOW` commands, starting from the lifetime ratio. Until a
shard has applied `measured_after` commands, SPOT_SHARD_CAPACITY stands in. Orders are
what load counts (the router counts places only); capacity counts every command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from control import migration
from control.policy import Decision, Policy, Rebalance, ShardLoad
from schema import keys

log = logging.getLogger("control.rebalancer")

DECISIONS_KEPT = 1000  # entries of the decision stream, about (XADD MAXLEN ~)
MIN_WINDOW = 200  # commands a window must hold to update a measured capacity
EWMA_WEIGHT = 0.3  # of the newest window
RECENT_MIGRATIONS = 100  # looked at on start, to restore cooldowns


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Capacity:
    """Commands per busy second of each shard, from the workers' cumulative counters."""

    def __init__(self, default: float, measured_after: int = 1000) -> None:
        self.default = default
        self.measured_after = measured_after
        self.estimates: dict[int, float] = {}
        self._seen: dict[int, tuple[int, int]] = {}  # shard -> (commands, busy µs) last used

    def update(self, shard: int, commands: int, busy_us: int) -> tuple[float, bool]:
        """The shard's capacity and whether it is measured (else the default)."""
        if commands < self.measured_after or busy_us <= 0:
            return self.default, False
        seen = self._seen.get(shard)
        if shard not in self.estimates or seen is None or commands < seen[0]:
            # the first reading (or counters that were reset): the lifetime ratio
            self.estimates[shard] = commands / (busy_us / 1e6)
            self._seen[shard] = (commands, busy_us)
        elif commands - seen[0] >= MIN_WINDOW and busy_us > seen[1]:
            window = (commands - seen[0]) / ((busy_us - seen[1]) / 1e6)
            self.estimates[shard] += EWMA_WEIGHT * (window - self.estimates[shard])
            self._seen[shard] = (commands, busy_us)
        return self.estimates[shard], True


class Rebalancer:
    """Tunables as keywords (control/wiring.py fills them from Settings): `shards` watched,
    the `policy`, `default_capacity` (commands per busy second until measured) and
    `measured_after` (commands a shard applies before its own figure counts), `window_s`
    (whole seconds of order counts a load is measured over), `interval_s` between
    evaluations, `migration_timeout_s` per step of a move, and `dry_run` (decide and log,
    move nothing). Moves run on `orchestrator` (default: one with its defaults)."""

    def __init__(
        self,
        redis: Any,
        *,
        shards: int,
        policy: Policy | None = None,
        orchestrator: migration.Orchestrator | None = None,
        default_capacity: float = 5000,
        measured_after: int = 1000,
        window_s: int = 10,
        interval_s: float = 1.0,
        migration_timeout_s: float = migration.DEFAULT_TIMEOUT_S,
        dry_run: bool = False,
    ) -> None:
        self.redis = redis
        self.shards = shards
        self.rebalance = Rebalance(policy)
        self.orchestrator = orchestrator or migration.Orchestrator(redis)
        self.capacity = Capacity(default_capacity, measured_after)
        self.window_s = window_s
        self.interval_s = interval_s
        self.migration_timeout_s = migration_timeout_s
        self.dry_run = dry_run
        self.last: Decision | None = None
        self.last_loads: list[ShardLoad] = []  # what the last evaluation measured
        self.measured: dict[int, bool] = {}  # shard -> capacity measured (else the default)

    async def start(self) -> None:
        """Finish what a previous orchestrator left running, before deciding anything, and
        restore the cooldowns of recent migrations (ours or an operator's)."""
        if self.dry_run:
            running = await self.redis.zcard(keys.MIGRATIONS_RUNNING)
            if running:
                log.info("dry run: %s unfinished migration(s) left alone", running)
        else:
            for done in await self.orchestrator.resume_all():
                log.info(
                    "resumed migration %s of %s: %s", done["id"], done["symbol"], done["state"]
                )
        now = time.time()
        for m in await migration.recent(self.redis, RECENT_MIGRATIONS):
            ended = int(m.get("finished_ms", 0)) / 1000
            if ended and now - ended < self.rebalance.policy.cooldown_s:
                self.rebalance.moved(m["symbol"], int(m["from"]), int(m["to"]), ended)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        while not stop.is_set():
            await self.evaluate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def evaluate(self) -> Decision:
        """Measure, decide, record, and carry out a move (unless a dry run)."""
        self.last_loads = shards = await self.measure()
        running = await self.redis.zrange(keys.MIGRATIONS_RUNNING, 0, 0)
        now = time.time()
        decision = self.rebalance.decide(shards, now, _text(running[0]) if running else "")
        await self._record(shards, decision, now)
        if decision.code == "MOVE" and not self.dry_run:
            await self._move(decision)
        return decision

    async def measure(self) -> list[ShardLoad]:
        symbols = sorted(_text(s) for s in await self.redis.hkeys(keys.SYMBOLS))
        now = int(time.time())
        seconds = range(now - self.window_s, now)  # whole seconds: the current one is partial
        pipe = self.redis.pipeline(transaction=False)
        for symbol in symbols:
            pipe.hget(keys.route(symbol), "shard")
        for second in seconds:
            pipe.hgetall(f"{keys.RATE}{second}")
        for n in range(self.shards):
            pipe.exists(keys.owner(n))
        pipe.hgetall(keys.SHARD_STATS)
        replies = await pipe.execute()
        routes = replies[: len(symbols)]
        counts = replies[len(symbols) : len(symbols) + len(seconds)]
        owners = replies[len(symbols) + len(seconds) : -1]
        stats = {_text(k): int(v) for k, v in replies[-1].items()}
        rates: dict[int, dict[str, float]] = {n: {} for n in range(self.shards)}
        shard_of = {s: int(r) for s, r in zip(symbols, routes, strict=True) if r is not None}
        for symbol, home in shard_of.items():
            rates.setdefault(home, {})[symbol] = 0.0
        for second in counts:
            for symbol, count in second.items():
                shard = shard_of.get(_text(symbol))
                if shard is not None:
                    rates[shard][_text(symbol)] += int(count) / self.window_s
        loads = []
        for n in range(self.shards):
            capacity, measured = self.capacity.update(
                n, stats.get(f"{n}:commands", 0), stats.get(f"{n}:busy_us", 0)
            )
            loads.append(ShardLoad(n, capacity, rates.get(n, {}), owned=bool(owners[n])))
            self.measured[n] = measured
        return loads

    async def _record(self, shards: list[ShardLoad], decision: Decision, now: float) -> None:
        at_ms = int(now * 1000)
        fields: dict[str, Any] = {
            "code": decision.code,
            "reason": decision.reason,
            "symbol": decision.symbol,
            "from": "" if decision.source is None else decision.source,
            "to": "" if decision.target is None else decision.target,
            "at_ms": at_ms,
            "dry_run": int(self.dry_run),
        }
        for s in shards:
            fields[f"{s.shard}:load"] = round(s.load, 4)
            fields[f"{s.shard}:level"] = self.rebalance.levels[s.shard].name
            fields[f"{s.shard}:capacity"] = round(s.capacity)
            fields[f"{s.shard}:measured"] = int(self.measured.get(s.shard, False))
            fields[f"{s.shard}:orders_per_s"] = round(s.rate, 2)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.REBALANCER, mapping=fields)
        pipe.hincrby(keys.REBALANCER, "evaluations", 1)
        changed = self.last is None or self.last.key != decision.key
        if changed:
            self._append(
                pipe, {k: fields[k] for k in ("at_ms", "code", "reason", "symbol", "from", "to")}
            )
        await pipe.execute()
        if changed:
            log.info(
                "%s%s: %s", "dry run: " if self.dry_run else "", decision.code, decision.reason
            )
        self.last = decision

    def _append(self, pipe: Any, entry: dict[str, Any]) -> None:
        pipe.xadd(keys.REBALANCER_DECISIONS, entry, maxlen=DECISIONS_KEPT, approximate=True)

    async def _move(self, decision: Decision) -> None:
        assert decision.source is not None and decision.target is not None
        symbol, source, target = decision.symbol, decision.source, decision.target
        log.info("moving %s from shard %s to shard %s", symbol, source, target)
        try:
            done = await self.orchestrator.migrate(symbol, target, self.migration_timeout_s)
            state, migration_id = done["state"], done["id"]
        except migration.MigrationError as e:  # the route changed under us, or a race
            state, migration_id = f"REFUSED {e.code}", ""
        ended = time.time()
        # Cooldown whatever the outcome: a failed move is not retried at once either.
        self.rebalance.moved(symbol, source, target, ended)
        at_ms = int(ended * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.REBALANCER, "moves" if state == "DONE" else "moves_failed", 1)
        pipe.hset(
            keys.REBALANCER,
            mapping={
                "last_move_symbol": symbol,
                "last_move_from": source,
                "last_move_to": target,
                "last_move_state": state,
                "last_move_id": migration_id,
                "last_move_ms": at_ms,
            },
        )
        code = "MOVED" if state == "DONE" else "MOVE_FAILED"
        self._append(
            pipe,
            {
                "at_ms": at_ms,
                "code": code,
                "reason": f"migration {migration_id or '-'} of {symbol} ended {state}",
                "symbol": symbol,
                "from": source,
                "to": target,
                "state": state,
                "id": migration_id,
            },
        )
        await pipe.execute()
        log.log(
            logging.INFO if state == "DONE" else logging.WARNING,
            "%s: %s shard %s -> %s, migration %s %s",
            code,
            symbol,
            source,
            target,
            migration_id or "-",
            state,
        )


def run_rebalancer(redis_url: str, build: Callable[[Any], Rebalancer]) -> None:
    """The rebalancer process, `build` making it on its Redis client: SIGTERM or SIGINT stop
    it between steps; a migration it was running is left where it got to, for the next
    start's resume_all."""
    import signal

    import uvloop
    from redis.asyncio import Redis

    async def main() -> None:
        redis = Redis.from_url(redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        rebalancer = build(redis)
        running = asyncio.create_task(rebalancer.run(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
            # Interrupts a migration mid-step: its state is persisted, resume_all ends it.
            running.cancel()
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running  # a crash of the loop is raised here: the supervisor restarts it
        finally:
            await redis.aclose()
        log.info("rebalancer stopped")

    uvloop.run(main())
