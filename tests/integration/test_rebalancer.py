"""The rebalancer on real Redis, with in-process workers and orders through the real router:
an overloaded shard holding two symbols gives the hotter one away, once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from api.metrics import Metrics
from api.order_gateway import OrderGateway
from control import migration, wiring
from control.policy import Policy
from control.rebalancer import Capacity, Rebalancer
from schema import keys
from schema.messages import Place, Side
from schema.settings import Settings
from schema.symbols import SymbolSpec
from spot.status import rebalancer_status, render, shard_status
from store.symbols import list_symbol
from tests.integration.flow import SPEC
from tests.integration.test_hot_shard import Workers, caught_up

SHARDS = 10
MSFT = SymbolSpec(symbol="MSFT", base="MSFT", quote="USD", band_bps=2000, reference_price=10_000)
FUNDS = {"USD": 10**12, "AAPL": 10**9, "MSFT": 10**9}
# Orders per second. With a capacity of 30 orders/s, 32 put the shard at 107% (MOVE); AAPL
# alone takes a target to 67%, under the 70% PREPARE threshold, and MSFT leaves 40% behind.
RATES = {"AAPL": 20, "MSFT": 12}
WARM = {"AAPL": 14, "MSFT": 9}  # 77%: PREPARE, never MOVE
CAPACITY = 30


@pytest.fixture
def market(redis, aio):
    """AAPL and MSFT both on AAPL's home shard, alice and bob funded."""

    async def setup():
        home = await list_symbol(redis, SPEC, SHARDS)
        await list_symbol(redis, MSFT, SHARDS)
        await redis.hset(keys.route("MSFT"), "shard", home)  # before any order: no book yet
        router = OrderGateway(redis)
        for user in ("alice", "bob"):
            for asset, amount in FUNDS.items():
                await router.transfer(user, asset, amount, "seed")
        return router, home, [(home + 3) % SHARDS, (home + 6) % SHARDS]

    return aio.run(setup())


class Orders:
    """Each symbol's orders at its rate through the router, spread over each second; when
    the loop falls behind it skips ahead rather than catching up in a burst."""

    def __init__(self, router: OrderGateway, rates: dict[str, int]) -> None:
        self.router = router
        self.rates = rates  # may be changed while it runs
        self.placed = {symbol: 0 for symbol in RATES}
        self.done = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        specs = {"AAPL": SPEC, "MSFT": MSFT}
        tick, n = 0.05, 0
        start = time.monotonic()
        while not self.done:
            n += 1
            for symbol, rate in self.rates.items():
                # orders due by tick n, less those placed: exact per second, no bursts
                due = int(rate * n * tick) - int(rate * (n - 1) * tick)
                for _ in range(due):
                    await self._place(specs[symbol], n)
            next_at = start + n * tick
            now = time.monotonic()
            if next_at < now:  # behind: skip the ticks that passed
                n = int((now - start) / tick)
                next_at = start + (n + 1) * tick
            await asyncio.sleep(next_at - now)

    async def _place(self, spec: SymbolSpec, n: int) -> None:
        user, side = ("alice", Side.BUY) if n % 2 else ("bob", Side.SELL)
        place = Place(
            order_id=await self.router.order_ids.take(),
            user_id=user,
            symbol=spec.symbol,
            side=side,
            price=10_000 + 10 * (n % 5) - 20,
            quantity=1,
        )
        result = await self.router.place(spec, place, 0)
        assert result.status == "OK", result
        self.placed[spec.symbol] += 1

    async def stop(self) -> None:
        # The order in flight finishes: `placed` counts what the router took.
        self.done = True
        await self.task


def rebalancer(redis, **kwargs) -> Rebalancer:
    settings = Settings.from_env(
        {
            "SPOT_SHARDS": str(SHARDS),
            "SPOT_SHARD_CAPACITY": str(CAPACITY),
            "SPOT_REBALANCER_COOLDOWN_S": "1",
        }
    )
    return wiring.rebalancer(
        redis,
        settings,
        # A one-second cooldown: what keeps the symbol from coming back must be the loads.
        policy=Policy(sustain=3, cooldown_s=settings.rebalancer_cooldown_s),
        measured_after=10**12,  # the workers measure thousands/s: keep the small default
        window_s=10,
        migration_timeout_s=10,
        **kwargs,
    )


async def route(redis, symbol: str) -> tuple[int, bytes]:
    shard, status = await redis.hmget(keys.route(symbol), "shard", "status")
    return int(shard), status


async def decisions(redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await redis.xrange(keys.REBALANCER_DECISIONS)
    ]


async def test_an_overloaded_shard_gives_its_hotter_symbol_away_and_nothing_comes_back(
    redis, market
):
    router, home, targets = market
    workers = Workers(redis, [home, *targets])
    orders = Orders(router, WARM)
    rb = rebalancer(redis)
    seen = []
    try:
        await rb.start()
        for _ in range(80):  # 40 s at most; PREPARE comes after ~8 s of load
            seen.append(await rb.evaluate())
            if seen[-1].code == "PREPARE":
                break
            await asyncio.sleep(0.5)
        prepare = seen[-1]
        assert (prepare.code, prepare.symbol, prepare.source) == ("PREPARE", "AAPL", home), seen
        assert prepare.target in targets and "would move AAPL to shard" in prepare.reason
        orders.rates = RATES
        for _ in range(80):  # 40 s at most; the move comes after a few seconds
            decision = await rb.evaluate()
            seen.append(decision)
            if decision.code == "MOVE":
                break
            await asyncio.sleep(0.5)
        move = seen[-1]
        assert (move.code, move.symbol, move.source) == ("MOVE", "AAPL", home), seen
        assert move.target in targets
        assert await route(redis, "AAPL") == (move.target, b"ACTIVE")
        assert await route(redis, "MSFT") == (home, b"ACTIVE")
        # The load goes on: the window slides past the move, and nothing moves again.
        after = []
        for _ in range(24):  # longer than the window
            await asyncio.sleep(0.5)
            after.append(await rb.evaluate())
        assert [d for d in after if d.code == "MOVE"] == [], after
        assert await route(redis, "AAPL") == (move.target, b"ACTIVE")
        state = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.REBALANCER)).items()}
        shown = await rebalancer_status(redis), render(await shard_status(redis, SHARDS))
        scraped = await Metrics(redis, SHARDS).render()
        await orders.stop()
        await caught_up(redis, [home, *targets])
    finally:
        await orders.stop()
        await workers.stop_all()
    # The migration ran to its end and the books are where the routes say.
    (done,) = await migration.recent(redis, 10)
    assert (done["symbol"], done["state"], int(done["to"])) == ("AAPL", "DONE", move.target)
    assert "AAPL" in workers.workers[move.target].shards[move.target].engine.books
    assert "AAPL" not in workers.workers[home].shards[home].engine.books
    assert "MSFT" in workers.workers[home].shards[home].engine.books
    # Levels after the move: AAPL's new shard near 67%, the old one near 40%.
    assert state[f"{home}:level"] != "MOVE" and state[f"{move.target}:level"] != "MOVE"
    assert float(state[f"{home}:load"]) < 0.5 and float(state[f"{move.target}:load"]) < 0.85
    assert (state["moves"], state["last_move_symbol"], state["last_move_state"]) == (
        "1",
        "AAPL",
        "DONE",
    )
    assert int(state["evaluations"]) == len(seen) + len(after)
    assert state[f"{home}:capacity"] == str(CAPACITY) and state[f"{home}:measured"] == "0"
    # Operators see the same: `spot status` and /metrics.
    assert f"1 moves, 0 failed; the last AAPL {home}->{move.target} DONE" in shown[0]
    load = float(state[f"{home}:load"])
    assert f"{load:.0%} {state[f'{home}:level']}" in shown[1].splitlines()[1 + home]
    assert 'spot_rebalancer_moves_total{outcome="done"} 1' in scraped
    assert f'spot_shard_load{{shard="{home}",level="{state[f"{home}:level"]}"}} {load}' in scraped
    assert f'spot_shard_capacity{{shard="{home}",measured="0"}} {CAPACITY}' in scraped
    # The stream holds each change of decision: the candidate while PREPARE, then the move.
    logged = [(d["code"], d["symbol"], d["from"], d["to"]) for d in await decisions(redis)]
    assert all(a != b for a, b in zip(logged, logged[1:], strict=False))  # changes only
    codes = [entry[:2] for entry in logged]
    assert ("PREPARE", "AAPL") in codes
    assert codes.index(("PREPARE", "AAPL")) < codes.index(("MOVE", "AAPL"))
    assert codes.index(("MOVE", "AAPL")) + 1 == codes.index(("MOVED", "AAPL"))
    assert codes.count(("MOVE", "AAPL")) == 1
    # The workers published what they applied and how long it took: a measured capacity.
    stats = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.SHARD_STATS)).items()}
    assert stats[f"{home}:commands"] > 0 and stats[f"{home}:busy_us"] > 0
    measured, _ = Capacity(CAPACITY, measured_after=1).update(
        home, stats[f"{home}:commands"], stats[f"{home}:busy_us"]
    )
    print(
        f"\nshard {home}: {stats[f'{home}:commands']} commands in "
        f"{stats[f'{home}:busy_us'] / 1000:.0f} ms busy: {measured:.0f} commands per busy "
        f"second (batches of a few commands; orders placed {orders.placed})"
    )


async def test_on_start_it_finishes_an_unfinished_migration_and_keeps_its_cooldown(redis, market):
    router, home, targets = market
    workers = Workers(redis, [home, targets[0]])
    try:
        migration_id = await migration.start(redis, "AAPL", targets[0])
        await migration.advance(redis, migration_id)  # paused, then the orchestrator died
        dry = rebalancer(redis, dry_run=True)
        await dry.start()  # a dry run changes nothing
        assert await route(redis, "AAPL") == (home, b"MIGRATING")
        assert (await dry.evaluate()).code == "MIGRATION_RUNNING"
        rb = rebalancer(redis)
        await rb.start()
        assert await route(redis, "AAPL") == (targets[0], b"ACTIVE")
        assert (await migration.status(redis, migration_id))["state"] == "DONE"
        # The cooldown counts from when that migration ended.
        assert rb.rebalance.symbol_cooldowns["AAPL"] > time.time()
        assert rb.rebalance.shard_cooldowns.keys() == {home, targets[0]}
    finally:
        await workers.stop_all()


def spot(redis_url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPOT_")},
        "SPOT_REDIS_URL": redis_url,
        "SPOT_SHARDS": str(SHARDS),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "rebalancer", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_spot_rebalancer_once_prints_its_decision_and_sigterm_stops_it(
    redis, redis_url, market
):
    once = spot(redis_url, "--once", "--dry-run")
    out, err = await asyncio.to_thread(once.communicate, timeout=60)
    assert once.returncode == 0, err
    assert "BALANCED: every shard under 50%" in out
    assert await redis.hget(keys.REBALANCER, "dry_run") == b"1"
    process = spot(redis_url, "--interval", "0.2")
    try:
        for _ in range(300):
            if await redis.hget(keys.REBALANCER, "dry_run") == b"0":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the rebalancer never evaluated")
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "rebalancer stopped" in err
