"""A naive, obviously correct order book: the oracle the heap book is checked against.

Every resting order sits in one flat list. Matching re-sorts the candidates on every
step: slow, and too simple to be wrong. It shares only the symbol rules
(`SymbolSpec.check_*`) and the message types with the real book.
"""

from dataclasses import dataclass

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
    Replaced,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
)
from schema.symbols import SymbolSpec
from workers.book import RestingOrder


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


class ReferenceBook:
    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.seq = 0
        self.last_price: int | None = None
        self.book: list[Resting] = []
        self.arrivals = 0
        self.events: list[Event] = []

    # -- helpers ----------------------------------------------------------------------

    def emit(self, make, *fields) -> None:
        self.seq += 1
        self.events.append(make(self.spec.symbol, self.seq, *fields))

    def band(self):
        ref = self.last_price if self.last_price is not None else self.spec.reference_price
        return self.spec.band(ref)

    def find(self, order_id: int) -> Resting | None:
        return next((o for o in self.book if o.order_id == order_id), None)

    def crossing(self, side: Side, limit: int | None) -> list[Resting]:
        """Resting orders an incoming order could meet, in the order it would meet them."""
        if side is Side.BUY:
            makers = [o for o in self.book if o.side is Side.SELL]
            makers = [o for o in makers if limit is None or o.price <= limit]
            return sorted(makers, key=lambda o: (o.price, o.arrival))
        makers = [o for o in self.book if o.side is Side.BUY]
        makers = [o for o in makers if limit is None or o.price >= limit]
        return sorted(makers, key=lambda o: (-o.price, o.arrival))

    def rest(self, order_id, user_id, side, price, remaining, post_only, self_trade) -> None:
        self.arrivals += 1
        self.book.append(
            Resting(order_id, user_id, side, price, remaining, post_only, self_trade, self.arrivals)
        )

    def resting(self, side: Side) -> list[RestingOrder]:
        """Best price first, oldest first: comparable with OrderBook.resting()."""
        mine = [o for o in self.book if o.side is side]
        if side is Side.BUY:
            mine.sort(key=lambda o: (-o.price, o.arrival))
        else:
            mine.sort(key=lambda o: (o.price, o.arrival))
        return [
            RestingOrder(o.order_id, o.user_id, o.price, o.remaining, o.post_only, o.self_trade)
            for o in mine
        ]

    # -- commands ---------------------------------------------------------------------

    def apply(self, cmd: Command) -> list[Event]:
        self.events = []
        if isinstance(cmd, Place):
            self.place(cmd)
        elif isinstance(cmd, Cancel):
            self.cancel(cmd)
        else:
            self.replace(cmd)
        return self.events

    def reject(self, cmd, action: Action, reason: RejectReason) -> None:
        self.emit(Rejected, cmd.order_id, cmd.user_id, action, reason)

    def place_error(self, cmd: Place) -> RejectReason | None:
        if self.find(cmd.order_id):
            return RejectReason.DUPLICATE_ORDER_ID
        if cmd.type is OrderType.LIMIT:
            if cmd.price is None:
                return RejectReason.PRICE_REQUIRED
            error = self.spec.check_price(cmd.price, self.band())
            if error:
                return error
        elif cmd.price is not None:
            return RejectReason.PRICE_NOT_ALLOWED
        error = self.spec.check_quantity(cmd.quantity)
        if error:
            return error
        gtc_limit = cmd.type is OrderType.LIMIT and cmd.time_in_force is TimeInForce.GTC
        if cmd.post_only and not gtc_limit:
            return RejectReason.POST_ONLY_NOT_GTC_LIMIT
        return None

    def place(self, cmd: Place) -> None:
        error = self.place_error(cmd)
        if error:
            return self.reject(cmd, Action.PLACE, error)
        limit = cmd.price
        if cmd.type is OrderType.MARKET:
            band = self.band()
            limits = [] if band is None else [band[1] if cmd.side is Side.BUY else band[0]]
            if cmd.protection_price is not None:
                limits.append(cmd.protection_price)
            pick = min if cmd.side is Side.BUY else max
            limit = pick(limits) if limits else None
        if cmd.post_only and self.crossing(cmd.side, limit):
            return self.reject(cmd, Action.PLACE, RejectReason.POST_ONLY_WOULD_TRADE)
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
        )
        if cmd.time_in_force is TimeInForce.FOK and not self.can_fill(cmd, limit):
            return self.emit(
                Canceled,
                cmd.order_id,
                cmd.user_id,
                cmd.side,
                cmd.price,
                cmd.quantity,
                CancelReason.FOK_UNFILLABLE,
            )
        left, stopped = self.match(
            cmd.order_id, cmd.user_id, cmd.side, limit, cmd.quantity, cmd.self_trade
        )
        if stopped:
            reason = CancelReason.SELF_TRADE
        elif left == 0:
            return self.emit(Done, cmd.order_id, cmd.user_id, cmd.side)
        elif cmd.type is OrderType.MARKET:
            reason = CancelReason.MARKET_REMAINDER
        elif cmd.time_in_force is TimeInForce.GTC:
            return self.rest(
                cmd.order_id, cmd.user_id, cmd.side, cmd.price, left, cmd.post_only, cmd.self_trade
            )
        else:
            reason = CancelReason.IOC_REMAINDER
        self.emit(Canceled, cmd.order_id, cmd.user_id, cmd.side, cmd.price, left, reason)

    def can_fill(self, cmd: Place, limit: int | None) -> bool:
        """Dry run: would the whole order fill now? Own orders either vanish or block."""
        available = 0
        for maker in self.crossing(cmd.side, limit):
            if maker.user_id == cmd.user_id:
                if cmd.self_trade is SelfTrade.CANCEL_RESTING:
                    continue
                break
            available += maker.remaining
        return available >= cmd.quantity

    def match(self, order_id, user_id, side, limit, quantity, self_trade) -> tuple[int, bool]:
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
            self.emit(
                Trade, maker.price, fill, maker.order_id, order_id, maker.user_id, user_id, side
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
        if order is None or order.user_id != cmd.user_id:
            return self.reject(cmd, Action.CANCEL, RejectReason.UNKNOWN_ORDER)
        self.book.remove(order)
        self.emit(
            Canceled,
            order.order_id,
            order.user_id,
            order.side,
            order.price,
            order.remaining,
            CancelReason.USER,
        )

    def replace(self, cmd) -> None:
        order = self.find(cmd.order_id)
        if order is None or order.user_id != cmd.user_id:
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
        left, stopped = self.match(
            order.order_id, order.user_id, order.side, price, quantity, order.self_trade
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
            )
