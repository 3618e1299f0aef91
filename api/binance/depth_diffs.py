"""Binance's depth diffs from Spot's depth cache: a symbol's chain of diff events, what levels
each holds, and why a client that follows Binance's local order book procedure holds exactly
what GET /api/v3/depth serves after every diff. Pure: api/binance/streams.py feeds it the
events the fan-out reads and the cache reads, and sends what it makes.

Depth diffs, and why they follow Binance's procedure exactly
------------------------------------------------------------
The update id is the symbol's gap-free event `seq` (DESIGN.md §3.4). GET /api/v3/depth
answers from the workers' `depth:{symbol}` cache, the top DEPTH_LEVELS (50) levels a side
as of its `seq` (its `lastUpdateId`), and the diffs are made from the same cache, read back
every DEPTH_S, so a client's book and the snapshot come from one source. A diff event
`U..u` is made when the cache has reached a newer seq u and the fan-out has read every
event up to u: U is the previous diff's u + 1, and its levels are, with their absolute
quantity in the cache at u (0: not in those 50 levels):

  1. every price an event in U..u touched (an order accepted, traded against, canceled,
     replaced or triggered there), and
  2. on each side, every cached level at or behind the best price touched on that side,
  3. and every level that entered, changed in or left the 50 since the previous diff.

The cache is a series of snapshots the API samples: another API process, or this one a
moment later, may hand a client a snapshot L between two diffs' points (U - 1 < L < u),
so a diff must be right for any L in its range, not only for the snapshot it follows.
It is: (1) covers every level whose quantity changed after L; a level not touched in
U..u and better than every touched level on its side keeps its quantity and its rank,
so it is in the client's 50 as it is in the cache's, and (2) restates every level whose
rank may have moved across the 50th. A client that follows Binance's procedure (drop u <=
lastUpdateId, the first kept has U <= lastUpdateId + 1 <= u, each next U = previous u + 1,
quantities absolute, 0 removes) therefore holds, after each diff, exactly the cache's 50
levels a side at u, plus at most some deeper levels it saw once, each with its true
quantity: its top 50 equal GET /api/v3/depth at that lastUpdateId. Diffs of the 1000 ms
stream are the 100 ms ones of the second merged (later quantities win), right for any L
in their range too. A diff with no level is not sent; its range joins the next one's.

Where the chain of a symbol starts: from the seq of the last event the fan-out read of it
(every later one is recorded), or, for a symbol the fan-out read nothing of since it
started, from the cache once the symbol has been quiet a while (streams.py QUIET_S: the
cache then holds its last event). A SUBSCRIBE to a diff stream is answered once the cache
has reached that start, so a snapshot fetched after the reply (ccxt fetches it then) is
never older than the first diff. Should events of a symbol ever be missed (a seq gap: a
stream trimmed under a reader that fell behind), the chain restarts at the next event: its
diff's U is then not the previous u + 1, which is how Binance tells a client to fetch a new
snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

from schema.messages import Accepted, Canceled, Event, Replaced, Side, Trade, Triggered

log = logging.getLogger("spot.api.binance.streams")


@dataclass
class Chain:
    """One symbol's chain of diffs (the module's docstring says why it is right)."""

    origin: int | None  # every event after it is recorded; None: not known yet
    last: int = 0  # u of the last diff sent (the origin before the first)
    seen: int | None = None  # the last event seq read
    touched: dict[tuple[bool, int], int] = field(default_factory=dict)  # (bid, price) -> seq
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sent_at: float = -math.inf  # loop time of the last diff
    bids: dict[int, int] = field(default_factory=dict)  # the cache's levels at `last`
    asks: dict[int, int] = field(default_factory=dict)
    # the 1000 ms stream's merge of the diffs of this second
    slow_first: int | None = None
    slow_bids: dict[int, int] = field(default_factory=dict)
    slow_asks: dict[int, int] = field(default_factory=dict)
    slow_last: int = 0

    def __post_init__(self) -> None:
        if self.origin is not None:
            self.last = self.seen = self.origin

    def start(self, origin: int) -> None:
        self.origin = self.last = self.seen = origin
        self.touched.clear()
        self.slow_first = None
        self.slow_bids.clear()
        self.slow_asks.clear()

    def record(self, seq: int, touches: tuple[tuple[bool, int], ...]) -> None:
        if self.origin is None:
            self.start(seq - 1)
        elif seq <= self.origin:
            return  # in every snapshot the chain can start from
        elif self.seen is not None and seq > self.seen + 1:
            log.warning("depth diffs: seq %s after %s, the chain restarts", seq, self.seen)
            self.start(seq - 1)
        for touch in touches:
            self.touched[touch] = seq
        if self.seen is None or seq > self.seen:
            self.seen = seq


def touches(event: Event) -> tuple[tuple[bool, int], ...]:
    """The (bid side?, price) levels an event may have changed."""
    kind = type(event)
    if kind is Trade:
        assert isinstance(event, Trade)
        return ((event.taker_side is Side.SELL, event.price),)  # the maker's side
    if kind is Accepted:
        assert isinstance(event, Accepted)
        if event.price is None or event.stop_price is not None:
            return ()  # a market order rests nowhere, a stop outside the book
        return ((event.side is Side.BUY, event.price),)
    if kind is Canceled or kind is Triggered:
        assert isinstance(event, Canceled | Triggered)
        return () if event.price is None else ((event.side is Side.BUY, event.price),)
    if kind is Replaced:
        assert isinstance(event, Replaced)
        bid = event.side is Side.BUY
        return ((bid, event.old_price), (bid, event.price))
    return ()


def next_diff(
    chain: Chain, bids: list[tuple[int, int]], asks: list[tuple[int, int]], seq: int
) -> tuple[int, dict[int, int], dict[int, int]] | None:
    """The chain's next diff (its U, and the bid and ask levels with their quantities) from
    the depth cache's levels at `seq`, the chain advanced to it; None while the events read
    are behind the cache, or when no level changed (the range then joins the next diff's).
    The module's docstring says which levels, and why that is enough."""
    if chain.origin is None or seq <= chain.last or chain.seen is None or chain.seen < seq:
        return None
    now_bids, now_asks = dict(bids), dict(asks)
    changed_bids, changed_asks = _changes(chain.bids, now_bids), _changes(chain.asks, now_asks)
    best_bid = best_ask = None
    for bid, price in chain.touched:
        if bid:
            changed_bids[price] = now_bids.get(price, 0)
            best_bid = price if best_bid is None else max(best_bid, price)
        else:
            changed_asks[price] = now_asks.get(price, 0)
            best_ask = price if best_ask is None else min(best_ask, price)
    if best_bid is not None:
        changed_bids.update((p, q) for p, q in bids if p <= best_bid)
    if best_ask is not None:
        changed_asks.update((p, q) for p, q in asks if p >= best_ask)
    if not changed_bids and not changed_asks:
        return None
    first = chain.last + 1
    chain.last, chain.bids, chain.asks = seq, now_bids, now_asks
    chain.touched = {level: at for level, at in chain.touched.items() if at > seq}
    return first, changed_bids, changed_asks


def _changes(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """The levels that entered or changed (their quantity) or left (0)."""
    changed = {p: q for p, q in after.items() if before.get(p) != q}
    changed.update((p, 0) for p in before if p not in after)
    return changed
