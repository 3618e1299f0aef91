"""The matching core: one symbol's price-time order book. Pure: no I/O, no clock.

Layout (the three indexes of a price-time book):
- a heap of prices per side (bids stored negated, so both are min-heaps);
- a level per price: a FIFO deque of resting orders and their total quantity;
- an order-id index for O(1) cancel.

Deletion is lazy at both depths. A canceled order is marked dead (remaining 0) and
left in its deque until it reaches the front; an emptied level stays in its dict and
heap until it reaches the top. A price is in a side's heap exactly when it has a
level in that side's dict, so a price is never pushed twice.

`apply(command)` returns the events it caused, each stamped with the symbol's next
sequence number. Event order, which consumers and the reference book rely on:
ACCEPTED (or REJECTED and nothing else) or REPLACED, then per fill a TRADE followed
by the maker's DONE if it filled, self-trade cancels where they happen, then the
incoming order's DONE or CANCELED if it does not rest.
"""

from __future__ import annotations

import hashlib
from collections import deque
from heapq import heappop, heappush, nsmallest

import msgspec

from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    Canceled,
    Command,
    Done,
    Event,
    OrderType,
    Place,
    Rejected,
    Replace,
    Replaced,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
)
from schema.symbols import SymbolSpec

# Enum members as module constants: an enum attribute lookup costs ~50 ns on 3.11,
# and the hot path makes several per order.
BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
GTC, FOK = TimeInForce.GTC, TimeInForce.FOK
CANCEL_RESTING, CANCEL_INCOMING = SelfTrade.CANCEL_RESTING, SelfTrade.CANCEL_INCOMING


class BookCorrupted(Exception):
    """validate() found an internal invariant broken."""


class _Order(msgspec.Struct, gc=False):
    """A resting order. Mutable: fills and replaces change `remaining` in place;
    0 marks a dead order still sitting in its deque. gc=False: it holds no containers."""

    order_id: int
    user_id: str
    side: Side
    price: int
    remaining: int
    post_only: bool
    self_trade: SelfTrade


class _Level:
    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: deque[_Order] = deque()
        self.total = 0


class RestingOrder(msgspec.Struct, array_like=True, frozen=True, gc=False):
    order_id: int
    user_id: str
    price: int
    remaining: int
    post_only: bool
    self_trade: SelfTrade


class BookSnapshot(msgspec.Struct, array_like=True, frozen=True):
    """Each side best price first, FIFO within a price: restoring it rebuilds priority."""

    symbol: str
    seq: int
    last_price: int | None
    bids: list[RestingOrder]
    asks: list[RestingOrder]


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(BookSnapshot)


class OrderBook:
    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self.seq = 0
        self.last_price: int | None = None
        self._bids: list[int] = []  # negated prices
        self._asks: list[int] = []
        self._bid_levels: dict[int, _Level] = {}  # keyed by the negated price, like the heap
        self._ask_levels: dict[int, _Level] = {}
        self._index: dict[int, _Order] = {}
        # The price band moves with the last trade: cached, and refreshed when it moved.
        self._band = spec.band(spec.reference_price)
        self._band_price: int | None = None

    # -- reading ----------------------------------------------------------------------

    @property
    def reference_price(self) -> int | None:
        return self.last_price if self.last_price is not None else self.spec.reference_price

    def _current_band(self) -> tuple[int, int] | None:
        if self._band_price != self.last_price:
            self._band_price = self.last_price
            self._band = self.spec.band(self.reference_price)
        return self._band

    def best_bid(self) -> int | None:
        key = self._top(self._bids, self._bid_levels)
        return None if key is None else -key

    def best_ask(self) -> int | None:
        return self._top(self._asks, self._ask_levels)

    def order(self, order_id: int) -> RestingOrder | None:
        o = self._index.get(order_id)
        if o is None:
            return None
        return RestingOrder(o.order_id, o.user_id, o.price, o.remaining, o.post_only, o.self_trade)

    def __len__(self) -> int:
        return len(self._index)

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Up to `levels` (price, total quantity) pairs per side, best first."""
        bids = nsmallest(levels, (k for k, lv in self._bid_levels.items() if lv.total))
        asks = nsmallest(levels, (k for k, lv in self._ask_levels.items() if lv.total))
        return (
            [(-k, self._bid_levels[k].total) for k in bids],
            [(k, self._ask_levels[k].total) for k in asks],
        )

    # -- commands ---------------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        events: list[Event] = []
        if type(command) is Place:
            self._place(command, events)
        elif type(command) is Cancel:
            self._cancel(command, events)
        else:
            self._replace(command, events)  # type: ignore[arg-type]
        return events

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _reject(
        self, command: Command, action: Action, reason: RejectReason, events: list[Event]
    ) -> None:
        events.append(
            Rejected(
                self.symbol, self._next_seq(), command.order_id, command.user_id, action, reason
            )
        )

    def _place(self, cmd: Place, events: list[Event]) -> None:
        reason = self._check_place(cmd)
        if reason is not None:
            self._reject(cmd, Action.PLACE, reason, events)
            return
        side = cmd.side
        market = cmd.type is MARKET
        if market:
            limit = _market_limit(side, self._current_band(), cmd.protection_price)
        else:
            limit = cmd.price
        if cmd.post_only and self._crosses(side, limit):
            self._reject(cmd, Action.PLACE, RejectReason.POST_ONLY_WOULD_TRADE, events)
            return
        order_id, user_id, quantity, tif = (
            cmd.order_id,
            cmd.user_id,
            cmd.quantity,
            cmd.time_in_force,
        )
        self.seq += 1
        events.append(
            Accepted(
                self.symbol,
                self.seq,
                order_id,
                user_id,
                side,
                cmd.type,
                cmd.price,
                quantity,
                tif,
                cmd.post_only,
                cmd.client_order_id,
            )
        )
        if tif is FOK and self._fillable(cmd, limit) < quantity:
            self._cancel_incoming(cmd, cmd.price, quantity, CancelReason.FOK_UNFILLABLE, events)
            return
        remaining, stopped = self._match(
            order_id, user_id, side, limit, quantity, cmd.self_trade, events
        )
        if stopped:
            self._cancel_incoming(cmd, cmd.price, remaining, CancelReason.SELF_TRADE, events)
        elif not remaining:
            self.seq += 1
            events.append(Done(self.symbol, self.seq, order_id, user_id, side))
        elif market:
            self._cancel_incoming(cmd, None, remaining, CancelReason.MARKET_REMAINDER, events)
        elif tif is GTC:
            self._rest(
                _Order(
                    order_id,
                    user_id,
                    side,
                    cmd.price,  # type: ignore[arg-type]  # a LIMIT always has a price
                    remaining,
                    cmd.post_only,
                    cmd.self_trade,
                )
            )
        else:
            self._cancel_incoming(cmd, cmd.price, remaining, CancelReason.IOC_REMAINDER, events)

    def _check_place(self, cmd: Place) -> RejectReason | None:
        if cmd.order_id in self._index:
            return RejectReason.DUPLICATE_ORDER_ID
        spec = self.spec
        price = cmd.price
        if cmd.type is LIMIT:
            if price is None:
                return RejectReason.PRICE_REQUIRED
            band = self._band if self._band_price == self.last_price else self._current_band()
            reason = spec.check_price(price, band)
            if reason is not None:
                return reason
        elif price is not None:
            return RejectReason.PRICE_NOT_ALLOWED
        reason = spec.check_quantity(cmd.quantity)
        if reason is not None:
            return reason
        if cmd.post_only and (cmd.type is not LIMIT or cmd.time_in_force is not GTC):
            return RejectReason.POST_ONLY_NOT_GTC_LIMIT
        return None

    def _cancel_incoming(
        self,
        cmd: Place | Replace,
        price: int | None,
        remaining: int,
        reason: CancelReason,
        events: list[Event],
        side: Side | None = None,
    ) -> None:
        events.append(
            Canceled(
                self.symbol,
                self._next_seq(),
                cmd.order_id,
                cmd.user_id,
                side or cmd.side,  # type: ignore[union-attr]
                price,
                remaining,
                reason,
            )
        )

    def _cancel(self, cmd: Cancel, events: list[Event]) -> None:
        order = self._index.get(cmd.order_id)
        if order is None or order.user_id != cmd.user_id:
            self._reject(cmd, Action.CANCEL, RejectReason.UNKNOWN_ORDER, events)
            return
        remaining = order.remaining
        self._unrest(order)
        events.append(
            Canceled(
                self.symbol,
                self._next_seq(),
                order.order_id,
                order.user_id,
                order.side,
                order.price,
                remaining,
                CancelReason.USER,
            )
        )

    def _replace(self, cmd: Replace, events: list[Event]) -> None:
        order = self._index.get(cmd.order_id)
        reason = self._check_replace(cmd, order)
        if reason is not None:
            self._reject(cmd, Action.REPLACE, reason, events)
            return
        assert order is not None  # _check_replace rejects a missing order
        old_price, old_quantity = order.price, order.remaining
        price = old_price if cmd.price is None else cmd.price
        quantity = old_quantity if cmd.quantity is None else cmd.quantity
        keeps_priority = price == old_price and quantity <= old_quantity
        if not keeps_priority and order.post_only and self._crosses(order.side, price):
            self._reject(cmd, Action.REPLACE, RejectReason.POST_ONLY_WOULD_TRADE, events)
            return
        replaced = Replaced(
            self.symbol,
            self._next_seq(),
            order.order_id,
            order.user_id,
            order.side,
            price,
            quantity,
            old_price,
            old_quantity,
            keeps_priority,
        )
        events.append(replaced)
        if keeps_priority:
            self._level_of(order).total -= old_quantity - quantity
            order.remaining = quantity
            return
        # Losing priority: the order leaves the book and comes back as if new.
        self._unrest(order)
        remaining, stopped = self._match(
            order.order_id, order.user_id, order.side, price, quantity, order.self_trade, events
        )
        if stopped:
            self._cancel_incoming(
                cmd, price, remaining, CancelReason.SELF_TRADE, events, side=order.side
            )
        elif not remaining:
            events.append(
                Done(self.symbol, self._next_seq(), order.order_id, order.user_id, order.side)
            )
        else:
            self._rest(
                _Order(
                    order.order_id,
                    order.user_id,
                    order.side,
                    price,
                    remaining,
                    order.post_only,
                    order.self_trade,
                )
            )

    def _check_replace(self, cmd: Replace, order: _Order | None) -> RejectReason | None:
        if order is None or order.user_id != cmd.user_id:
            return RejectReason.UNKNOWN_ORDER
        if cmd.price is None and cmd.quantity is None:
            return RejectReason.REPLACE_WITHOUT_CHANGE
        spec = self.spec
        if cmd.price is not None:
            reason = spec.check_price(cmd.price, self._current_band())
            if reason is not None:
                return reason
        if cmd.quantity is not None:
            return spec.check_quantity(cmd.quantity, replace=True)
        return None

    # -- matching ---------------------------------------------------------------------

    def _match(
        self,
        order_id: int,
        user_id: str,
        side: Side,
        limit: int | None,
        quantity: int,
        self_trade: SelfTrade,
        events: list[Event],
    ) -> tuple[int, bool]:
        """Fill `quantity` against the other side up to `limit` (None: no limit).

        Returns what is left and whether self-trade prevention stopped the order.
        """
        if side is BUY:
            heap, levels, sign = self._asks, self._ask_levels, 1
        else:
            heap, levels, sign = self._bids, self._bid_levels, -1
        symbol = self.symbol
        index = self._index
        append = events.append
        remaining = quantity
        while remaining and heap:
            key = heap[0]
            level = levels[key]
            if not level.total:
                heappop(heap)
                del levels[key]
                continue
            price = key * sign
            if limit is not None and (price > limit if side is BUY else price < limit):
                break
            orders = level.orders
            while remaining and level.total:
                maker = orders[0]
                if not maker.remaining:
                    orders.popleft()
                    continue
                if maker.user_id == user_id:
                    if self_trade is not CANCEL_INCOMING:
                        self._cancel_resting(maker, level, events)
                    if self_trade is not CANCEL_RESTING:
                        return remaining, True
                    continue
                fill = remaining if remaining < maker.remaining else maker.remaining
                self.seq += 1
                append(
                    Trade(
                        symbol,
                        self.seq,
                        price,
                        fill,
                        maker.order_id,
                        order_id,
                        maker.user_id,
                        user_id,
                        side,
                    )
                )
                remaining -= fill
                level.total -= fill
                maker.remaining -= fill
                self.last_price = price
                if not maker.remaining:
                    orders.popleft()
                    del index[maker.order_id]
                    self.seq += 1
                    append(Done(symbol, self.seq, maker.order_id, maker.user_id, maker.side))
        return remaining, False

    def _cancel_resting(self, maker: _Order, level: _Level, events: list[Event]) -> None:
        events.append(
            Canceled(
                self.symbol,
                self._next_seq(),
                maker.order_id,
                maker.user_id,
                maker.side,
                maker.price,
                maker.remaining,
                CancelReason.SELF_TRADE,
            )
        )
        level.total -= maker.remaining
        maker.remaining = 0
        del self._index[maker.order_id]

    def _crosses(self, side: Side, limit: int | None) -> bool:
        """Would an order on `side` with this limit trade on arrival (ignoring its owner)?"""
        if side is BUY:
            best = self.best_ask()
            return best is not None and (limit is None or best <= limit)
        best = self.best_bid()
        return best is not None and (limit is None or best >= limit)

    def _fillable(self, cmd: Place, limit: int | None) -> int:
        """How much of `cmd` would fill right now, counting self-trade prevention."""
        if cmd.side is BUY:
            levels, sign = self._ask_levels, 1
        else:
            levels, sign = self._bid_levels, -1
        skip_own = cmd.self_trade is CANCEL_RESTING
        fillable = 0
        for key in sorted(k for k, lv in levels.items() if lv.total):
            price = key * sign
            if limit is not None and (price > limit if cmd.side is BUY else price < limit):
                break
            for maker in levels[key].orders:
                if not maker.remaining:
                    continue
                if maker.user_id == cmd.user_id:
                    if skip_own:
                        continue
                    return fillable
                fillable += maker.remaining
                if fillable >= cmd.quantity:
                    return fillable
        return fillable

    # -- resting ----------------------------------------------------------------------

    def _side(self, side: Side) -> tuple[list[int], dict[int, _Level], int]:
        if side is BUY:
            return self._bids, self._bid_levels, -1
        return self._asks, self._ask_levels, 1

    def _rest(self, order: _Order) -> None:
        if order.side is BUY:
            heap, levels, key = self._bids, self._bid_levels, -order.price
        else:
            heap, levels, key = self._asks, self._ask_levels, order.price
        level = levels.get(key)
        if level is None:
            level = levels[key] = _Level()
            heappush(heap, key)
        level.orders.append(order)
        level.total += order.remaining
        self._index[order.order_id] = order

    def _level_of(self, order: _Order) -> _Level:
        _, levels, sign = self._side(order.side)
        return levels[order.price * sign]

    def _unrest(self, order: _Order) -> None:
        """Take a resting order out: it stays in its deque, dead, until it reaches the front."""
        self._level_of(order).total -= order.remaining
        order.remaining = 0
        del self._index[order.order_id]

    @staticmethod
    def _top(heap: list[int], levels: dict[int, _Level]) -> int | None:
        while heap:
            key = heap[0]
            if levels[key].total:
                return key
            heappop(heap)
            del levels[key]
        return None

    # -- state ------------------------------------------------------------------------

    def resting(self, side: Side) -> list[RestingOrder]:
        _, levels, _ = self._side(side)
        return [
            RestingOrder(o.order_id, o.user_id, o.price, o.remaining, o.post_only, o.self_trade)
            for key in sorted(levels)
            for o in levels[key].orders
            if o.remaining
        ]

    def snapshot(self) -> bytes:
        return _snapshot_encoder.encode(
            BookSnapshot(
                self.symbol, self.seq, self.last_price, self.resting(BUY), self.resting(SELL)
            )
        )

    def restore(self, data: bytes) -> None:
        snap = _snapshot_decoder.decode(data)
        if snap.symbol != self.symbol:
            raise ValueError(f"snapshot of {snap.symbol} cannot restore the {self.symbol} book")
        self.__init__(self.spec)  # type: ignore[misc]
        self.seq = snap.seq
        self.last_price = snap.last_price
        for side, resting in ((BUY, snap.bids), (SELL, snap.asks)):
            for r in resting:
                self._rest(
                    _Order(
                        r.order_id, r.user_id, side, r.price, r.remaining, r.post_only, r.self_trade
                    )
                )

    def state_hash(self) -> str:
        """Equal hashes mean equal observable state: orders, priority, sequence, last price."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    def validate(self) -> None:
        """Check every internal invariant; raise BookCorrupted naming the first broken one."""
        live = 0
        for side in (BUY, SELL):
            heap, levels, sign = self._side(side)
            _check(len(heap) == len(set(heap)), f"{side} heap holds a price twice")
            _check(set(heap) == set(levels), f"{side} heap and levels disagree")
            _check(
                all(
                    heap[i] <= heap[c]
                    for i in range(len(heap))
                    for c in (2 * i + 1, 2 * i + 2)
                    if c < len(heap)
                ),
                f"{side} heap order broken",
            )
            for key, level in levels.items():
                orders = [o for o in level.orders if o.remaining]
                _check(level.total == sum(o.remaining for o in orders), f"{side} level total")
                for o in orders:
                    _check(o.remaining > 0, f"order {o.order_id} has negative remaining")
                    _check(self._index.get(o.order_id) is o, f"order {o.order_id} not indexed")
                    _check(o.side is side and o.price * sign == key, f"order {o.order_id} misfiled")
                live += len(orders)
        _check(live == len(self._index), "index holds orders that rest on no level")
        bid, ask = self.best_bid(), self.best_ask()
        _check(bid is None or ask is None or bid < ask, f"book crossed at rest: {bid} >= {ask}")


def _market_limit(side: Side, band: tuple[int, int] | None, protection: int | None) -> int | None:
    """The worst price a MARKET order may trade at: the band edge, tightened by its
    protection price; None (sweep the book) when it has neither."""
    edge = None if band is None else (band[1] if side is BUY else band[0])
    if protection is None:
        return edge
    if edge is None:
        return protection
    return min(edge, protection) if side is BUY else max(edge, protection)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BookCorrupted(what)
