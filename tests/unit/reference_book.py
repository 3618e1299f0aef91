"""A naive, obviously correct order book: the oracle the heap book is checked against.

Every resting order sits in one flat list, every untriggered stop in another. Matching
re-sorts the candidates on every step, triggering rescans every stop, expiry scans
every order: slow, and too simple to be wrong. It shares only the symbol rules
(`SymbolSpec.check_*`, `fee_rates_valid`) and the message types with the real book;
fees are computed with exact fractions here, with integer tricks there.
"""

import math
from dataclasses import dataclass
from fractions import Fraction

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
from workers.book import RestingOrder, StopOrder

STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)


@dataclass
class Resting:
    order_id: int
    user_id: str
    side: Side
    price: int
    remaining: int
    post_only: bool
    self_trade: SelfTrade
    arrival: int
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0
    expire_at_ms: int | None = None


@dataclass
class Incoming:
    """An order as it comes in: a Place, or a stop once it triggers."""

    order_id: int
    user_id: str
    side: Side
    type: OrderType
    price: int | None
    quantity: int
    time_in_force: TimeInForce
    post_only: bool
    self_trade: SelfTrade
    protection_price: int | None
    maker_fee_bps: int
    taker_fee_bps: int
    expire_at_ms: int | None
    stop_price: int | None = None
    arrival: int = 0


def fee(rate_bps: int, amount: int) -> int:
    """In the exchange's favour: a fee rounded up, a rebate's size rounded down."""
    exact = Fraction(rate_bps * amount, 10_000)
    return math.ceil(exact) if exact >= 0 else -math.floor(-exact)


class ReferenceBook:
    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.seq = 0
        self.last_price: int | None = None
        self.now_ms = 0
        self.book: list[Resting] = []
        self.untriggered: list[Incoming] = []
        self.arrivals = 0
        self.events: list[Event] = []

    # -- helpers ----------------------------------------------------------------------

    def emit(self, make, *fields) -> None:
        self.seq += 1
        self.events.append(make(self.spec.symbol, self.seq, *fields))

    def reference(self) -> int | None:
        return self.last_price if self.last_price is not None else self.spec.reference_price

    def band(self):
        return self.spec.band(self.reference())

    def find(self, order_id: int) -> Resting | None:
        return next((o for o in self.book if o.order_id == order_id), None)

    def find_stop(self, order_id: int) -> Incoming | None:
        return next((s for s in self.untriggered if s.order_id == order_id), None)

    def crossing(self, side: Side, limit: int | None) -> list[Resting]:
        """Resting orders an incoming order could meet, in the order it would meet them."""
        if side is Side.BUY:
            makers = [o for o in self.book if o.side is Side.SELL]
            makers = [o for o in makers if limit is None or o.price <= limit]
            return sorted(makers, key=lambda o: (o.price, o.arrival))
        makers = [o for o in self.book if o.side is Side.BUY]
        makers = [o for o in makers if limit is None or o.price >= limit]
        return sorted(makers, key=lambda o: (-o.price, o.arrival))

    def rest(self, order_id, user_id, side, price, remaining, post_only, self_trade, *terms):
        self.arrivals += 1
        self.book.append(
            Resting(
                order_id,
                user_id,
                side,
                price,
                remaining,
                post_only,
                self_trade,
                self.arrivals,
                *terms,
            )
        )

    def resting(self, side: Side) -> list[RestingOrder]:
        """Best price first, oldest first: comparable with OrderBook.resting()."""
        mine = [o for o in self.book if o.side is side]
        if side is Side.BUY:
            mine.sort(key=lambda o: (-o.price, o.arrival))
        else:
            mine.sort(key=lambda o: (o.price, o.arrival))
        return [
            RestingOrder(
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
            for o in mine
        ]

    def stops(self) -> list[StopOrder]:
        """Placement order: comparable with OrderBook.stops()."""
        return [
            StopOrder(
                s.order_id,
                s.user_id,
                s.side,
                s.type,
                s.stop_price,
                s.price,
                s.quantity,
                s.time_in_force,
                s.self_trade,
                s.protection_price,
                s.maker_fee_bps,
                s.taker_fee_bps,
                s.expire_at_ms,
            )
            for s in sorted(self.untriggered, key=lambda s: s.arrival)
        ]

    # -- commands ---------------------------------------------------------------------

    def apply(self, cmd: Command) -> list[Event]:
        self.events = []
        if isinstance(cmd, Place):
            self.place(cmd)
        elif isinstance(cmd, Cancel):
            self.cancel(cmd)
        elif isinstance(cmd, Replace):
            self.replace(cmd)
        elif isinstance(cmd, Expire):
            self.expire(cmd)
        else:
            self.cancel_all(cmd)
        return self.events

    def reject(self, cmd, action: Action, reason: RejectReason) -> None:
        self.emit(Rejected, cmd.order_id, cmd.user_id, action, reason)

    def place_error(self, cmd: Place) -> RejectReason | None:
        """Every rule, in order: prices, stop price, quantity, post_only, time in force and
        expiry, fee rates."""
        if self.find(cmd.order_id) or self.find_stop(cmd.order_id):
            return RejectReason.DUPLICATE_ORDER_ID
        stop = cmd.type in STOPS
        if cmd.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            if cmd.price is None:
                return RejectReason.PRICE_REQUIRED
            error = self.spec.check_price(cmd.price, self.band())
            if error:
                return error
        elif cmd.price is not None:
            return RejectReason.PRICE_NOT_ALLOWED
        error = self.stop_error(cmd) if stop else None
        if error:
            return error
        if not stop and cmd.stop_price is not None:
            return RejectReason.STOP_PRICE_NOT_ALLOWED
        error = self.spec.check_quantity(cmd.quantity)
        if error:
            return error
        gtc_limit = cmd.type is OrderType.LIMIT and cmd.time_in_force is TimeInForce.GTC
        if cmd.post_only and not gtc_limit:
            return RejectReason.POST_ONLY_NOT_GTC_LIMIT
        return self.terms_error(cmd)

    def stop_error(self, cmd: Place) -> RejectReason | None:
        if cmd.stop_price is None:
            return RejectReason.STOP_PRICE_REQUIRED
        error = self.spec.check_stop_price(cmd.stop_price, self.band())
        if error:
            return error
        if cmd.time_in_force is TimeInForce.FOK:
            return RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        return None

    def terms_error(self, cmd: Place) -> RejectReason | None:
        gtd = cmd.time_in_force is TimeInForce.GTD
        if not gtd and cmd.expire_at_ms is not None:
            return RejectReason.EXPIRE_AT_NOT_ALLOWED
        if gtd and cmd.type is OrderType.MARKET:
            return RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        if gtd and cmd.expire_at_ms is None:
            return RejectReason.EXPIRE_AT_REQUIRED
        if gtd and cmd.expire_at_ms <= self.now_ms:
            return RejectReason.EXPIRE_AT_PASSED
        maker, taker = self.rates(cmd)
        if not fee_rates_valid(maker, taker):
            return RejectReason.FEE_RATE_INVALID
        return None

    def rates(self, cmd: Place) -> tuple[int, int]:
        maker, taker = cmd.maker_fee_bps, cmd.taker_fee_bps
        return (
            self.spec.maker_fee_bps if maker is None else maker,
            self.spec.taker_fee_bps if taker is None else taker,
        )

    def reached(self, side: Side, stop_price: int, price: int) -> bool:
        """Does a trade at `price` reach a `side` stop at `stop_price`?"""
        return price >= stop_price if side is Side.BUY else price <= stop_price

    def place(self, cmd: Place) -> None:
        error = self.place_error(cmd)
        if error:
            return self.reject(cmd, Action.PLACE, error)
        maker, taker = self.rates(cmd)
        order = Incoming(
            cmd.order_id,
            cmd.user_id,
            cmd.side,
            cmd.type,
            cmd.price,
            cmd.quantity,
            cmd.time_in_force,
            cmd.post_only,
            cmd.self_trade,
            cmd.protection_price,
            maker,
            taker,
            cmd.expire_at_ms,
            cmd.stop_price,
        )
        if cmd.type in STOPS:
            ref = self.reference()
            if ref is not None and self.reached(cmd.side, cmd.stop_price, ref):
                return self.reject(cmd, Action.PLACE, RejectReason.STOP_WOULD_TRIGGER)
            self.emit_accepted(cmd)
            self.arrivals += 1
            order.arrival = self.arrivals
            self.untriggered.append(order)
            return
        limit = self.limit_of(order)
        if cmd.post_only and self.crossing(cmd.side, limit):
            return self.reject(cmd, Action.PLACE, RejectReason.POST_ONLY_WOULD_TRADE)
        self.emit_accepted(cmd)
        start = len(self.events)
        self.run(order)
        self.trigger(start)

    def emit_accepted(self, cmd: Place) -> None:
        self.emit(
            Accepted,
            cmd.order_id,
            cmd.user_id,
            cmd.side,
            cmd.type,
            cmd.price,
            cmd.quantity,
            cmd.time_in_force,
            cmd.post_only,
            cmd.client_order_id,
            cmd.stop_price,
            cmd.expire_at_ms,
        )

    def limit_of(self, order: Incoming) -> int | None:
        if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            return order.price
        band = self.band()
        limits = [] if band is None else [band[1] if order.side is Side.BUY else band[0]]
        if order.protection_price is not None:
            limits.append(order.protection_price)
        pick = min if order.side is Side.BUY else max
        return pick(limits) if limits else None

    def run(self, order: Incoming) -> None:
        """An incoming LIMIT or MARKET order (or a triggered stop, as one) from matching on."""
        limit = self.limit_of(order)
        market = order.type in (OrderType.MARKET, OrderType.STOP_MARKET)
        price = None if market else order.price
        if order.time_in_force is TimeInForce.FOK and not self.can_fill(order, limit):
            return self.emit(
                Canceled,
                order.order_id,
                order.user_id,
                order.side,
                price,
                order.quantity,
                CancelReason.FOK_UNFILLABLE,
            )
        left, stopped = self.match(
            order.order_id,
            order.user_id,
            order.side,
            limit,
            order.quantity,
            order.self_trade,
            order.taker_fee_bps,
        )
        if stopped:
            reason = CancelReason.SELF_TRADE
        elif left == 0:
            return self.emit(Done, order.order_id, order.user_id, order.side)
        elif market:
            reason = CancelReason.MARKET_REMAINDER
        elif order.time_in_force in (TimeInForce.GTC, TimeInForce.GTD):
            return self.rest(
                order.order_id,
                order.user_id,
                order.side,
                order.price,
                left,
                order.post_only,
                order.self_trade,
                order.maker_fee_bps,
                order.taker_fee_bps,
                order.expire_at_ms,
            )
        else:
            reason = CancelReason.IOC_REMAINDER
        self.emit(Canceled, order.order_id, order.user_id, order.side, price, left, reason)

    def trigger(self, start: int) -> None:
        """The stop cascade: what the trades since `start` reached, in placement order, each
        run as an incoming order whose own trades may queue more at the back."""
        queue: list[Incoming] = []
        while True:
            prices = [e.price for e in self.events[start:] if isinstance(e, Trade)]
            reached = [
                s
                for s in self.untriggered
                if any(self.reached(s.side, s.stop_price, p) for p in prices)
            ]
            for s in reached:
                self.untriggered.remove(s)
            queue += sorted(reached, key=lambda s: s.arrival)
            if not queue:
                return
            stop = queue.pop(0)
            self.emit(
                Triggered,
                stop.order_id,
                stop.user_id,
                stop.side,
                stop.type,
                stop.stop_price,
                stop.price,
                stop.quantity,
                stop.time_in_force,
                self.last_price,
                stop.protection_price,
            )
            start = len(self.events)
            self.run(stop)

    def can_fill(self, order: Incoming, limit: int | None) -> bool:
        """Dry run: would the whole order fill now? Own orders either vanish or block."""
        available = 0
        for maker in self.crossing(order.side, limit):
            if maker.user_id == order.user_id:
                if order.self_trade is SelfTrade.CANCEL_RESTING:
                    continue
                break
            available += maker.remaining
        return available >= order.quantity

    def match(self, order_id, user_id, side, limit, quantity, self_trade, taker_rate):
        left = quantity
        while left:
            makers = self.crossing(side, limit)
            if not makers:
                break
            maker = makers[0]
            if maker.user_id == user_id:
                if self_trade is not SelfTrade.CANCEL_INCOMING:
                    self.book.remove(maker)
                    self.emit(
                        Canceled,
                        maker.order_id,
                        maker.user_id,
                        maker.side,
                        maker.price,
                        maker.remaining,
                        CancelReason.SELF_TRADE,
                    )
                if self_trade is not SelfTrade.CANCEL_RESTING:
                    return left, True
                continue
            fill = min(left, maker.remaining)
            # Each side pays on what it receives: the buyer base, the seller quote.
            base, quote = fill, maker.price * fill
            maker_fee = fee(maker.maker_fee_bps, quote if side is Side.BUY else base)
            taker_fee = fee(taker_rate, base if side is Side.BUY else quote)
            self.emit(
                Trade,
                maker.price,
                fill,
                maker.order_id,
                order_id,
                maker.user_id,
                user_id,
                side,
                maker_fee,
                taker_fee,
            )
            self.last_price = maker.price
            left -= fill
            maker.remaining -= fill
            if maker.remaining == 0:
                self.book.remove(maker)
                self.emit(Done, maker.order_id, maker.user_id, maker.side)
        return left, False

    def cancel(self, cmd: Cancel) -> None:
        order = self.find(cmd.order_id)
        if order is not None and order.user_id == cmd.user_id:
            return self.remove(order, CancelReason.USER)
        stop = self.find_stop(cmd.order_id)
        if stop is not None and stop.user_id == cmd.user_id:
            return self.remove(stop, CancelReason.USER)
        self.reject(cmd, Action.CANCEL, RejectReason.UNKNOWN_ORDER)

    def remove(self, order: Resting | Incoming, reason: CancelReason) -> None:
        """A resting order or an untriggered stop leaves: CANCELED with what it had left."""
        if isinstance(order, Resting):
            self.book.remove(order)
            return self.emit(
                Canceled,
                order.order_id,
                order.user_id,
                order.side,
                order.price,
                order.remaining,
                reason,
            )
        self.untriggered.remove(order)
        market = order.type is OrderType.STOP_MARKET
        self.emit(
            Canceled,
            order.order_id,
            order.user_id,
            order.side,
            order.price,
            order.quantity,
            reason,
            order.protection_price if market else None,
        )

    def expire(self, cmd: Expire) -> None:
        self.now_ms = max(self.now_ms, cmd.now_ms)
        due = [
            o
            for o in [*self.book, *self.untriggered]
            if o.expire_at_ms is not None and o.expire_at_ms <= self.now_ms
        ]
        for order in sorted(due, key=lambda o: o.order_id):
            self.remove(order, CancelReason.EXPIRED)

    def cancel_all(self, cmd: CancelAll) -> None:
        mine = [o for o in [*self.book, *self.untriggered] if o.user_id == cmd.user_id]
        for order in sorted(mine, key=lambda o: o.order_id):
            self.remove(order, CancelReason.USER)

    def replace(self, cmd) -> None:
        order = self.find(cmd.order_id)
        if order is None or order.user_id != cmd.user_id:
            stop = self.find_stop(cmd.order_id)
            if stop is not None and stop.user_id == cmd.user_id:
                return self.reject(cmd, Action.REPLACE, RejectReason.STOP_NOT_REPLACEABLE)
            return self.reject(cmd, Action.REPLACE, RejectReason.UNKNOWN_ORDER)
        if cmd.price is None and cmd.quantity is None:
            return self.reject(cmd, Action.REPLACE, RejectReason.REPLACE_WITHOUT_CHANGE)
        if cmd.price is not None:
            error = self.spec.check_price(cmd.price, self.band())
            if error:
                return self.reject(cmd, Action.REPLACE, error)
        if cmd.quantity is not None:
            error = self.spec.check_quantity(cmd.quantity, replace=True)
            if error:
                return self.reject(cmd, Action.REPLACE, error)
        price = order.price if cmd.price is None else cmd.price
        quantity = order.remaining if cmd.quantity is None else cmd.quantity
        keeps = price == order.price and quantity <= order.remaining
        if not keeps and order.post_only and self.crossing(order.side, price):
            return self.reject(cmd, Action.REPLACE, RejectReason.POST_ONLY_WOULD_TRADE)
        self.emit(
            Replaced,
            order.order_id,
            order.user_id,
            order.side,
            price,
            quantity,
            order.price,
            order.remaining,
            keeps,
        )
        if keeps:
            order.remaining = quantity
            return
        self.book.remove(order)
        start = len(self.events)
        left, stopped = self.match(
            order.order_id,
            order.user_id,
            order.side,
            price,
            quantity,
            order.self_trade,
            order.taker_fee_bps,
        )
        if stopped:
            self.emit(
                Canceled,
                order.order_id,
                order.user_id,
                order.side,
                price,
                left,
                CancelReason.SELF_TRADE,
            )
        elif left == 0:
            self.emit(Done, order.order_id, order.user_id, order.side)
        else:
            self.rest(
                order.order_id,
                order.user_id,
                order.side,
                price,
                left,
                order.post_only,
                order.self_trade,
                order.maker_fee_bps,
                order.taker_fee_bps,
                order.expire_at_ms,
            )
        self.trigger(start)
