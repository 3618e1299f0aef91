"""Hot-shard migration (DESIGN.md §4): move a symbol's book to another shard, live.

A persisted state machine in `migration:{id}`; `migrating:{symbol}` holds the id of
the one migration moving the symbol. Each step is idempotent and records where it got
to in the hash, so an orchestrator killed at any point resumes from the persisted step
(`migrate` again, or `resume_all`):

1. PAUSE     route MIGRATING, epoch + 1: the router queues the symbol's new commands in
             `pending:{symbol}` (route lookup and enqueue are one script, store/lua/enqueue.lua).
2. DRAIN     a DRAIN marker in `orders:{from}`; the source worker applies everything
             before it, stores the book in `handoff:{id}` and drops it. An ADOPT marker
             goes to `orders:{to}` at once, so that the target works through its own
             queue meanwhile rather than after.
3. TRANSFER  the target worker restores the book when it reaches the ADOPT marker and
             says so in the hash (`adopted`). If it got there before the source had
             drained, it had nothing to restore: a second ADOPT marker follows. A target
             that still has no book fails the step, which rolls back.
4. SWITCH    one script moves every pending entry, in order, to `orders:{to}` and points
             the route there, ACTIVE: nothing newer can overtake what was buffered.
5. CLEANUP   release the lock; state DONE.

An index lists the migrations for operators (`recent`): `migrations:running` while one
runs, `migrations:finished` once it ended. A finished migration's hash expires `ttl_s`
after it ended (SPOT_MIGRATION_TTL_S), the handed-over book an hour after (it never
expires while the migration runs), and the finished index is trimmed in the same script.

Each step's Redis side is one script in store/lua/ (`migration_*-N.lua`, their contracts
in tests/integration/test_scripts_control.py); the markers are schema.streams
ControlEntry. An `Orchestrator` takes its tunables as keywords, filled from Settings in
control/wiring.py; the module's functions are one made with the defaults (and `ttl_s`),
for callers that keep none.

A step that outlives its timeout (counted from the step's persisted start, so a resumed
orchestrator does not extend the pause) rolls back and never switches: the rollback is
claimed against the source worker's DRAIN atomically; if the source drained already it is
sent an ADOPT to take its book back; then the same switch script points the route back
at the source, behind everything queued before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from schema import keys
from schema.settings import Settings
from schema.streams import Control, ControlEntry
from store import scripts

STEPS = ("PAUSE", "DRAIN", "TRANSFER", "SWITCH", "CLEANUP")
DEFAULT_TIMEOUT_S = 5.0  # per step
DEFAULT_TTL_S = Settings().migration_ttl_s
FINISHED_KEPT = 1000  # finished migrations the index remembers, at most
POLL_S = 0.002  # how often a waiting step looks at a worker's watermark


class MigrationError(Exception):
    """A migration that cannot start (unknown symbol, same shard, another one running).

    `code` names why, for callers that answer differently: NO_ROUTE (no such symbol),
    SAME_SHARD, NOT_ACTIVE (the route is not ACTIVE), RUNNING (another migration)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class MigrationRunning(MigrationError):
    """start(exclusive=True) found a migration of the symbol running already."""

    def __init__(self, message: str, migration_id: str) -> None:
        super().__init__(message, "RUNNING")
        self.migration_id = migration_id


class StepTimeout(Exception):
    pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _after_or_at(a: str, b: str) -> bool:
    am, _, aseq = a.partition("-")
    bm, _, bseq = b.partition("-")
    return (int(am), int(aseq or 0)) >= (int(bm), int(bseq or 0))


class Orchestrator:
    """Runs migrations on one Redis. Any number of orchestrators may work on one migration
    at once (the API's, an operator's `spot migrate`): every step is idempotent.

    `ttl_s`: how long a migration it starts is kept once finished (SPOT_MIGRATION_TTL_S);
    `finished_kept`: finished migrations the index keeps; `poll_s`: how often a waiting
    step reads a worker's watermark."""

    def __init__(
        self,
        redis: Any,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        finished_kept: int = FINISHED_KEPT,
        poll_s: float = POLL_S,
    ) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.finished_kept = finished_kept
        self.poll_s = poll_s

    async def start(
        self,
        symbol: str,
        to_shard: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        exclusive: bool = False,
    ) -> str:
        """Create the migration (or find the one already moving the symbol to `to_shard`).

        `exclusive`: a migration of the symbol already running is an error
        (MigrationRunning) even when it goes to `to_shard`, for a caller that must not
        orchestrate it a second time."""
        reply = await scripts.MIGRATION_START.run(
            self.redis,
            [keys.migrating(symbol), keys.route(symbol), keys.MIGRATION_IDS,
             keys.MIGRATIONS_RUNNING],
            [symbol, to_shard, int(timeout_s * 1000), keys.MIGRATION, self.ttl_s],
        )  # fmt: skip
        status = _text(reply[0])
        if status == "OK":
            return _text(reply[1])
        if status == "EXISTS":
            existing = _text(reply[1])
            if exclusive:
                raise MigrationRunning(
                    f"{symbol} is being moved already, by migration {existing}", existing
                )
            running_to = await self.redis.hget(keys.migration(existing), "to")
            if running_to is not None and int(running_to) == to_shard:
                return existing
            raise MigrationError(
                f"{symbol} is being moved already, by migration {existing}", "RUNNING"
            )
        raise MigrationError(f"cannot move {symbol} to shard {to_shard}: {status}", status)

    async def migrate(
        self, symbol: str, to_shard: int, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> dict[str, Any]:
        """Start or resume the symbol's migration and run it to its end; returns its status."""
        migration_id = await self.start(symbol, to_shard, timeout_s)
        await self.run(migration_id)
        return await status(self.redis, migration_id)

    async def resume_all(self) -> list[dict[str, Any]]:
        """Run every unfinished migration to its end (an orchestrator restarting)."""
        ids = [
            _text(await self.redis.get(key))
            async for key in self.redis.scan_iter(keys.MIGRATING + "*")
        ]
        for migration_id in ids:
            await self.run(migration_id)
        return [await status(self.redis, migration_id) for migration_id in ids]

    async def run(self, migration_id: str) -> None:
        while await self.advance(migration_id):
            pass

    async def advance(self, migration_id: str) -> bool:
        """Run the persisted next step; False once the migration has ended."""
        m = await _load(self.redis, migration_id)
        step = m.get("step", "DONE")
        if step == "DONE":
            return False
        try:
            if step == "PAUSE":
                await scripts.MIGRATION_PAUSE.run(
                    self.redis, [keys.migration(migration_id), keys.route(m["symbol"])]
                )
            elif step == "DRAIN":
                await self._drain(migration_id, m)
            elif step == "TRANSFER":
                await self._transfer(migration_id, m)
            elif step == "SWITCH":
                await self._switch(migration_id, m, int(m["to"]), "RUNNING")
            elif step == "ROLLBACK":
                await self._roll_back(migration_id, m)
            elif step == "CLEANUP":
                await self._cleanup(migration_id, m)
        except StepTimeout as e:
            await self._start_rollback(migration_id, str(e))
        return True

    # -- steps --------------------------------------------------------------------------

    async def _begin(self, migration_id: str, m: dict[str, str], step: str) -> float:
        """Record the step's start once; returns its deadline (time.time() seconds)."""
        key = keys.migration(migration_id)
        await self.redis.hsetnx(key, f"{step}_start_ms", _now_ms())
        started = int(await self.redis.hget(key, f"{step}_start_ms"))
        return (started + int(m["timeout_ms"])) / 1000

    async def _end(self, migration_id: str, step: str, next_step: str) -> None:
        await scripts.MIGRATION_END_STEP.run(
            self.redis, [keys.migration(migration_id)], [step, next_step]
        )

    async def _mark(
        self, migration_id: str, m: dict[str, str], kind: Control, shard: int, again: str = ""
    ) -> str:
        """XADD a DRAIN or ADOPT marker to the shard's stream, once per migration, shard and
        `again` (a second marker of the kind names itself)."""
        entry = ControlEntry(kind, m["symbol"], migration_id, int(m["epoch"]))
        return _text(
            await scripts.MIGRATION_MARK.run(
                self.redis,
                [keys.migration(migration_id), keys.orders(shard)],
                [f"{kind.value}{again}_{shard}_id", *entry.to_fields()],
            )
        )

    async def _wait_applied(self, shard: int, entry_id: str, deadline: float) -> None:
        """Until the shard's worker has settled past `entry_id` (its watermark)."""
        while True:
            applied = await self.redis.get(keys.applied(shard))
            if applied is not None and _after_or_at(_text(applied), entry_id):
                return
            if time.time() > deadline:
                raise StepTimeout(f"shard {shard} did not reach {entry_id} in time")
            await asyncio.sleep(self.poll_s)

    async def _drain(self, migration_id: str, m: dict[str, str]) -> None:
        deadline = await self._begin(migration_id, m, "DRAIN")
        source = int(m["from"])
        marker = await self._mark(migration_id, m, Control.DRAIN, source)
        # The pause is the source's queue plus the target's: this overlaps them. No command
        # of the symbol reaches the target before SWITCH, so adopting early changes nothing.
        await self._mark(migration_id, m, Control.ADOPT, int(m["to"]))
        await self._wait_applied(source, marker, deadline)
        drained = await self.redis.hget(keys.migration(migration_id), "drained")
        if drained is None or _text(drained) != "1":
            # The source settled past the marker without claiming it: it does not hold the
            # book.
            raise StepTimeout(f"shard {source} ignored the DRAIN marker")
        await self._end(migration_id, "DRAIN", "TRANSFER")

    async def _transfer(self, migration_id: str, m: dict[str, str]) -> None:
        deadline = await self._begin(migration_id, m, "TRANSFER")
        target = int(m["to"])
        for again in ("", "AGAIN"):  # the second marker when the first came before the drain
            marker = await self._mark(migration_id, m, Control.ADOPT, target, again)
            await self._wait_applied(target, marker, deadline)
            adopted = await self.redis.hget(keys.migration(migration_id), "adopted")
            if adopted is not None and _text(adopted) == str(target):
                await self._end(migration_id, "TRANSFER", "SWITCH")
                return
        # Settled past both markers without the book (its handoff was gone): never switch.
        raise StepTimeout(f"shard {target} did not take the book")

    async def _switch(
        self, migration_id: str, m: dict[str, str], shard: int, expected_state: str
    ) -> None:
        await self.redis.hsetnx(keys.migration(migration_id), "SWITCH_start_ms", _now_ms())
        await scripts.MIGRATION_SWITCH.run(
            self.redis,
            [keys.migration(migration_id), keys.route(m["symbol"]), keys.pending(m["symbol"]),
             keys.orders(shard)],
            [shard, expected_state],
        )  # fmt: skip

    async def _start_rollback(self, migration_id: str, why: str) -> None:
        await scripts.MIGRATION_ROLLBACK.run(self.redis, [keys.migration(migration_id)], [why])

    async def _roll_back(self, migration_id: str, m: dict[str, str]) -> None:
        source = int(m["from"])
        if m.get("drained") == "1":
            # The source gave its book away: it takes it back from the handoff, before the
            # pending commands the switch below appends behind this marker.
            await self._mark(migration_id, m, Control.ADOPT, source)
        await self._switch(migration_id, m, source, "ROLLING_BACK")

    async def _cleanup(self, migration_id: str, m: dict[str, str]) -> None:
        await self.redis.hsetnx(keys.migration(migration_id), "CLEANUP_start_ms", _now_ms())
        replayed_to = m.get("replayed_to", "")
        shard = int(m["from"] if m["state"] == "ROLLING_BACK" else m["to"])
        if replayed_to and "replayed_ms" not in m:
            # Only a measurement (how long the last buffered command waited): never fatal.
            try:
                deadline = time.time() + int(m["timeout_ms"]) / 1000
                await self._wait_applied(shard, replayed_to, deadline)
                await self.redis.hset(keys.migration(migration_id), "replayed_ms", _now_ms())
            except StepTimeout:
                pass
        await scripts.MIGRATION_FINISH.run(
            self.redis,
            [keys.migration(migration_id), keys.migrating(m["symbol"]),
             keys.handoff(migration_id), keys.MIGRATIONS_RUNNING, keys.MIGRATIONS_FINISHED,
             keys.MIGRATION_STATS],
            [migration_id, m.get("ttl_s") or self.ttl_s, self.finished_kept,
             keys.HANDOFF_KEPT_S],
        )  # fmt: skip


# -- for callers that keep no Orchestrator: one with the defaults ------------------------


async def start(
    redis: Any,
    symbol: str,
    to_shard: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    exclusive: bool = False,
) -> str:
    """Orchestrator.start; `ttl_s` as the Orchestrator's."""
    orchestrator = Orchestrator(redis, ttl_s=ttl_s)
    return await orchestrator.start(symbol, to_shard, timeout_s, exclusive=exclusive)


async def migrate(
    redis: Any,
    symbol: str,
    to_shard: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ttl_s: int = DEFAULT_TTL_S,
) -> dict[str, Any]:
    """Orchestrator.migrate; `ttl_s` as the Orchestrator's."""
    return await Orchestrator(redis, ttl_s=ttl_s).migrate(symbol, to_shard, timeout_s)


async def resume_all(redis: Any) -> list[dict[str, Any]]:
    return await Orchestrator(redis).resume_all()


async def run(redis: Any, migration_id: str) -> None:
    await Orchestrator(redis).run(migration_id)


async def advance(redis: Any, migration_id: str) -> bool:
    return await Orchestrator(redis).advance(migration_id)


# -- reading the records ------------------------------------------------------------------


async def status(redis: Any, migration_id: str) -> dict[str, Any]:
    """The migration's persisted fields, with step durations and the pause in ms."""
    m: dict[str, Any] = await _load(redis, migration_id)
    if not m:
        raise MigrationError(f"no migration {migration_id}")
    return described(m, migration_id)


def described(m: dict[str, Any], migration_id: str) -> dict[str, Any]:
    """A migration's persisted fields (decoded) with its id, step durations and the pause
    in ms added: what `status` returns, for a caller that read the hash itself."""
    m["id"] = migration_id
    timings = {}
    for step in (*STEPS, "ROLLBACK"):
        begin, end = m.get(f"{step}_start_ms"), m.get(f"{step}_end_ms")
        if begin is not None and end is not None:
            timings[step] = int(end) - int(begin)
    m["timings_ms"] = timings
    if "switched_ms" in m and "paused_ms" in m:
        m["paused_for_ms"] = int(m["switched_ms"]) - int(m["paused_ms"])
        m["pending_waited_ms"] = int(m["switched_ms"]) - int(m["pending_oldest_ms"])
    if "replayed_ms" in m and "pending_oldest_ms" in m:
        # from the oldest buffered command's arrival until the shard had applied them all
        m["pending_applied_ms"] = int(m["replayed_ms"]) - int(m["pending_oldest_ms"])
    return m


async def recent(redis: Any, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` migrations for operators: the running ones first, then the finished,
    each newest first. A record expired since it was indexed is left out."""
    ids = [_text(i) for i in await redis.zrevrange(keys.MIGRATIONS_RUNNING, 0, limit - 1)]
    if len(ids) < limit:
        finished = await redis.zrevrange(keys.MIGRATIONS_FINISHED, 0, limit - len(ids) - 1)
        ids += [_text(i) for i in finished]
    found = []
    for migration_id in ids:
        try:
            found.append(await status(redis, migration_id))
        except MigrationError:
            pass
    return found


async def _load(redis: Any, migration_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.migration(migration_id))
    return {_text(k): _text(v) for k, v in raw.items()}
