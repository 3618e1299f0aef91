"""Hot-shard migration (DESIGN.md §4): move a symbol's book to another shard, live.

A persisted state machine in `migration:{id}`; `migrating:{symbol}` holds the id of
the one migration moving the symbol. Each step is idempotent and records where it got
to in the hash, so an orchestrator killed at any point resumes from the persisted step
(`migrate` again, or `resume_all`):

1. PAUSE     route MIGRATING, epoch + 1: the router queues the symbol's new commands in
             `pending:{symbol}` (route lookup and enqueue are one script, api/router.py).
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

STEPS = ("PAUSE", "DRAIN", "TRANSFER", "SWITCH", "CLEANUP")
DEFAULT_TIMEOUT_S = 5.0
FINISHED_KEPT = 1000  # finished migrations the index remembers, at most
POLL_S = 0.002  # how often a waiting step looks at a worker's watermark

_NOW = """
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
"""

# KEYS: lock, route, id counter, running index. ARGV: symbol, to, timeout ms, migration key
# prefix, seconds the record is kept once finished.
START = (
    _NOW
    + """
local existing = redis.call('GET', KEYS[1])
if existing then return {'EXISTS', existing} end
local route = redis.call('HMGET', KEYS[2], 'shard', 'status')
if not route[1] then return {'NO_ROUTE'} end
if route[2] ~= 'ACTIVE' then return {'NOT_ACTIVE'} end
if route[1] == ARGV[2] then return {'SAME_SHARD'} end
local id = ARGV[1] .. '-' .. redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], id)
redis.call('HSET', ARGV[4] .. id, 'symbol', ARGV[1], 'from', route[1], 'to', ARGV[2],
           'state', 'RUNNING', 'step', 'PAUSE', 'timeout_ms', ARGV[3], 'created_ms', now)
if KEYS[4] then
  redis.call('HSET', ARGV[4] .. id, 'ttl_s', ARGV[5])
  redis.call('ZADD', KEYS[4], now, id)
end
return {'OK', id}
"""
)

# KEYS: migration, route. Bumps the epoch once: a resumed PAUSE finds the step moved on.
PAUSE = (
    _NOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= 'RUNNING' or m[2] ~= 'PAUSE' then return 0 end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'status', 'MIGRATING')
redis.call('HSETNX', KEYS[1], 'PAUSE_start_ms', now)
redis.call('HSET', KEYS[1], 'epoch', epoch, 'step', 'DRAIN', 'paused_ms', now, 'PAUSE_end_ms', now)
return epoch
"""
)

# KEYS: migration. ARGV: step, next step. Moves on only from the step that ended, while
# RUNNING: two orchestrators may work on one migration (an operator's `spot migrate`
# beside the API's), and one's rollback must not be overwritten by the other's step end.
END = (
    _NOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= 'RUNNING' or m[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. '_end_ms', now, 'step', ARGV[2])
return 1
"""
)

# KEYS: migration, stream. ARGV: field that records the entry id, the entry's fields.
# XADD at most once per migration: a second DRAIN after a rollback gave the book back
# would drop it again.
MARK = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return id end
id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
"""

# KEYS: migration. ARGV: why. Atomic against the worker's CLAIM (workers/worker.py):
# returns '1' if the source drained already (it must get its book back), '0' if not
# (it will ignore the marker), false if the route was switched already (too late).
ROLLBACK = (
    _NOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'step', 'drained')
if m[1] == 'ROLLING_BACK' then return m[3] or '0' end
if m[1] ~= 'RUNNING' or m[2] == 'CLEANUP' then return false end
redis.call('HSET', KEYS[1], 'state', 'ROLLING_BACK', 'step', 'ROLLBACK', 'rolled_back_at', m[2],
           'reason', ARGV[1], 'ROLLBACK_start_ms', now)
return m[3] or '0'
"""
)

# KEYS: migration, route, pending, orders of the destination. ARGV: destination shard,
# the state the migration must be in (RUNNING to switch, ROLLING_BACK to switch back).
SWITCH = (
    _NOW
    + """
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= ARGV[2] or (m[2] ~= 'SWITCH' and m[2] ~= 'ROLLBACK') then return false end
local entries = redis.call('XRANGE', KEYS[3], '-', '+')
local last = ''
for _, entry in ipairs(entries) do last = redis.call('XADD', KEYS[4], '*', unpack(entry[2])) end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[2], 'shard', ARGV[1], 'status', 'ACTIVE')
local oldest = now
if entries[1] then oldest = string.match(entries[1][1], '(%d+)-') end
redis.call('HSET', KEYS[1], 'step', 'CLEANUP', 'switched_ms', now, 'pending', #entries,
           'pending_oldest_ms', oldest, 'replayed_to', last, m[2] .. '_end_ms', now)
return #entries
"""
)

# KEYS: migration, lock, handoff, running index, finished index, stats. ARGV: migration id,
# seconds to keep a record that has no ttl_s of its own, finished migrations to index,
# seconds to keep the handoff.
# The index, expiry and stats part is skipped when called with the first two keys only.
FINISH = (
    _NOW
    + """
local before = redis.call('HGET', KEYS[1], 'state')
local state = before
if state == 'RUNNING' then state = 'DONE' elseif state == 'ROLLING_BACK' then
  state = 'ROLLED_BACK' end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'state', state, 'step', 'DONE', 'CLEANUP_end_ms', now,
           'finished_ms', now)
if KEYS[3] then
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_s') or ARGV[2])
  redis.call('EXPIRE', KEYS[1], ttl)
  -- the handoff never expires while the migration runs (workers/worker.py)
  if redis.call('TTL', KEYS[3]) == -1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], 'NX', now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('(%d', now - ttl * 1000))
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[3]) - 1)
  if before ~= state then
    -- counted once, by whichever orchestrator ended it
    redis.call('HINCRBY', KEYS[6], state, 1)
    local t = redis.call('HMGET', KEYS[1], 'paused_ms', 'switched_ms')
    if t[1] and t[2] then
      redis.call('HSET', KEYS[6], 'last_paused_ms', tonumber(t[2]) - tonumber(t[1]),
                 'last_id', ARGV[1])
    end
  end
end
return state
"""
)


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


async def start(
    redis: Any,
    symbol: str,
    to_shard: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ttl_s: int | None = None,
    exclusive: bool = False,
) -> str:
    """Create the migration (or find the one already moving the symbol to `to_shard`).

    `exclusive`: a migration of the symbol already running is an error (MigrationRunning)
    even when it goes to `to_shard`, for a caller that must not orchestrate it a second
    time. `ttl_s`: how long the record is kept once finished (default: the setting)."""
    reply = await redis.eval(
        START,
        4,
        keys.migrating(symbol),
        keys.route(symbol),
        keys.MIGRATION_IDS,
        keys.MIGRATIONS_RUNNING,
        symbol,
        to_shard,
        int(timeout_s * 1000),
        keys.MIGRATION,
        _finished_ttl_s() if ttl_s is None else ttl_s,
    )
    status = _text(reply[0])
    if status == "OK":
        return _text(reply[1])
    if status == "EXISTS":
        existing = _text(reply[1])
        if exclusive:
            raise MigrationRunning(
                f"{symbol} is being moved already, by migration {existing}", existing
            )
        running_to = await redis.hget(keys.migration(existing), "to")
        if running_to is not None and int(running_to) == to_shard:
            return existing
        raise MigrationError(f"{symbol} is being moved already, by migration {existing}", "RUNNING")
    raise MigrationError(f"cannot move {symbol} to shard {to_shard}: {status}", status)


def _finished_ttl_s() -> int:
    # Imported here: schema.settings is not needed by the steps, only by a caller that did
    # not say (the CLI, whose environment was validated already).
    from schema.settings import Settings

    return Settings.from_env().migration_ttl_s


async def migrate(
    redis: Any,
    symbol: str,
    to_shard: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    ttl_s: int | None = None,
) -> dict[str, Any]:
    """Start or resume the symbol's migration and run it to its end; returns its status."""
    migration_id = await start(redis, symbol, to_shard, timeout_s, ttl_s=ttl_s)
    await run(redis, migration_id)
    return await status(redis, migration_id)


async def resume_all(redis: Any) -> list[dict[str, Any]]:
    """Run every unfinished migration to its end (an orchestrator restarting)."""
    ids = [_text(await redis.get(key)) async for key in redis.scan_iter(keys.MIGRATING + "*")]
    for migration_id in ids:
        await run(redis, migration_id)
    return [await status(redis, migration_id) for migration_id in ids]


async def run(redis: Any, migration_id: str) -> None:
    while await advance(redis, migration_id):
        pass


async def advance(redis: Any, migration_id: str) -> bool:
    """Run the persisted next step; False once the migration has ended."""
    m = await _load(redis, migration_id)
    step = m.get("step", "DONE")
    if step == "DONE":
        return False
    try:
        if step == "PAUSE":
            await redis.eval(PAUSE, 2, keys.migration(migration_id), keys.route(m["symbol"]))
        elif step == "DRAIN":
            await _drain(redis, migration_id, m)
        elif step == "TRANSFER":
            await _transfer(redis, migration_id, m)
        elif step == "SWITCH":
            await _switch(redis, migration_id, m, int(m["to"]), "RUNNING")
        elif step == "ROLLBACK":
            await _roll_back(redis, migration_id, m)
        elif step == "CLEANUP":
            await _cleanup(redis, migration_id, m)
    except StepTimeout as e:
        await _start_rollback(redis, migration_id, str(e))
    return True


async def status(redis: Any, migration_id: str) -> dict[str, Any]:
    """The migration's persisted fields, with step durations and the pause in ms."""
    m: dict[str, Any] = await _load(redis, migration_id)
    if not m:
        raise MigrationError(f"no migration {migration_id}")
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


# -- steps ------------------------------------------------------------------------------


async def _load(redis: Any, migration_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.migration(migration_id))
    return {_text(k): _text(v) for k, v in raw.items()}


async def _begin(redis: Any, migration_id: str, m: dict[str, str], step: str) -> float:
    """Record the step's start once; returns its deadline (time.time() seconds)."""
    key = keys.migration(migration_id)
    await redis.hsetnx(key, f"{step}_start_ms", _now_ms())
    started = int(await redis.hget(key, f"{step}_start_ms"))
    return (started + int(m["timeout_ms"])) / 1000


async def _end(redis: Any, migration_id: str, step: str, next_step: str) -> None:
    await redis.eval(END, 1, keys.migration(migration_id), step, next_step)


async def _mark(
    redis: Any, migration_id: str, m: dict[str, str], kind: str, shard: int, again: str = ""
) -> str:
    """XADD a DRAIN or ADOPT marker to the shard's stream, once per migration, shard and
    `again` (a second marker of the kind names itself)."""
    return _text(
        await redis.eval(
            MARK,
            2,
            keys.migration(migration_id),
            keys.orders(shard),
            f"{kind}{again}_{shard}_id",
            "ctl",
            kind,
            "symbol",
            m["symbol"],
            "migration",
            migration_id,
            "epoch",
            m["epoch"],
        )
    )


async def _wait_applied(redis: Any, shard: int, entry_id: str, deadline: float) -> None:
    """Until the shard's worker has settled past `entry_id` (its watermark)."""
    while True:
        applied = await redis.get(keys.applied(shard))
        if applied is not None and _after_or_at(_text(applied), entry_id):
            return
        if time.time() > deadline:
            raise StepTimeout(f"shard {shard} did not reach {entry_id} in time")
        await asyncio.sleep(POLL_S)


async def _drain(redis: Any, migration_id: str, m: dict[str, str]) -> None:
    deadline = await _begin(redis, migration_id, m, "DRAIN")
    source = int(m["from"])
    marker = await _mark(redis, migration_id, m, "DRAIN", source)
    # The pause is the source's queue plus the target's: this overlaps them. No command
    # of the symbol reaches the target before SWITCH, so adopting early changes nothing.
    await _mark(redis, migration_id, m, "ADOPT", int(m["to"]))
    await _wait_applied(redis, source, marker, deadline)
    drained = await redis.hget(keys.migration(migration_id), "drained")
    if drained is None or _text(drained) != "1":
        # The source settled past the marker without claiming it: it does not hold the book.
        raise StepTimeout(f"shard {source} ignored the DRAIN marker")
    await _end(redis, migration_id, "DRAIN", "TRANSFER")


async def _transfer(redis: Any, migration_id: str, m: dict[str, str]) -> None:
    deadline = await _begin(redis, migration_id, m, "TRANSFER")
    target = int(m["to"])
    for again in ("", "AGAIN"):  # the second marker when the first came before the drain
        marker = await _mark(redis, migration_id, m, "ADOPT", target, again)
        await _wait_applied(redis, target, marker, deadline)
        adopted = await redis.hget(keys.migration(migration_id), "adopted")
        if adopted is not None and _text(adopted) == str(target):
            await _end(redis, migration_id, "TRANSFER", "SWITCH")
            return
    # Settled past both markers without the book (its handoff was gone): never switch.
    raise StepTimeout(f"shard {target} did not take the book")


async def _switch(
    redis: Any, migration_id: str, m: dict[str, str], shard: int, expected_state: str
) -> None:
    await redis.hsetnx(keys.migration(migration_id), "SWITCH_start_ms", _now_ms())
    await redis.eval(
        SWITCH,
        4,
        keys.migration(migration_id),
        keys.route(m["symbol"]),
        keys.pending(m["symbol"]),
        keys.orders(shard),
        shard,
        expected_state,
    )


async def _start_rollback(redis: Any, migration_id: str, why: str) -> None:
    await redis.eval(ROLLBACK, 1, keys.migration(migration_id), why)


async def _roll_back(redis: Any, migration_id: str, m: dict[str, str]) -> None:
    source = int(m["from"])
    if m.get("drained") == "1":
        # The source gave its book away: it takes it back from the handoff, before the
        # pending commands the switch below appends behind this marker.
        await _mark(redis, migration_id, m, "ADOPT", source)
    await _switch(redis, migration_id, m, source, "ROLLING_BACK")


async def _cleanup(redis: Any, migration_id: str, m: dict[str, str]) -> None:
    await redis.hsetnx(keys.migration(migration_id), "CLEANUP_start_ms", _now_ms())
    replayed_to = m.get("replayed_to", "")
    shard = int(m["from"] if m["state"] == "ROLLING_BACK" else m["to"])
    if replayed_to and "replayed_ms" not in m:
        # Only a measurement (how long the last buffered command waited): never fatal.
        try:
            deadline = time.time() + int(m["timeout_ms"]) / 1000
            await _wait_applied(redis, shard, replayed_to, deadline)
            await redis.hset(keys.migration(migration_id), "replayed_ms", _now_ms())
        except StepTimeout:
            pass
    await redis.eval(
        FINISH,
        6,
        keys.migration(migration_id),
        keys.migrating(m["symbol"]),
        keys.handoff(migration_id),
        keys.MIGRATIONS_RUNNING,
        keys.MIGRATIONS_FINISHED,
        keys.MIGRATION_STATS,
        migration_id,
        m.get("ttl_s") or _finished_ttl_s(),
        FINISHED_KEPT,
        keys.HANDOFF_KEPT_S,
    )
