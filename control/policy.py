"""What the rebalancer decides, without I/O: unit tests drive it with made-up loads.

The seed's thresholds (seeds/hot-shard-migration-design.md §10), as a fraction of a shard's
measured capacity: under 50% NORMAL, 50-70% WARN, 70-85% PREPARE (a candidate move is
chosen and logged), above 85% MOVE (the hottest symbol of the shard goes to the least
loaded shard). Against flapping:

- a level is entered at its edge but left only below its edge minus `margin`;
- a shard must stay in MOVE for `sustain` evaluations in a row before anything moves;
- a move must leave its target under the PREPARE threshold, so the target never becomes
  the next hot shard by taking the symbol;
- after a move the symbol and both shards sit out `cooldown_s`: the symbol cannot come
  straight back, and neither shard is picked again while its rates settle;
- one migration at a time: nothing is decided while any migration runs.

Times are wall-clock seconds (time.time()), so cooldowns can be seeded from finished
migrations' records after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    NORMAL = 0
    WARN = 1
    PREPARE = 2
    MOVE = 3


@dataclass(frozen=True)
class Policy:
    warn: float = 0.50
    prepare: float = 0.70
    move: float = 0.85
    margin: float = 0.10  # a level is left only below its lower edge minus this
    sustain: int = 3  # evaluations in a row in MOVE before a move
    cooldown_s: float = 60.0
    # A symbol carries load if it brings at least this share of its shard's orders; moving
    # a shard's only such symbol would just move the problem.
    carrying_share: float = 0.05

    def edges(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Each level's lower edge, lowered by `margin` (the edges on the way down)."""
        return (0.0, self.warn - margin, self.prepare - margin, self.move - margin)

    def level_of(self, load: float, margin: float = 0.0) -> Level:
        edges = self.edges(margin)
        return max(level for level in Level if load >= edges[level])


@dataclass(frozen=True)
class ShardLoad:
    """One shard as measured: its capacity (commands per busy second) and the order rate
    (orders/s over the window) of each symbol routed to it."""

    shard: int
    capacity: float
    rates: dict[str, float] = field(default_factory=dict)
    owned: bool = True  # a worker holds the shard's lease: it can take a symbol

    @property
    def rate(self) -> float:
        return sum(self.rates.values())

    @property
    def load(self) -> float:
        return self.rate / self.capacity


@dataclass(frozen=True)
class Decision:
    """`code` is MOVE or why nothing moves: BALANCED, WARN, PREPARE, WAITING (in MOVE, not
    for long enough yet), COOLDOWN, ONLY_SYMBOL, NO_TARGET, MIGRATION_RUNNING."""

    code: str
    reason: str
    symbol: str = ""
    source: int | None = None
    target: int | None = None

    @property
    def key(self) -> tuple[str, str, int | None, int | None]:
        """What makes a decision different from the last one (the reason's figures don't)."""
        return (self.code, self.symbol, self.source, self.target)


class Rebalance:
    """The decision and the memory it needs: each shard's level and how many evaluations
    in a row it has been in MOVE, and the cooldowns after moves."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.levels: dict[int, Level] = {}
        self.streaks: dict[int, int] = {}  # shard -> evaluations in a row in MOVE
        self.symbol_cooldowns: dict[str, float] = {}  # symbol -> until
        self.shard_cooldowns: dict[int, float] = {}  # shard -> until

    def decide(self, shards: list[ShardLoad], now: float, running: str = "") -> Decision:
        """One evaluation: update the levels, then the one thing to do (or why not).
        `running`: the id of a migration running now, if any."""
        for shard in shards:
            self._observe(shard)
        if running:
            return Decision("MIGRATION_RUNNING", f"migration {running} is running: one at a time")
        by_load = sorted(shards, key=lambda s: (-s.load, s.shard))
        hot = [s for s in by_load if self.levels[s.shard] is Level.MOVE]
        if hot:
            decisions = [self._relieve(s, shards, now) for s in hot]
            return next((d for d in decisions if d.code == "MOVE"), decisions[0])
        warm = [s for s in by_load if self.levels[s.shard] is Level.PREPARE]
        if warm:
            plan = self._plan(warm[0], shards, now)
            what = f"would move {plan.symbol} to shard {plan.target}"
            return Decision(
                "PREPARE",
                f"shard {warm[0].shard} at {warm[0].load:.0%}: "
                + (what if plan.code == "MOVE" else plan.reason),
                plan.symbol,
                warm[0].shard,
                plan.target,
            )
        warned = [s for s in by_load if self.levels[s.shard] is Level.WARN]
        if warned:
            listed = ", ".join(f"{s.shard} at {s.load:.0%}" for s in warned)
            return Decision("WARN", f"shards {listed}; nothing to move below PREPARE")
        return Decision("BALANCED", f"every shard under {self.policy.warn:.0%}")

    def moved(self, symbol: str, source: int, target: int, now: float) -> None:
        """A move ended (or failed): the symbol and both shards sit out the cooldown."""
        until = now + self.policy.cooldown_s
        self.symbol_cooldowns[symbol] = max(until, self.symbol_cooldowns.get(symbol, 0.0))
        for shard in (source, target):
            self.shard_cooldowns[shard] = max(until, self.shard_cooldowns.get(shard, 0.0))
            self.streaks[shard] = 0

    def _observe(self, shard: ShardLoad) -> None:
        current = self.levels.get(shard.shard, Level.NORMAL)
        rising = self.policy.level_of(shard.load)
        if rising >= current:  # up at the edge
            level = rising
        else:  # down only below the edge minus the margin
            level = min(current, self.policy.level_of(shard.load, self.policy.margin))
        self.levels[shard.shard] = level
        self.streaks[shard.shard] = (
            self.streaks.get(shard.shard, 0) + 1 if level is Level.MOVE else 0
        )

    def _relieve(self, shard: ShardLoad, shards: list[ShardLoad], now: float) -> Decision:
        streak, sustain = self.streaks[shard.shard], self.policy.sustain
        if streak < sustain:
            return Decision(
                "WAITING",
                f"shard {shard.shard} at {shard.load:.0%}, in MOVE for {streak} of {sustain} "
                "evaluations",
                source=shard.shard,
            )
        return self._plan(shard, shards, now)

    def _plan(self, shard: ShardLoad, shards: list[ShardLoad], now: float) -> Decision:
        """The move that would relieve `shard`, or why there is none."""
        n = shard.shard
        if self.shard_cooldowns.get(n, 0.0) > now:
            left = self.shard_cooldowns[n] - now
            return Decision(
                "COOLDOWN", f"shard {n} took part in a move: {left:.0f} s to go", source=n
            )
        carrying = sorted(
            (
                s
                for s, r in shard.rates.items()
                if r > 0 and r >= self.policy.carrying_share * shard.rate
            ),
            key=lambda s: (-shard.rates[s], s),
        )
        if not carrying:
            return Decision("NO_TARGET", f"shard {n} has no symbol with orders", source=n)
        symbol, rate = carrying[0], shard.rates[carrying[0]]
        if len(carrying) < 2:
            return Decision(
                "ONLY_SYMBOL",
                f"{symbol} carries shard {n}'s load alone ({rate:.1f} orders/s): moving it "
                "would only move the problem",
                symbol,
                n,
            )
        if self.symbol_cooldowns.get(symbol, 0.0) > now:
            left = self.symbol_cooldowns[symbol] - now
            return Decision("COOLDOWN", f"{symbol} moved recently: {left:.0f} s to go", symbol, n)
        targets = [
            s
            for s in shards
            if s.shard != n and s.owned and self.shard_cooldowns.get(s.shard, 0.0) <= now
        ]
        if not targets:
            return Decision(
                "NO_TARGET", "no other shard with a worker is out of cooldown", symbol, n
            )
        target = min(targets, key=lambda s: (s.load, s.shard))
        after = target.load + rate / target.capacity
        if after >= self.policy.prepare:
            return Decision(
                "NO_TARGET",
                f"{symbol} ({rate:.1f} orders/s) would put the least loaded shard "
                f"{target.shard} at {after:.0%}, not under {self.policy.prepare:.0%}",
                symbol,
                n,
                target.shard,
            )
        return Decision(
            "MOVE",
            f"shard {n} at {shard.load:.0%}: move {symbol} ({rate:.1f} orders/s) to shard "
            f"{target.shard} ({target.load:.0%} -> {after:.0%})",
            symbol,
            n,
            target.shard,
        )
