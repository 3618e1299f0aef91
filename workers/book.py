"""The matching core: one symbol's price-time order book. Pure: no I/O, no clock.

Layout (the three indexes of a price-time book):
- a heap of prices per side (bids stored negated, so both are min-heaps);
- a level per price: a FIFO deque of resting orders and their total quantity;
- an order-id index for O(1) cancel.

Untriggered stops wait beside the book, never in it (nor in its depth), in the same
three shapes: per side a heap of stop prices (BUY stops as they are: a rising market
reaches the lowest first; SELL stops negated), a bucket of stops per stop price in
placement order, and an id index. Checking them costs one dict truth test per order
while a symbol has none.

GTD orders and stops also sit in one heap of (expire_at_ms, order_id) that an EXPIRE
pops from; an entry whose order ended meanwhile is dropped when it comes up.

Deletion is lazy at both depths. A canceled order is marked dead (remaining 0) and
left in its deque until it reaches the front; an emptied level (or stop bucket) stays
in its dict and heap until it reaches the top. A price is in a heap exactly when it
has a level (bucket) in that heap's dict, so a price is never pushed twice.

`apply(command)` returns the events it caused, each stamped with the symbol's next
sequence number. Event order, which consumers and the reference book rely on:
ACCEPTED (or REJECTED and nothing else) or REPLACED, then per fill a TRADE followed
by the maker's DONE if it filled, self-trade cancels where they happen, then the
incoming order's DONE or CANCELED if it does not rest. Then, if its trades reached
untriggered stops, each triggered stop in turn: a TRIGGERED and that order's own
events, the same way (see `_run_stops` for the queue's order).
"""

from __future__ import annotations

import hashlib
from collections import deque
from functools import lru_cache
from heapq import heapify, heappop, heappush
from typing import Any, ClassVar

import msgspec

from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    CancelAll,
    Canceled,
    Command,
    Done,
    Event,
    Expire,
    OrderType,
    Place,
    Rejected,
    Replace,
    Replaced,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)
from schema.symbols import SymbolSpec, fee_rates_valid

# Enum members as module constants: an enum attribute lookup costs ~50 ns on 3.11,
# and the hot path makes several per order.
BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
STOP_LIMIT, STOP_MARKET = OrderType.STOP_LIMIT, OrderType.STOP_MARKET
GTC, FOK, GTD = TimeInForce.GTC, TimeInForce.FOK, TimeInForce.GTD
CANCEL_RESTING, CANCEL_INCOMING = SelfTrade.CANCEL_RESTING, SelfTrade.CANCEL_INCOMING
# An expiry heap holding this many more entries than there are live orders is rebuilt
# from the live ones (entries of orders that filled linger until they come due).
_EXPIRY_SLACK = 1024


class BookCorrupted(Exception):
    """validate() found an internal invariant broken."""


class _Order(msgspec.Struct, gc=False):
    """A resting order. Mutable: fills and replaces change `remaining` in place;
    0 marks a dead order still sitting in its deque. gc=False: it holds no containers.
    Its fee rates are the ones it was placed with: the maker rate for when it is hit,
    the taker rate for when a replace sends it back in as an incoming order."""

    order_id: int
    user_id: str
    side: Side
    price: int
    remaining: int
    post_only: bool
    self_trade: SelfTrade
    maker_fee_bps: int
    taker_fee_bps: int
    expire_at_ms: int | None


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
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0
    expire_at_ms: int | None = None


class StopOrder(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An untriggered stop: the incoming order it becomes once triggered. The book holds
    these as they are, and snapshots and `stops()` show them; its fee rates are settled
    (the order's own or the symbol's) when it is placed."""

    order_id: int
    user_id: str
    side: Side
    type: OrderType
    stop_price: int
    price: int | None
    quantity: int
    time_in_force: TimeInForce
    self_trade: SelfTrade
    protection_price: int | None
    maker_fee_bps: int
    taker_fee_bps: int
    expire_at_ms: int | None
    post_only: ClassVar[bool] = False  # refused on stops: what it rests with once triggered


# An untriggered stop in its bucket: (placement number, the stop).
_Placed = tuple[int, StopOrder]


class BookSnapshot(msgspec.Struct, array_like=True, frozen=True):
    """Each side best price first, FIFO within a price: restoring it rebuilds priority.
    Stops in placement order, which restoring keeps as their trigger order. `now_ms` is
    the book's clock (the latest EXPIRE). Snapshots from before stops decode with none."""

    symbol: str
    seq: int
    last_price: int | None
    bids: list[RestingOrder]
    asks: list[RestingOrder]
    stops: list[StopOrder] = msgspec.field(default_factory=list)
    now_ms: int = 0


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(BookSnapshot)


def _depth(book: dict[int, _Level], levels: int, sign: int) -> list[tuple[int, int]]:
    """The first `levels` non-empty levels of one side, by key (a bid's key is -price).
    The keys sorted in C, then walked until enough: heapq.nsmallest's Python loop over
    every level cost three times as much for a side of 100-300 levels (cachegrind: 300
    levels 526k -> 160k instructions), and a worker computes depth every 50 ms."""
    out: list[tuple[int, int]] = []
    if levels <= 0:
        return out
    for key in sorted(book):
        total = book[key].total
        if total:
            out.append((key * sign, total))
            if len(out) == levels:
                break
    return out


class OrderBook:
    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self.seq = 0
        self.last_price: int | None = None
        self.now_ms = 0  # the book's clock: the latest EXPIRE's now_ms
        self._bids: list[int] = []  # negated prices
        self._asks: list[int] = []
        self._bid_levels: dict[int, _Level] = {}  # keyed by the negated price, like the heap
        self._ask_levels: dict[int, _Level] = {}
        self._index: dict[int, _Order] = {}
        # Untriggered stops: BUY stop prices as they are, SELL ones negated (module doc).
        # The index is in placement order (a stop enters it once and leaves for good); a
        # bucket holds (placement number, stop) so that stops reached from several
        # buckets sort back into placement order.
        self._stops: dict[int, StopOrder] = {}
        self._buy_stops: list[int] = []
        self._sell_stops: list[int] = []
        self._buy_stop_levels: dict[int, list[_Placed]] = {}
        self._sell_stop_levels: dict[int, list[_Placed]] = {}
        self._placements = 0
        self._expiries: list[tuple[int, int]] = []  # (expire_at_ms, order_id), a min-heap
        # The price band moves with the last trade: cached, and refreshed when it moved.
        self._band = spec.band(spec.reference_price)
        self._band_price: int | None = None
        # The spec's rules and rates, read on every order: attributes of the book's own.
        # A step of 1 holds for every integer: None skips its remainder test.
        self._tick = None if spec.tick == 1 else spec.tick
        self._lot = None if spec.lot == 1 else spec.lot
        self._min_qty, self._max_qty = spec.min_qty, spec.max_qty
        # max_qty is usually 10**15, an int too big for CPython's fast compare, so every
        # test against it is a generic one; the quantities below 2**30 that nearly all
        # orders carry are settled against this small bound first.
        self._small_max_qty = min(spec.max_qty, 2**30 - 1)
        self._banded = spec.band_bps is not None
        self._maker_fee_bps, self._taker_fee_bps = spec.maker_fee_bps, spec.taker_fee_bps

    # -- reading ----------------------------------------------------------------------

    @property
    def reference_price(self) -> int | None:
        return self.last_price if self.last_price is not None else self.spec.reference_price

    def _current_band(self) -> tuple[int, int] | None:
        if self._band_price != self.last_price:
            self._band_price = self.last_price
            self._band = self.spec.band(self.reference_price)
        return self._band

    def _in_band(self, price: int) -> bool:
        band = self._band if self._band_price == self.last_price else self._current_band()
        return band is None or band[0] <= price <= band[1]

    def best_bid(self) -> int | None:
        key = self._top(self._bids, self._bid_levels)
        return None if key is None else -key

    def best_ask(self) -> int | None:
        return self._top(self._asks, self._ask_levels)

    def order(self, order_id: int) -> RestingOrder | None:
        """A resting order; an untriggered stop is not in the book (see `stop`)."""
        o = self._index.get(order_id)
        return None if o is None else _resting(o)

    def stop(self, order_id: int) -> StopOrder | None:
        return self._stops.get(order_id)

    def stops(self) -> list[StopOrder]:
        """The untriggered stops in placement order (their trigger order)."""
        return list(self._stops.values())

    def __len__(self) -> int:
        return len(self._index)

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Up to `levels` (price, total quantity) pairs per side, best first."""
        return _depth(self._bid_levels, levels, -1), _depth(self._ask_levels, levels, 1)

    # -- commands ---------------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        """The common command, a plain LIMIT (GTC or IOC) that passes every rule, is tested
        here in one expression (the rules in any order, since all must hold) and run here
        as `_execute` would run it: a call less on the path of most commands. Any other
        command, or an order that breaks a rule, goes on to the step-by-step path, which
        checks the rules one by one, in the reference book's order, for the reason."""
        if type(command) is not Place:
            return self._apply_other(command)
        cmd = command
        price, quantity = cmd.price, cmd.quantity
        order_id, tif = cmd.order_id, cmd.time_in_force
        if (
            cmd.type is not LIMIT
            or price is None
            or price <= 0
            or (self._tick is not None and price % self._tick)
            or quantity < self._min_qty
            or (quantity > self._small_max_qty and quantity > self._max_qty)
            or (self._lot is not None and quantity % self._lot)
            or tif is FOK
            or tif is GTD
            or cmd.post_only
            or cmd.stop_price is not None
            or cmd.expire_at_ms is not None
            or order_id in self._index
            or (self._stops and order_id in self._stops)
            or (self._banded and not self._in_band(price))
        ):
            return self._place_checked(cmd)
        maker_rate, taker_rate = cmd.maker_fee_bps, cmd.taker_fee_bps
        if maker_rate is None and taker_rate is None:
            maker_rate, taker_rate = self._maker_fee_bps, self._taker_fee_bps
        else:
            rates = _own_rates(maker_rate, taker_rate, self._maker_fee_bps, self._taker_fee_bps)
            if rates is None:
                return self._place_checked(cmd)
            maker_rate, taker_rate = rates
        user_id, side = cmd.user_id, cmd.side
        self.seq = seq = self.seq + 1
        events: list[Event] = [
            Accepted(
                self.symbol,
                seq,
                order_id,
                user_id,
                side,
                LIMIT,
                price,
                quantity,
                tif,
                False,
                cmd.client_order_id,
            )
        ]
        buy = side is BUY
        heap = self._asks if buy else self._bids
        remaining = quantity
        if heap and (heap[0] <= price if buy else -heap[0] >= price):
            remaining, stopped = self._match(
                order_id, user_id, side, price, quantity, cmd.self_trade, taker_rate, events
            )
            if stopped:
                self._cancel_incoming(
                    order_id, user_id, side, price, remaining, CancelReason.SELF_TRADE, events
                )
                remaining = 0
            elif not remaining:
                self.seq += 1
                events.append(Done(self.symbol, self.seq, order_id, user_id, side))
        if remaining and tif is GTC:
            resting = _Order(
                order_id,
                user_id,
                side,
                price,
                remaining,
                False,
                cmd.self_trade,
                maker_rate,
                taker_rate,
                None,
            )
            # _rest, inline: this is the path of most orders that rest.
            key = -price if buy else price
            levels = self._bid_levels if buy else self._ask_levels
            level = levels.get(key)
            if level is None:
                level = levels[key] = _Level()
                heappush(self._bids if buy else self._asks, key)
            level.orders.append(resting)
            level.total += remaining
            self._index[order_id] = resting
        elif remaining:
            self._cancel_incoming(
                order_id, user_id, side, price, remaining, CancelReason.IOC_REMAINDER, events
            )
        # Only a trade triggers a stop, and ACCEPTED alone means there was none.
        if self._stops and len(events) > 1 and (reached := self._reached(events, 0)):
            self._cascade(reached, events)
        return events

    def _apply_other(self, command: Command) -> list[Event]:
        kind = type(command)
        if kind is Place:
            return self._place_checked(command)  # type: ignore[arg-type]
        events: list[Event] = []
        if kind is Cancel:
            self._cancel(command, events)  # type: ignore[arg-type]
        elif kind is Replace:
            self._replace(command, events)  # type: ignore[arg-type]
        elif kind is Expire:
            self._expire(command, events)  # type: ignore[arg-type]
        else:
            self._cancel_all(command, events)  # type: ignore[arg-type]
        return events

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _reject(
        self, command: Command, action: Action, reason: RejectReason, events: list[Event]
    ) -> None:
        self.seq += 1
        events.append(
            Rejected(self.symbol, self.seq, command.order_id, command.user_id, action, reason)
        )

    def _place_checked(self, cmd: Place) -> list[Event]:
        events: list[Event] = []
        reason = self._check_place(cmd)
        if reason is not None:
            self._reject(cmd, Action.PLACE, reason, events)
            return events
        order_type = cmd.type
        if order_type is STOP_LIMIT or order_type is STOP_MARKET:
            self._place_stop(cmd, events)
            return events
        side = cmd.side
        market = order_type is MARKET
        if market:
            limit = _market_limit(side, self._current_band(), cmd.protection_price)
        else:
            limit = cmd.price
        if cmd.post_only and self._crosses(side, limit):
            self._reject(cmd, Action.PLACE, RejectReason.POST_ONLY_WOULD_TRADE, events)
            return events
        self.seq += 1
        events.append(
            Accepted(
                self.symbol,
                self.seq,
                cmd.order_id,
                cmd.user_id,
                side,
                order_type,
                cmd.price,
                cmd.quantity,
                cmd.time_in_force,
                cmd.post_only,
                cmd.client_order_id,
                None,
                cmd.expire_at_ms,
            )
        )
        maker_rate = cmd.maker_fee_bps
        if maker_rate is None:
            maker_rate = self.spec.maker_fee_bps
        taker_rate = cmd.taker_fee_bps
        if taker_rate is None:
            taker_rate = self.spec.taker_fee_bps
        start = len(events)
        self._execute(cmd, market, limit, maker_rate, taker_rate, events)
        if self._stops:
            self._run_stops(events, start)
        return events

    def _execute(
        self,
        order: Place | StopOrder,
        market: bool,
        limit: int | None,
        maker_rate: int,
        taker_rate: int,
        events: list[Event],
    ) -> None:
        """Run an incoming order (placed, or a stop just triggered) after its ACCEPTED or
        TRIGGERED: match it, then rest what is left of a GTC or GTD limit, else end it."""
        order_id, user_id, side = order.order_id, order.user_id, order.side
        quantity, tif = order.quantity, order.time_in_force
        if tif is FOK and self._fillable(order, limit) < quantity:
            self._cancel_incoming(
                order_id, user_id, side, order.price, quantity, CancelReason.FOK_UNFILLABLE, events
            )
            return
        buy = side is BUY
        # The far side's top: when even that does not cross, there is nothing to match (a
        # dead level on top is the best price there was, so a live one crosses no more).
        heap = self._asks if buy else self._bids
        if heap and (limit is None or (heap[0] <= limit if buy else -heap[0] >= limit)):
            remaining, stopped = self._match(
                order_id, user_id, side, limit, quantity, order.self_trade, taker_rate, events
            )
            if stopped:
                self._cancel_incoming(
                    order_id, user_id, side, order.price, remaining, CancelReason.SELF_TRADE, events
                )
                return
            if not remaining:
                self.seq += 1
                events.append(Done(self.symbol, self.seq, order_id, user_id, side))
                return
        else:
            remaining = quantity
        if market:
            self._cancel_incoming(
                order_id, user_id, side, None, remaining, CancelReason.MARKET_REMAINDER, events
            )
        elif tif is GTC or tif is GTD:
            expire_at_ms = order.expire_at_ms
            self._rest(
                _Order(
                    order_id,
                    user_id,
                    side,
                    order.price,  # type: ignore[arg-type]  # only a LIMIT rests: it has a price
                    remaining,
                    order.post_only,
                    order.self_trade,
                    maker_rate,
                    taker_rate,
                    expire_at_ms,
                )
            )
            # A GTD stop has had its expiry entry since it was placed: same id and time.
            if expire_at_ms is not None and type(order) is Place:
                self._push_expiry(expire_at_ms, order_id)
        else:
            self._cancel_incoming(
                order_id, user_id, side, order.price, remaining, CancelReason.IOC_REMAINDER, events
            )

    def _check_place(self, cmd: Place) -> RejectReason | None:
        """The rules, in the order the reference book checks them too."""
        order_id = cmd.order_id
        if order_id in self._index or order_id in self._stops:
            return RejectReason.DUPLICATE_ORDER_ID
        spec = self.spec
        price, order_type = cmd.price, cmd.type
        if order_type is LIMIT:
            if price is None:
                return RejectReason.PRICE_REQUIRED
            band = self._band if self._band_price == self.last_price else self._current_band()
            reason = spec.check_price(price, band)
            if reason is not None:
                return reason
        elif order_type is MARKET:
            if price is not None:
                return RejectReason.PRICE_NOT_ALLOWED
        else:
            reason = self._check_stop(cmd)
            if reason is not None:
                return reason
        if cmd.stop_price is not None and (order_type is LIMIT or order_type is MARKET):
            return RejectReason.STOP_PRICE_NOT_ALLOWED
        reason = spec.check_quantity(cmd.quantity)
        if reason is not None:
            return reason
        # The rest concerns what most orders do not carry: one test for all of it.
        if (
            cmd.post_only
            or cmd.time_in_force is GTD
            or cmd.expire_at_ms is not None
            or cmd.maker_fee_bps is not None
            or cmd.taker_fee_bps is not None
        ):
            return self._check_terms(cmd)
        return None

    def _check_terms(self, cmd: Place) -> RejectReason | None:
        """post_only, then GTD's expiry, then the order's own fee rates."""
        tif = cmd.time_in_force
        if cmd.post_only and (cmd.type is not LIMIT or tif is not GTC):
            return RejectReason.POST_ONLY_NOT_GTC_LIMIT
        if tif is GTD or cmd.expire_at_ms is not None:
            reason = self._check_expiry(cmd)
            if reason is not None:
                return reason
        if cmd.maker_fee_bps is not None or cmd.taker_fee_bps is not None:
            return self._check_fees(cmd)
        return None

    def _check_stop(self, cmd: Place) -> RejectReason | None:
        """A stop's prices: its limit price (STOP_LIMIT) as a LIMIT's, then its stop price."""
        band = self._current_band()
        if cmd.type is STOP_LIMIT:
            if cmd.price is None:
                return RejectReason.PRICE_REQUIRED
            reason = self.spec.check_price(cmd.price, band)
            if reason is not None:
                return reason
        elif cmd.price is not None:
            return RejectReason.PRICE_NOT_ALLOWED
        if cmd.stop_price is None:
            return RejectReason.STOP_PRICE_REQUIRED
        # Decided: the band bounds a stop price as it bounds a limit price, at arrival.
        reason = self.spec.check_stop_price(cmd.stop_price, band)
        if reason is not None:
            return reason
        if cmd.time_in_force is FOK:
            return RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        return None

    def _check_expiry(self, cmd: Place) -> RejectReason | None:
        if cmd.time_in_force is not GTD:
            return RejectReason.EXPIRE_AT_NOT_ALLOWED
        if cmd.type is MARKET:  # it never rests, so there is nothing to expire
            return RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        if cmd.expire_at_ms is None:
            return RejectReason.EXPIRE_AT_REQUIRED
        if cmd.expire_at_ms <= self.now_ms:
            # Already due by the book's clock: it would be canceled by the EXPIRE that
            # already passed, so it never gets the chance to trade (Binance does the same).
            return RejectReason.EXPIRE_AT_PASSED
        return None

    def _check_fees(self, cmd: Place) -> RejectReason | None:
        maker = self.spec.maker_fee_bps if cmd.maker_fee_bps is None else cmd.maker_fee_bps
        taker = self.spec.taker_fee_bps if cmd.taker_fee_bps is None else cmd.taker_fee_bps
        return None if fee_rates_valid(maker, taker) else RejectReason.FEE_RATE_INVALID

    def _cancel_incoming(
        self,
        order_id: int,
        user_id: str,
        side: Side,
        price: int | None,
        remaining: int,
        reason: CancelReason,
        events: list[Event],
    ) -> None:
        events.append(
            Canceled(
                self.symbol, self._next_seq(), order_id, user_id, side, price, remaining, reason
            )
        )

    def _cancel(self, cmd: Cancel, events: list[Event]) -> None:
        order = self._index.get(cmd.order_id)
        if order is not None and order.user_id == cmd.user_id:
            self._cancel_order(order, CancelReason.USER, events)
            return
        stop = self._stops.get(cmd.order_id)
        if stop is not None and stop.user_id == cmd.user_id:
            self._cancel_stop(stop, CancelReason.USER, events)
            return
        self._reject(cmd, Action.CANCEL, RejectReason.UNKNOWN_ORDER, events)

    def _cancel_order(self, order: _Order, reason: CancelReason, events: list[Event]) -> None:
        """A resting order leaves the book (a cancel, a cancel-all, its expiry)."""
        remaining = order.remaining
        self._unrest(order)
        self.seq += 1
        events.append(
            Canceled(
                self.symbol,
                self.seq,
                order.order_id,
                order.user_id,
                order.side,
                order.price,
                remaining,
                reason,
            )
        )

    def _cancel_all(self, cmd: CancelAll, events: list[Event]) -> None:
        user = cmd.user_id
        ids = [oid for oid, o in self._index.items() if o.user_id == user]
        ids += [oid for oid, s in self._stops.items() if s.user_id == user]
        for order_id in sorted(ids):
            order = self._index.get(order_id)
            if order is not None:
                self._cancel_order(order, CancelReason.USER, events)
            else:
                self._cancel_stop(self._stops[order_id], CancelReason.USER, events)

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
        start = len(events)
        self._reenter(order, price, quantity, events)
        if self._stops:
            self._run_stops(events, start)

    def _reenter(self, order: _Order, price: int, quantity: int, events: list[Event]) -> None:
        """A replaced order that lost priority, matched as an incoming order at `price`."""
        order_id, user_id, side = order.order_id, order.user_id, order.side
        remaining, stopped = self._match(
            order_id, user_id, side, price, quantity, order.self_trade, order.taker_fee_bps, events
        )
        if stopped:
            self._cancel_incoming(
                order_id, user_id, side, price, remaining, CancelReason.SELF_TRADE, events
            )
        elif not remaining:
            events.append(Done(self.symbol, self._next_seq(), order_id, user_id, side))
        else:
            # Its expiry entry (if GTD) is still in the heap: same id, same expire_at_ms.
            self._rest(
                _Order(
                    order_id,
                    user_id,
                    side,
                    price,
                    remaining,
                    order.post_only,
                    order.self_trade,
                    order.maker_fee_bps,
                    order.taker_fee_bps,
                    order.expire_at_ms,
                )
            )

    def _check_replace(self, cmd: Replace, order: _Order | None) -> RejectReason | None:
        if order is None or order.user_id != cmd.user_id:
            stop = self._stops.get(cmd.order_id)
            if stop is not None and stop.user_id == cmd.user_id:
                return RejectReason.STOP_NOT_REPLACEABLE
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

    # -- expiry -----------------------------------------------------------------------

    def _expire(self, cmd: Expire, events: list[Event]) -> None:
        now = cmd.now_ms
        if now <= self.now_ms:
            # Everything due by the clock was canceled when it got there, and orders due
            # by it are refused on arrival: the clock never goes back.
            return
        self.now_ms = now
        heap = self._expiries
        due = set()
        while heap and heap[0][0] <= now:
            due.add(heappop(heap)[1])
        for order_id in sorted(due):
            # An entry may outlive its order, and a later order may reuse the id with its
            # own expiry (and entry): only what is live and due by its own expiry goes.
            order = self._index.get(order_id)
            if order is not None:
                if order.expire_at_ms is not None and order.expire_at_ms <= now:
                    self._cancel_order(order, CancelReason.EXPIRED, events)
                continue
            stop = self._stops.get(order_id)
            if stop is not None and stop.expire_at_ms is not None and stop.expire_at_ms <= now:
                self._cancel_stop(stop, CancelReason.EXPIRED, events)

    def _push_expiry(self, expire_at_ms: int, order_id: int) -> None:
        heap = self._expiries
        heappush(heap, (expire_at_ms, order_id))
        if len(heap) > 2 * (len(self._index) + len(self._stops)) + _EXPIRY_SLACK:
            self._expiries = self._live_expiries()

    def _live_expiries(self) -> list[tuple[int, int]]:
        heap = [
            (o.expire_at_ms, o.order_id) for o in self._index.values() if o.expire_at_ms is not None
        ]
        heap += [
            (s.expire_at_ms, s.order_id) for s in self._stops.values() if s.expire_at_ms is not None
        ]
        heapify(heap)
        return heap

    # -- stops ------------------------------------------------------------------------

    def _place_stop(self, cmd: Place, events: list[Event]) -> None:
        side, stop_price = cmd.side, cmd.stop_price
        assert stop_price is not None  # _check_place rejects a stop without one
        reference = self.reference_price
        if reference is not None and (
            reference >= stop_price if side is BUY else reference <= stop_price
        ):
            self._reject(cmd, Action.PLACE, RejectReason.STOP_WOULD_TRIGGER, events)
            return
        events.append(
            Accepted(
                self.symbol,
                self._next_seq(),
                cmd.order_id,
                cmd.user_id,
                side,
                cmd.type,
                cmd.price,
                cmd.quantity,
                cmd.time_in_force,
                False,
                cmd.client_order_id,
                stop_price,
                cmd.expire_at_ms,
            )
        )
        spec = self.spec
        stop = StopOrder(
            cmd.order_id,
            cmd.user_id,
            side,
            cmd.type,
            stop_price,
            cmd.price,
            cmd.quantity,
            cmd.time_in_force,
            cmd.self_trade,
            cmd.protection_price,
            spec.maker_fee_bps if cmd.maker_fee_bps is None else cmd.maker_fee_bps,
            spec.taker_fee_bps if cmd.taker_fee_bps is None else cmd.taker_fee_bps,
            cmd.expire_at_ms,
        )
        self._add_stop(stop, self._placements)
        if stop.expire_at_ms is not None:
            # The one entry for this id: it stays valid once the stop triggers and rests.
            self._push_expiry(stop.expire_at_ms, stop.order_id)

    def _stop_side(self, side: Side) -> tuple[list[int], dict[int, list[_Placed]], int]:
        if side is BUY:
            return self._buy_stops, self._buy_stop_levels, 1
        return self._sell_stops, self._sell_stop_levels, -1

    def _add_stop(self, stop: StopOrder, placed: int) -> None:
        heap, levels, sign = self._stop_side(stop.side)
        key = stop.stop_price * sign
        bucket = levels.get(key)
        if bucket is None:
            bucket = levels[key] = []
            heappush(heap, key)
        bucket.append((placed, stop))
        self._stops[stop.order_id] = stop
        self._placements = max(self._placements, placed + 1)

    def _cancel_stop(self, stop: StopOrder, reason: CancelReason, events: list[Event]) -> None:
        """An untriggered stop leaves (a cancel, a cancel-all, its expiry). It never rested,
        so its whole quantity remains; a STOP_MARKET names the price it was held at."""
        _, levels, sign = self._stop_side(stop.side)
        bucket = levels[stop.stop_price * sign]  # an emptied bucket goes when reached
        del bucket[next(i for i, (_, s) in enumerate(bucket) if s is stop)]
        del self._stops[stop.order_id]
        events.append(
            Canceled(
                self.symbol,
                self._next_seq(),
                stop.order_id,
                stop.user_id,
                stop.side,
                stop.price,
                stop.quantity,
                reason,
                stop.protection_price if stop.type is STOP_MARKET else None,
            )
        )

    def _run_stops(self, events: list[Event], start: int) -> None:
        """Trigger what the trades in events[start:] reached, then what theirs reach.

        The stops one order's trades reached join the back of the queue in placement
        order; the queue runs one stop at a time, each as an incoming order under its own
        id, until it is empty. A stop leaves the untriggered set when it is queued, so
        none triggers twice and the cascade ends.
        """
        reached = self._reached(events, start)
        if reached:
            self._cascade(reached, events)

    def _cascade(self, reached: list[StopOrder], events: list[Event]) -> None:
        queue = deque(reached)
        while queue:
            stop = queue.popleft()
            start = len(events)
            self._fire(stop, events)
            if self._stops:
                queue.extend(self._reached(events, start))

    def _reached(self, events: list[Event], start: int) -> list[StopOrder]:
        """Take out the stops that the trades in events[start:] reached, placement first."""
        low = high = 0  # trade prices are positive: 0 is "no trade"
        for event in events[start:] if start else events:
            if type(event) is Trade:
                price = event.price
                if not high:
                    low = high = price
                elif price > high:
                    high = price
                elif price < low:
                    low = price
        buys, sells = self._buy_stops, self._sell_stops
        if not high or not ((buys and buys[0] <= high) or (sells and -sells[0] >= low)):
            return []  # no trade, or none reached the nearest stop of either side
        reached: list[_Placed] = []
        heap, levels = self._buy_stops, self._buy_stop_levels
        while heap and heap[0] <= high:  # a BUY stop fires on a trade at or above it
            reached += levels.pop(heappop(heap))
        heap, levels = self._sell_stops, self._sell_stop_levels
        while heap and -heap[0] >= low:  # a SELL stop on a trade at or below it
            reached += levels.pop(heappop(heap))
        reached.sort()  # placement numbers are unique: stops themselves are never compared
        stops = self._stops
        for _, stop in reached:
            del stops[stop.order_id]
        return [stop for _, stop in reached]

    def _fire(self, stop: StopOrder, events: list[Event]) -> None:
        last_price = self.last_price
        assert last_price is not None  # only a trade triggers a stop
        events.append(
            Triggered(
                self.symbol,
                self._next_seq(),
                stop.order_id,
                stop.user_id,
                stop.side,
                stop.type,
                stop.stop_price,
                stop.price,
                stop.quantity,
                stop.time_in_force,
                last_price,
                stop.protection_price,
            )
        )
        market = stop.type is STOP_MARKET
        if market:
            # Band-protected like any MARKET: the band around the trade that triggered it.
            limit = _market_limit(stop.side, self._current_band(), stop.protection_price)
        else:
            limit = stop.price
        self._execute(stop, market, limit, stop.maker_fee_bps, stop.taker_fee_bps, events)

    # -- matching ---------------------------------------------------------------------

    def _match(
        self,
        order_id: int,
        user_id: str,
        side: Side,
        limit: int | None,
        quantity: int,
        self_trade: SelfTrade,
        taker_rate: int,
        events: list[Event],
    ) -> tuple[int, bool]:
        """Fill `quantity` against the other side up to `limit` (None: no limit).

        Returns what is left and whether self-trade prevention stopped the order.
        Fees: -(-x // 10_000) is x / 10_000 rounded up, so a fee rounds up and a rebate
        (negative) rounds towards zero, both in the exchange's favour.
        """
        buy = side is BUY
        if buy:
            heap, levels, sign, maker_side = self._asks, self._ask_levels, 1, SELL
        else:
            heap, levels, sign, maker_side = self._bids, self._bid_levels, -1, BUY
        symbol = self.symbol
        index = self._index
        append = events.append
        seq = self.seq  # a local here: written back before anything else stamps an event
        remaining = quantity
        while remaining and heap:
            key = heap[0]
            level = levels[key]
            if not level.total:
                heappop(heap)
                del levels[key]
                continue
            price = key * sign
            if limit is not None and (price > limit if buy else price < limit):
                break
            orders = level.orders
            while remaining and level.total:
                maker = orders[0]
                left = maker.remaining
                if not left:
                    orders.popleft()
                    continue
                maker_user = maker.user_id
                if maker_user == user_id:
                    self.seq = seq
                    if self._prevent_self_trade(maker, level, self_trade, events):
                        return remaining, True
                    seq = self.seq
                    continue
                fill = remaining if remaining < left else left
                maker_rate = maker.maker_fee_bps
                if not (taker_rate or maker_rate):
                    taker_fee = maker_fee = 0
                elif buy:  # the buyer receives base (fill), the seller quote (price × fill)
                    taker_fee = -(-taker_rate * fill // 10_000)
                    maker_fee = -(-maker_rate * price * fill // 10_000)
                else:
                    taker_fee = -(-taker_rate * price * fill // 10_000)
                    maker_fee = -(-maker_rate * fill // 10_000)
                seq += 1
                maker_id = maker.order_id
                append(
                    Trade(
                        symbol,
                        seq,
                        price,
                        fill,
                        maker_id,
                        order_id,
                        maker_user,
                        user_id,
                        side,
                        maker_fee,
                        taker_fee,
                    )
                )
                remaining -= fill
                level.total -= fill
                self.last_price = price
                if fill == left:
                    # Filled: out of its deque and the index, which are all that hold it.
                    orders.popleft()
                    del index[maker_id]
                    seq += 1
                    append(Done(symbol, seq, maker_id, maker_user, maker_side))
                else:
                    maker.remaining = left - fill
        self.seq = seq
        return remaining, False

    def _prevent_self_trade(
        self, maker: _Order, level: _Level, self_trade: SelfTrade, events: list[Event]
    ) -> bool:
        """The incoming order met its own user's `maker`: cancel the maker unless the mode
        keeps it; True when the mode stops the incoming order too."""
        if self_trade is not CANCEL_INCOMING:
            self._cancel_resting(maker, level, events)
        return self_trade is not CANCEL_RESTING

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

    def _fillable(self, cmd: Place | StopOrder, limit: int | None) -> int:
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
        if order.side is BUY:
            return self._bid_levels[-order.price]
        return self._ask_levels[order.price]

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
        return [_resting(o) for key in sorted(levels) for o in levels[key].orders if o.remaining]

    def snapshot(self) -> bytes:
        return _snapshot_encoder.encode(
            BookSnapshot(
                self.symbol,
                self.seq,
                self.last_price,
                self.resting(BUY),
                self.resting(SELL),
                self.stops(),
                self.now_ms,
            )
        )

    def restore(self, data: bytes) -> None:
        snap = _snapshot_decoder.decode(data)
        if snap.symbol != self.symbol:
            raise ValueError(f"snapshot of {snap.symbol} cannot restore the {self.symbol} book")
        self.__init__(self.spec)  # type: ignore[misc]
        self.seq = snap.seq
        self.last_price = snap.last_price
        self.now_ms = snap.now_ms
        for side, resting in ((BUY, snap.bids), (SELL, snap.asks)):
            for r in resting:
                self._rest(
                    _Order(
                        r.order_id,
                        r.user_id,
                        side,
                        r.price,
                        r.remaining,
                        r.post_only,
                        r.self_trade,
                        r.maker_fee_bps,
                        r.taker_fee_bps,
                        r.expire_at_ms,
                    )
                )
        for placed, stop in enumerate(snap.stops):
            self._add_stop(stop, placed)
        self._expiries = self._live_expiries()

    def state_hash(self) -> str:
        """Equal hashes mean equal observable state: orders, priority, stops and their
        trigger order, sequence, last price, clock."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    def validate(self) -> None:
        """Check every internal invariant; raise BookCorrupted naming the first broken one."""
        live = 0
        for side in (BUY, SELL):
            heap, levels, sign = self._side(side)
            _check_heap(heap, set(levels), f"{side}")
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
        self._validate_stops()
        self._validate_expiries()

    def _validate_stops(self) -> None:
        waiting = 0
        queued: list[_Placed] = []
        reference = self.reference_price
        for side in (BUY, SELL):
            heap, levels, sign = self._stop_side(side)
            _check_heap(heap, set(levels), f"{side} stop")
            for key, bucket in levels.items():
                placements = [placed for placed, _ in bucket]
                _check(placements == sorted(set(placements)), f"{side} stops at {key} out of order")
                queued += bucket
                for placed, s in bucket:
                    _check(self._stops.get(s.order_id) is s, f"stop {s.order_id} not indexed")
                    _check(s.side is side and s.stop_price * sign == key, f"stop {s.order_id}")
                    _check(s.order_id not in self._index, f"stop {s.order_id} also rests")
                    _check(placed < self._placements, f"stop {s.order_id} placed ahead")
                    # A stop the last trade reached would have triggered; one the reference
                    # reached on arrival was refused.
                    _check(
                        reference is None or (reference < key if side is BUY else -reference < key),
                        f"stop {s.order_id} at {s.stop_price} is reached by {reference}",
                    )
                waiting += len(bucket)
        _check(waiting == len(self._stops), "stop index holds stops in no bucket")
        queued.sort()  # placement numbers are unique
        _check(
            [s for _, s in queued] == list(self._stops.values()),
            "stop index out of placement order",
        )

    def _validate_expiries(self) -> None:
        entries = set(self._expiries)
        _check_heap(self._expiries, entries, "expiry", unique=False)
        gtd = [
            (o.expire_at_ms, o.order_id) for o in self._index.values() if o.expire_at_ms is not None
        ]
        gtd += [
            (s.expire_at_ms, s.order_id) for s in self._stops.values() if s.expire_at_ms is not None
        ]
        for expire_at_ms, order_id in gtd:
            _check(expire_at_ms > self.now_ms, f"order {order_id} outlived its expiry")
            _check((expire_at_ms, order_id) in entries, f"order {order_id} lost its expiry entry")


def _resting(o: _Order) -> RestingOrder:
    return RestingOrder(
        o.order_id,
        o.user_id,
        o.price,
        o.remaining,
        o.post_only,
        o.self_trade,
        o.maker_fee_bps,
        o.taker_fee_bps,
        o.expire_at_ms,
    )


@lru_cache(maxsize=1024)
def _own_rates(
    maker: int | None, taker: int | None, symbol_maker: int, symbol_taker: int
) -> tuple[int, int] | None:
    """An order's own fee rates (its user's tier), each defaulting to the symbol's; None
    when they break the rule. Cached: the router fills in a handful of tiers' rates."""
    if maker is None:
        maker = symbol_maker
    if taker is None:
        taker = symbol_taker
    return (maker, taker) if fee_rates_valid(maker, taker) else None


def _market_limit(side: Side, band: tuple[int, int] | None, protection: int | None) -> int | None:
    """The worst price a MARKET order may trade at: the band edge, tightened by its
    protection price; None (sweep the book) when it has neither."""
    edge = None if band is None else (band[1] if side is BUY else band[0])
    if protection is None:
        return edge
    if edge is None:
        return protection
    return min(edge, protection) if side is BUY else max(edge, protection)


def _check_heap(heap: list[Any], keys: set[Any], what: str, *, unique: bool = True) -> None:
    """A min-heap holding exactly `keys` (each once, if `unique`)."""
    _check(not unique or len(heap) == len(set(heap)), f"{what} heap holds a key twice")
    _check(set(heap) == keys, f"{what} heap and its dict disagree")
    _check(
        all(
            heap[i] <= heap[c]
            for i in range(len(heap))
            for c in (2 * i + 1, 2 * i + 2)
            if c < len(heap)
        ),
        f"{what} heap order broken",
    )


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BookCorrupted(what)
