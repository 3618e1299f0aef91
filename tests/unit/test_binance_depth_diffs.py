"""The depth-diff chain of api/binance/streams.py against the real matching core: random
orders, cancels and replaces; the worker's depth cache (a few levels, so that levels keep
crossing its edge) published at random moments; the API's fan-out reading the events late
and its depth reads sampling the cache at random moments, making diffs. Then a client that
starts from ANY snapshot the cache ever held (not only those the diffs were made from,
as another API process or a later read may hand out) and follows Binance's procedure must
hold, after each diff, exactly the cache's levels at the diff's last update id.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from api.binance.streams import Chain, next_diff, touches
from schema.messages import Cancel, Command, Event, Place, Replace, Side, TimeInForce
from schema.symbols import SymbolSpec
from workers.engine import MatchingEngine

LEVELS = 4  # of the cache: small, so that levels keep entering and leaving it
Levels = list[tuple[int, int]]
Diff = tuple[int, int, dict[int, int], dict[int, int]]  # U, u, bids, asks


def _command(rng: random.Random, resting: list[tuple[int, str]], order_id: int) -> Command:
    roll = rng.random()
    if resting and roll < 0.25:
        oid, user = resting.pop(rng.randrange(len(resting)))
        return Cancel(order_id=oid, user_id=user, symbol="X")
    if resting and roll < 0.4:
        oid, user = rng.choice(resting)
        if rng.random() < 0.5:
            return Replace(order_id=oid, user_id=user, symbol="X", quantity=rng.randrange(1, 6))
        return Replace(order_id=oid, user_id=user, symbol="X", price=rng.randrange(90, 111))
    side = rng.choice((Side.BUY, Side.SELL))
    user = rng.choice(("u1", "u2", "u3"))
    resting.append((order_id, user))
    return Place(
        order_id=order_id,
        user_id=user,
        symbol="X",
        side=side,
        quantity=rng.randrange(1, 6),
        price=rng.randrange(90, 111),
        time_in_force=TimeInForce.IOC if rng.random() < 0.1 else TimeInForce.GTC,
    )


def _run(seed: int) -> tuple[dict[int, tuple[Levels, Levels]], list[Diff]]:
    """(every cache the worker published by its seq, the diffs the API made)."""
    rng = random.Random(seed)
    engine = MatchingEngine([SymbolSpec(symbol="X", base="B", quote="Q")])
    book = engine.book("X")
    assert book is not None
    chain = Chain(0)  # a fresh book: every event is read
    caches: dict[int, tuple[Levels, Levels]] = {0: ([], [])}
    latest = 0
    unread: list[Event] = []
    diffs: list[Diff] = []
    resting: list[tuple[int, str]] = []

    def read_cache() -> None:
        bids, asks = caches[latest]
        made = next_diff(chain, bids, asks, latest)
        if made is not None:
            diffs.append((made[0], latest, made[1], made[2]))

    for order_id in range(1, 600):
        unread += engine.apply(_command(rng, resting, order_id))
        if rng.random() < 0.3:
            latest = book.seq
            caches[latest] = book.depth(LEVELS)
        if rng.random() < 0.4:  # the fan-out reads some of what is in the streams
            read = rng.randrange(len(unread) + 1)
            for event in unread[:read]:
                chain.record(event.seq, touches(event))
            del unread[:read]
        if rng.random() < 0.25:
            read_cache()
    for event in unread:
        chain.record(event.seq, touches(event))
    latest = book.seq
    caches[latest] = book.depth(LEVELS)
    read_cache()
    return caches, diffs


def _merged(diffs: list[Diff], rng: random.Random) -> list[Diff]:
    """The 1000 ms stream's diffs: runs of consecutive diffs, later quantities winning."""
    out: list[Diff] = []
    i = 0
    while i < len(diffs):
        run = diffs[i : i + rng.randrange(1, 6)]
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for _, _, b, a in run:
            bids.update(b)
            asks.update(a)
        out.append((run[0][0], run[-1][1], bids, asks))
        i += len(run)
    return out


def _top(levels: dict[int, int], bids: bool) -> Levels:
    return sorted(levels.items(), key=lambda lv: -lv[0] if bids else lv[0])[:LEVELS]


def _follow(snapshot_at: int, caches: dict[int, Any], diffs: list[Diff]) -> int:
    """Binance's procedure from the snapshot of `snapshot_at`; how many diffs it applied."""
    bids, asks = (dict(side) for side in caches[snapshot_at])
    nonce, applied = snapshot_at, 0
    for first, last, b, a in diffs:
        if last <= nonce:
            continue
        assert first <= nonce + 1 <= last if not applied else first == nonce + 1
        for levels, changes in ((bids, b), (asks, a)):
            for price, quantity in changes.items():
                if quantity:
                    levels[price] = quantity
                else:
                    levels.pop(price, None)
        nonce, applied = last, applied + 1
        want_bids, want_asks = caches[last]
        assert (_top(bids, True), _top(asks, False)) == (want_bids, want_asks), (snapshot_at, last)
    return applied


@pytest.mark.parametrize("seed", range(40))
def test_a_client_on_any_snapshot_holds_the_cache_after_each_diff(seed: int) -> None:
    caches, diffs = _run(seed)
    assert len(diffs) > 10
    for earlier, later in zip(diffs, diffs[1:], strict=False):
        assert later[0] == earlier[1] + 1  # one unbroken chain of update ids
    applied = [_follow(at, caches, diffs) for at in caches]
    assert sum(applied) > len(diffs)
    merged = _merged(diffs, random.Random(seed))
    for at in caches:
        _follow(at, caches, merged)


def test_a_missed_event_restarts_the_chain_so_clients_resync() -> None:
    chain = Chain(10)
    chain.record(11, ((True, 100),))
    assert next_diff(chain, [(100, 5)], [], 11) == (11, {100: 5}, {})
    chain.record(14, ((False, 105),))  # 12 and 13 never read
    made = next_diff(chain, [(100, 5)], [(105, 1)], 14)
    assert made is not None and made[0] == 14  # not 12: U != previous u + 1


def test_no_diff_before_the_events_reach_the_cache_nor_without_a_change() -> None:
    chain = Chain(0)
    assert next_diff(chain, [(100, 5)], [], 3) is None  # events up to 3 not read yet
    for seq in (1, 2, 3):
        chain.record(seq, ((True, 100),) if seq == 1 else ())
    assert next_diff(chain, [(100, 5)], [], 3) == (1, {100: 5}, {})
    chain.record(4, ())  # a rejected order: nothing in the book changed
    assert next_diff(chain, [(100, 5)], [], 4) is None
    chain.record(5, ((False, 101),))
    assert next_diff(chain, [(100, 5)], [(101, 2)], 5) == (4, {}, {101: 2})
