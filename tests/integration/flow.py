"""Random order flow through the real router, and the oracle it is checked against."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from api.order_gateway import OrderGateway, hold_for
from schema.messages import Cancel, Event, OrderType, Place, Replace, Side, TimeInForce
from schema.symbols import SymbolSpec
from workers.engine import MatchingEngine
from workers.settlement import Settlement

SPEC = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD", band_bps=2000, reference_price=10_000)
BUY = Side.BUY
FAR_AWAY_MS = 4_000_000_000_000  # 2096
# Each accepted command with what the router held for it, in the order the router queued them.
Sent = list[tuple[Place | Cancel | Replace, int]]


async def random_flow(
    router: OrderGateway,
    rng: random.Random,
    sent: Sent,
    done: Callable[[int], bool],
    spec: SymbolSpec = SPEC,
) -> None:
    """Random places and cancels by alice and bob in `spec`'s symbol, recorded in `sent`
    with their holds, until done(count)."""
    placed: list[tuple[int, str]] = []
    n = 0
    while not done(n):
        n += 1
        if n % 20 == 0:
            await asyncio.sleep(0.01)  # a steady flow, so kills land mid-stream
        if placed and rng.random() < 0.2:
            order_id, user = placed.pop(rng.randrange(len(placed)))
            command = Cancel(order_id=order_id, user_id=user, symbol=spec.symbol)
            if (await router.cancel(command)).status == "OK":
                sent.append((command, 0))
            continue
        user = rng.choice(("alice", "bob"))
        place = _place(rng, spec, await router.order_ids.take(), user)
        result = await router.place(spec, place, 0)
        assert result.status == "OK", result
        sent.append((place, hold_for(spec, place)[1]))
        placed.append((place.order_id, user))


def _place(rng: random.Random, spec: SymbolSpec, order_id: int, user: str) -> Place:
    """Mostly limits around the price; a stop in six, which the market's own trades trigger
    (a cascade now and then), or which waits, or is refused (STOP_WOULD_TRIGGER); a GTD
    order in ten, due long after any test (expiry needs a worker's clock, which a replay of
    `sent` has not got)."""
    side = rng.choice(list(Side))
    price = rng.randrange(9_900, 10_100, 10)
    band = spec.band(spec.reference_price)
    if rng.random() < 1 / 6:
        # A STOP_MARKET buy is held at the band's edge, as the API holds it: none without one.
        kinds = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET) if band else (OrderType.STOP_LIMIT,)
        kind = rng.choice(kinds)
        return Place(
            order_id=order_id,
            user_id=user,
            symbol=spec.symbol,
            side=side,
            type=kind,
            stop_price=price,
            price=rng.randrange(9_900, 10_100, 10) if kind is OrderType.STOP_LIMIT else None,
            quantity=rng.randrange(1, 20),
            time_in_force=rng.choice((TimeInForce.GTC, TimeInForce.IOC)),
            protection_price=band[1]
            if band and kind is OrderType.STOP_MARKET and side is BUY
            else None,
        )
    gtd = rng.random() < 0.1
    return Place(
        order_id=order_id,
        user_id=user,
        symbol=spec.symbol,
        side=side,
        price=price,
        quantity=rng.randrange(1, 20),
        time_in_force=TimeInForce.GTD
        if gtd
        else rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC)),
        expire_at_ms=FAR_AWAY_MS if gtd else None,
    )


def never_crashed(
    sent: Sent, specs: list[SymbolSpec] | None = None
) -> tuple[MatchingEngine, list[Event], Settlement]:
    """The same commands through an engine that never stopped: its books, events, money."""
    engine = MatchingEngine(specs or [SPEC])
    expected: list[Event] = []
    settlement = Settlement()
    sides: dict[int, Side] = {}  # a replace changes the order its place made, on that side
    for command, hold in sent:
        out = engine.apply(command)
        expected.extend(out)
        book = engine.books[command.symbol]
        resting = book.order(command.order_id)
        if isinstance(command, Place):
            sides[command.order_id] = command.side
        side = sides.get(command.order_id) if not isinstance(command, Cancel) else None
        settlement.add(
            book.spec, command, side, hold, out, resting and (resting.price, resting.remaining)
        )
    return engine, expected, settlement
