"""`spot status`: who owns which shard, how far behind each is, what runs where, how loaded
the rebalancer found each shard, and the hot-shard migrations running or recently finished."""

import time
from typing import Any

from control import migration
from schema import keys
from store.symbols import load_specs

FINISHED_SHOWN = 5  # finished migrations `spot status` lists, newest first
RUNNING_SHOWN = 50  # a symbol has one at most; more than this many would be a fault


async def shard_status(redis: Any, shards: int) -> list[dict[str, Any]]:
    specs = await load_specs(redis)
    routes = {symbol: await redis.hgetall(keys.route(symbol)) for symbol in specs}
    now = int(time.time())
    rates: dict[str, float] = {}
    for second in range(now - 10, now):  # the last ten whole seconds
        for symbol, count in (await redis.hgetall(f"{keys.RATE}{second}")).items():
            rates[symbol.decode()] = rates.get(symbol.decode(), 0) + int(count) / 10
    rebalancer = await _rebalancer_state(redis)
    rows = []
    for n in range(shards):
        applied = await redis.get(keys.applied(n)) or b"0-0"
        # Lag: commands queued on the shard that its worker has not settled yet.
        waiting = await redis.xrange(keys.orders(n), b"(" + applied, "+", count=100_000)
        symbols = sorted(s for s, r in routes.items() if int(r.get(b"shard", -1)) == n)
        rows.append(
            {
                "shard": n,
                "owner": "yes" if await redis.exists(keys.owner(n)) else "NONE",
                "lag": len(waiting),
                "orders_per_s": round(sum(rates.get(s, 0) for s in symbols), 1),
                "load": _load(rebalancer, n),
                "symbols": ",".join(
                    s + ("(MIGRATING)" if routes[s].get(b"status") == b"MIGRATING" else "")
                    for s in symbols
                ),
            }
        )
    return rows


async def batcher_status(redis: Any) -> str:
    stats = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.BATCHER_STATS)).items()}
    if "at_ms" not in stats:  # no flush yet, though streams may be waiting on a gap
        return "batcher: no flush yet" + _waiting(stats)
    age_s = (time.time() * 1000 - int(stats["at_ms"])) / 1000
    return (
        (
            f"batcher: {stats['flushes']} flushes; the last {age_s:.1f} s ago wrote "
            f"{stats['events']} events in {stats['flush_ms']} ms, "
            f"{stats['lag_ms']} ms after its oldest order was accepted"
        )
        + _waiting(stats)
        + _quarantined(stats)
    )


def _quarantined(stats: dict[str, str]) -> str:
    """Entries the database refused, which the batcher set aside (batcher/batcher.py)."""
    count = int(stats.get("quarantined", 0))
    if not count:
        return ""
    return (
        f"\n  {count} entr{'y' if count == 1 else 'ies'} QUARANTINED: the database refused "
        f"them; they are in its quarantine table (and not in its other tables). The last: "
        f"{stats.get('quarantined_last', '?')}"
    )


def _waiting(stats: dict[str, str]) -> str:
    """Streams the batcher holds on a gap in a symbol's sequence (batcher/batcher.py)."""
    if int(stats.get("held_streams", 0)) == 0:
        return ""
    return (
        f"; {stats['held_streams']} stream(s) waiting, the longest for "
        f"{int(stats['held_ms']) / 1000:.1f} s: {stats['held']}"
    )


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'shard':>5}  {'owner':<5}  {'lag':>7}  {'orders/s':>8}  {'load':<12}  symbols"
    lines = [head] + [
        f"{r['shard']:>5}  {r['owner']:<5}  {r['lag']:>7}  {r['orders_per_s']:>8}  "
        f"{r['load']:<12}  {r['symbols']}"
        for r in rows
    ]
    return "\n".join(lines)


async def _rebalancer_state(redis: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.REBALANCER)).items()}


def _load(rebalancer: dict[str, str], shard: int) -> str:
    """As the rebalancer last weighed it: '62% WARN'; '-' when it never has."""
    if f"{shard}:load" not in rebalancer:
        return "-"
    return f"{float(rebalancer[f'{shard}:load']):.0%} {rebalancer[f'{shard}:level']}"


async def rebalancer_status(redis: Any) -> str:
    """Its last decision and its moves, one line."""
    state = await _rebalancer_state(redis)
    if "evaluations" not in state:
        return "rebalancer: never ran"
    age_s = (time.time() * 1000 - int(state["at_ms"])) / 1000
    line = (
        f"rebalancer: {age_s:.1f} s ago{' (dry run)' if state['dry_run'] == '1' else ''} "
        f"{state['code']}: {state['reason']}; {state.get('moves', 0)} moves, "
        f"{state.get('moves_failed', 0)} failed"
    )
    if "last_move_symbol" in state:
        line += (
            f"; the last {state['last_move_symbol']} {state['last_move_from']}->"
            f"{state['last_move_to']} {state['last_move_state']}"
        )
    return line


async def migration_status(redis: Any) -> str:
    """Running migrations, then the last few finished ones: one line each."""
    running = min(await redis.zcard(keys.MIGRATIONS_RUNNING), RUNNING_SHOWN)
    found = await migration.recent(redis, running + FINISHED_SHOWN)
    if not found:
        return "migrations: none yet"
    finished = sum(1 for m in found if m["step"] == "DONE")
    now_ms = time.time_ns() // 1_000_000
    head = (
        f"migrations: {len(found) - finished} running, the last {finished} finished\n"
        f"  {'id':<16}  {'symbol':<10}  {'shards':<7}  {'state':<12}  {'step':<8}  "
        f"{'paused':>10}  {'pending':>7}  started"
    )
    return "\n".join([head] + [_migration_line(m, now_ms) for m in found])


def _migration_line(m: dict[str, Any], now_ms: int) -> str:
    if "paused_for_ms" in m:
        paused = f"{m['paused_for_ms']} ms"
    elif "paused_ms" in m:  # paused now: for how long so far
        paused = f"{now_ms - int(m['paused_ms'])} ms+"
    else:
        paused = "-"
    shards = f"{m['from']}->{m['to']}"
    # a rolled-back migration: the step that timed out
    step = m["rolled_back_at"] if m["state"] == "ROLLED_BACK" else m["step"]
    return (
        f"  {m['id']:<16}  {m['symbol']:<10}  {shards:<7}  {m['state']:<12}  {step:<8}  "
        f"{paused:>10}  {m.get('pending', '-'):>7}  {_ago(now_ms - int(m['created_ms']))}"
    )


def _ago(ms: int) -> str:
    seconds = max(ms // 1000, 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
