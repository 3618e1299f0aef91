"""`spot bench engine`: the real `OrderBook.apply()` path, every event created.

Commands are generated before the clock starts; each run applies them to a fresh
book. Figures are medians of several runs (this machine is shared and noisy).
"""

import gc
import random
import statistics
import time
from collections.abc import Callable

from schema.messages import (
    Cancel,
    Command,
    OrderType,
    Place,
    Replace,
    Side,
    TimeInForce,
    Trade,
)
from schema.symbols import SymbolSpec
from workers.book import OrderBook

SYMBOL = "BENCH"
SPEC = SymbolSpec(symbol=SYMBOL, base="B", quote="Q")


def liquibook(count: int, seed: int = 1) -> list[Command]:
    """Liquibook's test/perf/pt_order_book.cpp: alternating sides, GTC limits, one book."""
    rand = random.Random(seed).randrange
    commands: list[Command] = []
    for order_id in range(1, count + 1):
        buy = order_id % 2 == 0
        commands.append(
            Place(
                order_id=order_id,
                user_id=f"u{order_id % 1000}",
                symbol=SYMBOL,
                side=Side.BUY if buy else Side.SELL,
                price=rand(10) + (1880 if buy else 1884),
                quantity=(rand(10) + 1) * 100,
            )
        )
    return commands


def realistic(count: int, seed: int = 1, mid: int = 10_000, users: int = 10_000) -> list[Command]:
    """70% limits around the mid (about half crossing), 20% cancels, 5% replaces,
    5% market or IOC. Cancels and replaces target orders that really rest: the mix is
    generated against a scratch book."""
    rng = random.Random(seed)
    book = OrderBook(SPEC)
    resting: list[tuple[int, str]] = []
    commands: list[Command] = []
    order_id = 0
    for _ in range(count):
        roll = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        user = f"u{rng.randrange(users)}"
        cmd: Command
        if roll < 0.20 and resting:
            oid, owner = resting.pop(rng.randrange(len(resting)))
            cmd = Cancel(order_id=oid, user_id=owner, symbol=SYMBOL)
        elif roll < 0.25 and resting:
            oid, owner = resting[rng.randrange(len(resting))]
            current = book.order(oid)
            price = None if current is None else current.price + rng.choice((-2, -1, 1, 2))
            cmd = Replace(
                order_id=oid,
                user_id=owner,
                symbol=SYMBOL,
                price=price,
                quantity=rng.randrange(1, 20) * 10,
            )
        else:
            order_id += 1
            # Buys centred one tick above the mid and sells one below: about half cross.
            offset = rng.randrange(-10, 12)
            price = mid + offset if side is Side.BUY else mid - offset
            quick = roll >= 0.95
            cmd = Place(
                order_id=order_id,
                user_id=user,
                symbol=SYMBOL,
                side=side,
                type=OrderType.MARKET if quick and roll >= 0.975 else OrderType.LIMIT,
                price=None if quick and roll >= 0.975 else price,
                quantity=rng.randrange(1, 20) * 10,
                time_in_force=TimeInForce.IOC if quick else TimeInForce.GTC,
            )
            resting.append((order_id, user))
        commands.append(cmd)
        book.apply(cmd)
        if len(resting) > 5_000:  # drop ids that have long since filled
            resting = [r for r in resting if book.order(r[0]) is not None]
    return commands


def _timed_run(commands: list[Command]) -> float:
    """Seconds to apply every command to a fresh book, each call's events built and dropped."""
    apply = OrderBook(SPEC).apply
    gc.collect()
    start = time.perf_counter()
    for command in commands:
        apply(command)
    return time.perf_counter() - start


def measure(name: str, make: Callable[[int], list[Command]], count: int, runs: int) -> None:
    commands = make(count)
    book = OrderBook(SPEC)
    outputs = [book.apply(c) for c in commands]
    events = sum(map(len, outputs))
    trades = sum(type(e) is Trade for out in outputs for e in out)
    del outputs
    elapsed = statistics.median(_timed_run(commands) for _ in range(runs))
    print(
        f"{name:<12} {count / elapsed:>12,.0f} orders/s  {elapsed / count * 1e6:6.2f} µs/order"
        f"  {trades / count:5.2f} trades/order  {events / count:5.2f} events/order"
        f"  (median of {runs}, {count:,} orders)"
    )


def engine(count: int, runs: int) -> None:
    measure("liquibook", liquibook, count, runs)
    measure("realistic", realistic, count, runs)
