"""`spot bench engine`: the real `OrderBook.apply()` path, every event created.

Commands are generated before the clock starts; each run applies them to a fresh
book. Figures are medians of several runs (this machine is shared and noisy), in wall
time and in CPU time (which leaves out the waits for a core on a busy machine).

Workloads: Liquibook's (test/perf/pt_order_book.cpp); a realistic mix; that mix with
fees (the symbol's rates and every order carrying its user's tier rates, as the router
fills them in); and that with 5% of its placements stop orders.
"""

import gc
import random
import statistics
import time
from collections.abc import Callable

import msgspec

from schema.messages import (
    Cancel,
    Command,
    OrderType,
    Place,
    Replace,
    Side,
    TimeInForce,
    Trade,
    Triggered,
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


# Fee tiers, (maker, taker) bps, as the router fills them in from each user's tier; the
# last one a market maker's rebate.
FEE_TIERS = ((10, 20), (8, 16), (4, 12), (-2, 8))
FEE_SPEC = SymbolSpec(symbol=SYMBOL, base="B", quote="Q", maker_fee_bps=10, taker_fee_bps=20)


def realistic(
    count: int,
    seed: int = 1,
    mid: int = 10_000,
    users: int = 10_000,
    *,
    fees: bool = False,
    stops: float = 0.0,
) -> list[Command]:
    """70% limits around the mid (about half crossing), 20% cancels, 5% replaces,
    5% market or IOC. Cancels and replaces target orders that really rest: the mix is
    generated against a scratch book.

    With `fees`, the symbol charges fees and every order carries its user's tier rates.
    `stops` is the share of placements that are stops instead (half STOP_LIMIT, half
    STOP_MARKET), 1-8 ticks beyond the last trade, so that the market's swings reach them."""
    rng = random.Random(seed)
    book = OrderBook(FEE_SPEC if fees else SPEC)
    resting: list[tuple[int, str]] = []
    commands: list[Command] = []
    order_id = 0
    for _ in range(count):
        roll = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        number = rng.randrange(users)
        user = f"u{number}"
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
            maker_fee, taker_fee = FEE_TIERS[number % len(FEE_TIERS)] if fees else (None, None)
            if stops and rng.random() < stops:
                cmd = _stop(order_id, user, side, book.last_price or mid, rng)
            else:
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
            if fees:
                cmd = msgspec.structs.replace(cmd, maker_fee_bps=maker_fee, taker_fee_bps=taker_fee)
            resting.append((order_id, user))
        commands.append(cmd)
        book.apply(cmd)
        if len(resting) > 5_000:  # drop ids that have long since filled
            resting = [r for r in resting if book.order(r[0]) or book.stop(r[0])]
    return commands


def _stop(order_id: int, user: str, side: Side, last: int, rng: random.Random) -> Place:
    away = rng.randrange(1, 9) * (1 if side is Side.BUY else -1)
    limit = rng.random() < 0.5
    return Place(
        order_id=order_id,
        user_id=user,
        symbol=SYMBOL,
        side=side,
        type=OrderType.STOP_LIMIT if limit else OrderType.STOP_MARKET,
        stop_price=last + away,
        price=last + 2 * away if limit else None,
        quantity=rng.randrange(1, 20) * 10,
    )


def with_fees(count: int) -> list[Command]:
    return realistic(count, fees=True)


def with_stops(count: int) -> list[Command]:
    """The fee mix with 5% of its placements stops."""
    return realistic(count, fees=True, stops=0.05)


def _timed_run(commands: list[Command], spec: SymbolSpec) -> tuple[float, float]:
    """Wall and CPU seconds to apply every command to a fresh book, each call's events
    built and dropped. CPU time leaves out the time the process waited for a core."""
    apply = OrderBook(spec).apply
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for command in commands:
        apply(command)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    name: str,
    make: Callable[[int], list[Command]],
    count: int,
    runs: int,
    spec: SymbolSpec = SPEC,
) -> None:
    commands = make(count)
    book = OrderBook(spec)
    outputs = [book.apply(c) for c in commands]
    events = sum(map(len, outputs))
    trades = sum(type(e) is Trade for out in outputs for e in out)
    triggered = sum(type(e) is Triggered for out in outputs for e in out)
    del outputs
    timings = [_timed_run(commands, spec) for _ in range(runs)]
    wall = statistics.median(w for w, _ in timings)
    cpu = statistics.median(c for _, c in timings)
    print(
        f"{name:<10} {count / wall:>10,.0f} orders/s  {wall / count * 1e6:5.2f} µs/order"
        f"  (CPU time: {count / cpu:>9,.0f}/s)  {trades / count:4.2f} trades,"
        f" {events / count:4.2f} events, {triggered / count:5.3f} stops triggered per order"
        f"  (median of {runs}, {count:,} orders)"
    )


# name: (commands, the symbol's spec)
WORKLOADS: dict[str, tuple[Callable[[int], list[Command]], SymbolSpec]] = {
    "liquibook": (liquibook, SPEC),
    "realistic": (realistic, SPEC),
    "fees": (with_fees, FEE_SPEC),
    "stops": (with_stops, FEE_SPEC),
}


def engine(count: int, runs: int, workloads: list[str] | None = None) -> None:
    for name in workloads or list(WORKLOADS):
        make, spec = WORKLOADS[name]
        measure(name, make, count, runs, spec)
