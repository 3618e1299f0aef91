"""`spot status`: who owns which shard, how far behind each is, what runs where."""

import time
from typing import Any

from schema import keys
from spot.market import load_specs


async def shard_status(redis: Any, shards: int) -> list[dict[str, Any]]:
    specs = await load_specs(redis)
    routes = {symbol: await redis.hgetall(keys.route(symbol)) for symbol in specs}
    now = int(time.time())
    rates: dict[str, float] = {}
    for second in range(now - 10, now):  # the last ten whole seconds
        for symbol, count in (await redis.hgetall(f"{keys.RATE}{second}")).items():
            rates[symbol.decode()] = rates.get(symbol.decode(), 0) + int(count) / 10
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
        f"batcher: {stats['flushes']} flushes; the last {age_s:.1f} s ago wrote "
        f"{stats['events']} events in {stats['flush_ms']} ms, "
        f"{stats['lag_ms']} ms after its oldest order was accepted"
    ) + _waiting(stats)


def _waiting(stats: dict[str, str]) -> str:
    """Streams the batcher holds on a gap in a symbol's sequence (batcher/batcher.py)."""
    if int(stats.get("held_streams", 0)) == 0:
        return ""
    return (
        f"; {stats['held_streams']} stream(s) waiting, the longest for "
        f"{int(stats['held_ms']) / 1000:.1f} s: {stats['held']}"
    )


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'shard':>5}  {'owner':<5}  {'lag':>7}  {'orders/s':>8}  symbols"
    lines = [head] + [
        f"{r['shard']:>5}  {r['owner']:<5}  {r['lag']:>7}  {r['orders_per_s']:>8}  {r['symbols']}"
        for r in rows
    ]
    return "\n".join(lines)
