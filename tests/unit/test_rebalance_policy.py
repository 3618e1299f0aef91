"""The rebalancer's decision (control/policy.py) and capacity estimate, without I/O."""

from __future__ import annotations

import math

import pytest

from control.policy import Level, Policy, Rebalance, ShardLoad
from control.rebalancer import Capacity
from schema.settings import Settings
from spot.supervisor import children

CAPACITY = 100.0  # orders/s: a shard's rates below read directly as percent


def shards(*rates: dict[str, float], unowned: tuple[int, ...] = ()) -> list[ShardLoad]:
    """Shard n carries rates[n] (symbol -> orders/s) with CAPACITY."""
    return [ShardLoad(n, CAPACITY, r, owned=n not in unowned) for n, r in enumerate(rates)]


def hot(a: float = 60, b: float = 30) -> list[ShardLoad]:
    """Shard 0 at a + b percent with two symbols; shards 1 and 2 light, 2 the lightest."""
    return shards({"HOT": a, "WARM": b}, {"X": 20}, {"Y": 5})


def run(rebalance: Rebalance, loads: list[ShardLoad], times: int, start: float = 0.0):
    return [rebalance.decide(loads, start + i) for i in range(times)]


# -- levels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "level"),
    [(0, "NORMAL"), (49.9, "NORMAL"), (50, "WARN"), (69.9, "WARN"), (70, "PREPARE"),
     (84.9, "PREPARE"), (85, "MOVE"), (300, "MOVE")],
)  # fmt: skip
def test_the_seed_thresholds_name_the_level_on_the_way_up(load, level):
    rebalance = Rebalance()
    rebalance.decide(shards({"A": load}), 0)
    assert rebalance.levels[0] is Level[level]


def test_a_level_is_left_only_below_its_edge_minus_the_margin():
    rebalance = Rebalance()
    path = [90, 80, 76, 74.9, 66, 60.5, 59, 45, 41, 39.9, 55, 72, 61]
    seen = []
    for load in path:
        rebalance.decide(shards({"A": load}), 0)
        seen.append(rebalance.levels[0].name)
    assert seen == [
        "MOVE", "MOVE", "MOVE",  # held down to 75%
        "PREPARE", "PREPARE", "PREPARE",  # held down to 60%
        "WARN", "WARN", "WARN",  # held down to 40%
        "NORMAL",
        "WARN", "PREPARE", "PREPARE",  # up at the edges at once, held again on the way down
    ]  # fmt: skip


def test_a_fall_from_move_lands_in_the_band_that_holds_it():
    rebalance = Rebalance()
    rebalance.decide(shards({"A": 90}), 0)
    rebalance.decide(shards({"A": 62}), 1)  # under PREPARE's edge, not under 60%
    assert rebalance.levels[0] is Level.PREPARE


# -- the move -----------------------------------------------------------------------------


def test_a_shard_in_move_for_n_evaluations_sends_its_hottest_symbol_to_the_least_loaded():
    rebalance = Rebalance(Policy(sustain=3))
    decisions = run(rebalance, hot(), 3)
    assert [d.code for d in decisions] == ["WAITING", "WAITING", "MOVE"]
    assert "1 of 3" in decisions[0].reason
    move = decisions[-1]
    assert (move.symbol, move.source, move.target) == ("HOT", 0, 2)
    assert "shard 0 at 90%" in move.reason and "5% -> 65%" in move.reason


def test_the_streak_restarts_when_the_load_drops_out_of_move():
    rebalance = Rebalance(Policy(sustain=3))
    run(rebalance, hot(), 2)
    rebalance.decide(hot(50, 20), 2)  # 70%: below MOVE's 75% margin
    assert [d.code for d in run(rebalance, hot(), 3, start=3)] == ["WAITING"] * 2 + ["MOVE"]


def test_a_load_oscillating_around_the_move_edge_is_moved_once_and_never_back():
    rebalance = Rebalance(Policy(sustain=3, cooldown_s=10))
    moves = []
    for t in range(200):  # 200 s, one evaluation a second
        # shard 0's load swings between 80% and 92%; HOT stays where it was sent
        rates = [{"WARM": 30.0}, {"X": 20.0}, {"Y": 5.0}]
        rates[2 if moves else 0]["HOT"] = 62.0 if t % 2 else 50.0
        decision = rebalance.decide(shards(*rates), t)
        if decision.code == "MOVE":
            moves.append((t, decision.symbol, decision.source, decision.target))
    # 80% at t=0 is PREPARE; MOVE from t=1, held at 80% by the margin; moved at the third.
    # Afterwards shard 2 swings 55-67% and shard 0 sits at 30%: nothing is hot enough to
    # move, cooldown or not.
    assert moves == [(3, "HOT", 0, 2)]


def test_a_load_swinging_across_the_margin_never_builds_a_streak():
    rebalance = Rebalance(Policy(sustain=3))
    decisions = [rebalance.decide(hot(60, 30 if t % 2 else 10), t) for t in range(100)]
    # 90% and 70% in turn: in and out of MOVE, never three evaluations in a row
    assert {d.code for d in decisions} == {"WAITING", "PREPARE"}


def test_a_shard_that_moved_sits_out_the_cooldown_and_so_does_the_symbol():
    rebalance = Rebalance(Policy(sustain=1, cooldown_s=60))
    (move,) = run(rebalance, hot(), 1)
    rebalance.moved(move.symbol, move.source, move.target, now=0)
    # Shard 0 is still hot (its rates take a while to slide out): it waits.
    assert rebalance.decide(hot(), 30).code == "COOLDOWN"
    # HOT is now on shard 2, which runs hot; the symbol may not move back yet.
    back = shards({"WARM": 10}, {"X": 20}, {"HOT": 55, "Y": 35})
    decision = rebalance.decide(back, 61)  # cooldowns over: allowed again
    assert (decision.code, decision.symbol, decision.target) == ("MOVE", "HOT", 0)
    rebalance = Rebalance(Policy(sustain=1, cooldown_s=60))
    rebalance.moved("HOT", 0, 2, now=0)
    rebalance.shard_cooldowns.clear()  # the shards are free, the symbol not
    decision = rebalance.decide(back, 30)
    assert (decision.code, decision.symbol) == ("COOLDOWN", "HOT")
    assert "moved recently" in decision.reason


def test_a_shard_in_cooldown_is_no_target():
    rebalance = Rebalance(Policy(sustain=1, cooldown_s=60))
    rebalance.moved("OTHER", 5, 2, now=0)  # shard 2, the least loaded, took part in a move
    move = rebalance.decide(shards({"HOT": 45, "WARM": 44}, {"X": 20}, {"Y": 5}), 10)
    assert (move.code, move.target) == ("MOVE", 1)


def test_the_only_symbol_carrying_the_load_is_not_moved():
    rebalance = Rebalance(Policy(sustain=1))
    # A trickle in a second symbol does not count as carrying load (under 5%).
    decision = rebalance.decide(shards({"HOT": 95, "DUST": 1}, {"X": 10}), 0)
    assert (decision.code, decision.symbol, decision.source) == ("ONLY_SYMBOL", "HOT", 0)
    assert "would only move the problem" in decision.reason


def test_no_move_that_would_put_the_target_at_prepare_or_above():
    rebalance = Rebalance(Policy(sustain=1))
    decision = rebalance.decide(shards({"HOT": 60, "WARM": 30}, {"X": 15}, {"Y": 10}), 0)
    assert (decision.code, decision.target) == ("NO_TARGET", 2)  # 10 + 60 = 70%: not under 70
    decision = rebalance.decide(shards({"HOT": 60, "WARM": 30}, {"X": 15}, {"Y": 9}), 1)
    assert (decision.code, decision.target) == ("MOVE", 2)  # 69%


def test_the_target_is_the_least_loaded_relative_to_its_own_capacity():
    rebalance = Rebalance(Policy(sustain=1))
    loads = [
        ShardLoad(0, 100, {"HOT": 50, "WARM": 40}),
        ShardLoad(1, 1000, {"X": 100}),  # 10%: the least loaded, though the busiest in orders
        ShardLoad(2, 100, {"Y": 20}),
    ]
    move = rebalance.decide(loads, 0)
    assert (move.code, move.target) == ("MOVE", 1)
    assert "10% -> 15%" in move.reason


def test_a_shard_without_a_worker_is_no_target():
    rebalance = Rebalance(Policy(sustain=1))
    loads = shards({"HOT": 60, "WARM": 30}, {"X": 20}, {}, unowned=(2,))
    assert rebalance.decide(loads, 0).target == 1


def test_of_two_hot_shards_the_hotter_goes_first_and_a_stuck_one_does_not_block_the_other():
    rebalance = Rebalance(Policy(sustain=1))
    loads = shards({"A": 60, "B": 30}, {"C": 50, "D": 40, "E": 5}, {}, {})
    assert rebalance.decide(loads, 0).source == 1  # 95% before 90%
    stuck = shards({"A": 60, "B": 30}, {"ALONE": 99}, {}, {})
    decision = rebalance.decide(stuck, 1)
    assert (decision.code, decision.source, decision.symbol) == ("MOVE", 0, "A")


def test_nothing_is_decided_while_a_migration_runs():
    rebalance = Rebalance(Policy(sustain=1))
    decision = rebalance.decide(hot(), 0, running="HOT-7")
    assert decision.code == "MIGRATION_RUNNING" and "HOT-7" in decision.reason
    assert rebalance.levels[0] is Level.MOVE  # the levels still follow the load


def test_prepare_names_the_candidate_move_and_warn_and_balanced_say_why_not():
    rebalance = Rebalance()
    prepare = rebalance.decide(hot(50, 25), 0)
    assert (prepare.code, prepare.symbol, prepare.target) == ("PREPARE", "HOT", 2)
    assert "would move HOT to shard 2" in prepare.reason
    assert Rebalance().decide(hot(40, 15), 0).code == "WARN"
    assert Rebalance().decide(hot(20, 10), 0).code == "BALANCED"


def test_a_decision_differs_by_what_it_does_not_by_its_figures():
    rebalance = Rebalance(Policy(sustain=5))
    first, second = run(rebalance, hot(), 2)
    assert first.reason != second.reason and first.key == second.key
    assert Rebalance().decide(hot(20, 10), 0).key != first.key


# -- capacity -------------------------------------------------------------------------------


def test_capacity_is_the_default_until_measured_then_commands_per_busy_second():
    capacity = Capacity(default=5000, measured_after=1000)
    assert capacity.update(0, 999, 50_000) == (5000, False)
    assert capacity.update(0, 1000, 250_000) == (4000, True)  # 1000 in 0.25 s
    # a window too small to count changes nothing; a big one moves the EWMA 30% of the way
    assert capacity.update(0, 1100, 260_000) == (4000, True)
    estimate, measured = capacity.update(0, 2000, 350_000)  # 1000 in 0.1 s: 10,000/s
    assert measured and math.isclose(estimate, 4000 + 0.3 * 6000)
    # counters reset (the hash was deleted): the lifetime ratio again
    assert capacity.update(0, 1500, 100_000) == (15000, True)


# -- wiring ----------------------------------------------------------------------------------


def test_spot_up_runs_the_rebalancer_only_when_asked():
    assert "rebalancer" not in [c.name for c in children(Settings(shards=2))]
    with_it = Settings.from_env({"SPOT_REBALANCER": "1", "SPOT_SHARDS": "2"})
    assert [c.name for c in children(with_it)][-1] == "rebalancer"
    assert children(with_it)[-1].argv[-1] == "rebalancer"
