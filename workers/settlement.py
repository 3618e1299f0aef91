"""What a batch of commands does to balances and to the orders users see. Pure: no I/O.

Money model (DESIGN.md §3): the router moves an order's hold from available to locked
when it queues the order (a buy holds price × quantity of the quote asset, a sell
the quantity of the base asset; a replace holds its new size in full). Here the
events decide where locked money goes:

- a trade moves the buyer's locked quote to the seller's available quote and the
  seller's locked base to the buyer's available base, at the trade's price, less each
  side's fee, which goes to the fee account (schema/fees.py) in the asset that side
  receives; a rebate (a negative maker fee) comes from the fee account;
- an incoming order that ends (filled, canceled, rejected) releases what is left of
  its hold, so a buy that traded below its limit gets the improvement back;
- an incoming order that rests keeps exactly what it needs to rest (price ×
  remaining for a buy, remaining for a sell) and releases the rest;
- a resting order that is canceled releases exactly what it needs to rest.

So a resting buy always holds price × remaining and a resting sell its remaining,
which is what lets a maker's trade be settled from the event alone.

Stops: an accepted stop keeps its whole hold while it waits (schema.orders.hold: as the
order it becomes), and a canceled or expired one releases it all, a STOP_MARKET buy at the
protection price its Canceled names. A TRIGGERED event starts the stop as an incoming
order with that hold, under its own id and user, and everything above applies to it from
there: the order before it stopped being the incoming one, resting or ended. A command's
events are so a run of incoming orders, each to the next TRIGGERED (or the end).

Statuses come from the one transition table (schema/orders.py): each order's final
status in the batch is worked out here, from what the batch saw of it, and the SETTLE
script writes it as given.
"""

from __future__ import annotations

import msgspec

from schema.codes import RejectReason
from schema.fees import FEE_ACCOUNT
from schema.messages import (
    Accepted,
    Cancel,
    CancelAll,
    Canceled,
    Command,
    Done,
    Event,
    Expire,
    Place,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
    Triggered,
)
from schema.orders import TERMINAL, OrderEvent, OrderStatus, advance, hold
from schema.symbols import SymbolSpec

BUY = Side.BUY
ACCEPT, FILL, DONE, CANCEL, REJECT = (
    OrderEvent.ACCEPT, OrderEvent.FILL, OrderEvent.DONE, OrderEvent.CANCEL, OrderEvent.REJECT
)  # fmt: skip
ACCEPT_STOP, TRIGGER = OrderEvent.ACCEPT_STOP, OrderEvent.TRIGGER
# Commands that place or change no order of their own: whatever their events end was
# resting in the book, or an untriggered stop.
ENDS_ONLY = frozenset((Cancel, CancelAll, Expire))


class OrderState:
    """Changes to one order record: absolute status/remaining/price, deltas for fills.
    `status` is None while the batch has seen nothing that moves it."""

    __slots__ = (
        "status", "reason", "remaining", "price", "filled", "notional", "settled", "triggered"
    )  # fmt: skip

    def __init__(self) -> None:
        self.status: OrderStatus | None = None
        self.reason: str | None = None  # why it was canceled or rejected
        self.remaining: int | None = None
        self.price: int | None = None
        self.filled = 0
        self.notional = 0
        self.settled = False  # a replace or cancel of it was applied: no longer pending
        self.triggered = False  # a stop whose TRIGGERED this batch saw

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class _Turn(msgspec.Struct, gc=False):
    """The incoming order while a command's events are settled: the command's own, then each
    stop it set off, in turn. `over`: it ended, or waits (a stop), or the command has none
    (ENDS_ONLY); else it rests when its turn is over, at `price` and the remaining its events
    left it. `held`: what of its hold it still has, in the asset `side` pays with. A Struct:
    one is made per command, and msgspec makes it in a third of a slotted class's time."""

    order_id: int
    user: str
    side: Side | None
    held: int
    price: int | None
    command: type[Command]
    over: bool


class SettlementError(Exception):
    """Events that break the money model: a bug, never a client's doing."""


class Settlement:
    def __init__(self) -> None:
        # (user, asset) -> [available delta, locked delta]
        self.balances: dict[tuple[str, str], list[int]] = {}
        self.orders: dict[int, OrderState] = {}
        # What the router moved from available to locked for these commands. Redis has it
        # already; the database learns of it with the settlement, in the same batch.
        self.holds: dict[tuple[str, str], int] = {}

    def _move(self, user: str, asset: str, available: int, locked: int) -> None:
        delta = self.balances.get((user, asset))
        if delta is None:
            self.balances[(user, asset)] = [available, locked]
        else:
            delta[0] += available
            delta[1] += locked

    def _order(self, order_id: int) -> OrderState:
        state = self.orders.get(order_id)
        if state is None:
            state = self.orders[order_id] = OrderState()
        return state

    def add(
        self,
        spec: SymbolSpec,
        command: Command,
        side: Side | None,
        hold: int,
        events: list[Event],
        resting: tuple[int, int] | None,
    ) -> None:
        """Settle one command. `side` is the side of the order it places or changes (None
        for a cancel); `hold` is what the router locked for it, in the asset that side
        pays with (quote for a buy, base for a sell); `resting` is the incoming order's
        (price, remaining) as the book holds it after the command, if it rests, else None:
        what the events say must agree with it, unless the command set stops off (their
        trades may have hit the order since it came to rest)."""
        held = self._record_hold(command.user_id, spec, side, hold)
        price = command.price if isinstance(command, Place) else None
        what = type(command)
        turn = _Turn(command.order_id, command.user_id, side, held, price, what, what in ENDS_ONLY)
        ran_stops = False
        for event in events:
            kind = type(event)
            if kind is Trade:
                trade: Trade = event  # type: ignore[assignment]
                self._trade(spec, trade)
                if trade.taker_order_id == turn.order_id:
                    buy = trade.taker_side is BUY
                    turn.held -= trade.price * trade.quantity if buy else trade.quantity
            elif kind is Accepted:
                self._accepted(turn, event)  # type: ignore[arg-type]
            elif kind is Triggered:
                self._rest(spec, turn)  # the order before it is done with its turn
                turn = self._triggered(event)  # type: ignore[arg-type]
                ran_stops = True
            elif kind is Replaced:
                self._replaced(turn, event)  # type: ignore[arg-type]
            elif kind is Rejected:
                self._rejected(spec, turn, event.reason)  # type: ignore[union-attr, arg-type]
            else:  # Done or Canceled
                self._ended(spec, turn, event)  # type: ignore[arg-type]
        rests_as = self._rest(spec, turn)
        if rests_as is not None and rests_as != resting and not ran_stops:
            raise SettlementError(
                f"order {turn.order_id} rests as {resting} in the book, as {rests_as} by its events"
            )

    def _accepted(self, turn: _Turn, accepted: Accepted) -> None:
        state = self._order(turn.order_id)
        state.remaining = accepted.quantity
        if accepted.stop_price is None:
            state.status = advance(state.status, ACCEPT)
        else:  # it waits outside the book, keeping its whole hold
            state.status = advance(state.status, ACCEPT_STOP)
            turn.held, turn.over = 0, True

    def _triggered(self, stop: Triggered) -> _Turn:
        """The stop's turn as the incoming order, with what it was held at when placed."""
        state = self._order(stop.order_id)
        state.status = advance(state.status, TRIGGER)
        state.remaining, state.triggered = stop.quantity, True
        held = hold_of_stop(stop)
        return _Turn(stop.order_id, stop.user_id, stop.side, held, stop.price, Place, False)

    def _replaced(self, turn: _Turn, replaced: Replaced) -> None:
        state = self._order(turn.order_id)
        state.price, state.remaining = replaced.price, replaced.quantity
        state.settled = True
        turn.price = replaced.price
        # The old order's hold joins the replace's: together they pay for the new one.
        turn.held += _resting_hold(replaced.side, replaced.old_price, replaced.old_quantity)

    def _rejected(self, spec: SymbolSpec, turn: _Turn, reason: RejectReason) -> None:
        if turn.command is Replace:
            self._order(turn.order_id).settled = True
        elif turn.command is Place:
            state = self._order(turn.order_id)
            state.status = advance(state.status, REJECT)
            state.reason, state.remaining = reason.value, 0  # as its database row says
        turn.held = self._release(turn.user, spec, turn.side, turn.held)
        turn.over = True  # what rests under this id (if anything) is not this command's

    def _ended(self, spec: SymbolSpec, turn: _Turn, event: Done | Canceled) -> None:
        mine = event.order_id == turn.order_id and not turn.over
        self._finish(spec, event, mine)
        if mine:
            turn.held = self._release(turn.user, spec, turn.side, turn.held)
            turn.over = True

    def _rest(self, spec: SymbolSpec, turn: _Turn) -> tuple[int, int] | None:
        """The incoming order's turn is over: unless it ended, it rests, and keeps of its
        hold exactly what it needs to; the rest goes back. Nothing may be left over.
        Returns the (price, remaining) it rests with, by its events."""
        held, rests_as = turn.held, None
        if not turn.over:
            remaining = self._order(turn.order_id).remaining
            if turn.price is None or remaining is None or turn.side is None:
                raise SettlementError(f"order {turn.order_id} rests without a price or a side")
            rests_as = turn.price, remaining
            held -= _resting_hold(turn.side, turn.price, remaining)
            held = self._release(turn.user, spec, turn.side, held)
        if held:
            raise SettlementError(f"order {turn.order_id}: {held} of its hold is unaccounted for")
        return rests_as

    def _record_hold(self, user: str, spec: SymbolSpec, side: Side | None, hold: int) -> int:
        if hold:
            key = (user, spec.quote if side is BUY else spec.base)
            self.holds[key] = self.holds.get(key, 0) + hold
        return hold

    def with_holds(self) -> dict[tuple[str, str], list[int]]:
        """Balance changes counting the router's holds: what the database must apply."""
        out = {key: list(delta) for key, delta in self.balances.items()}
        for key, amount in self.holds.items():
            delta = out.setdefault(key, [0, 0])
            delta[0] -= amount
            delta[1] += amount
        return out

    def _release(self, user: str, spec: SymbolSpec, side: Side | None, amount: int) -> int:
        """Give `amount` of the order's hold back to the user; returns what is left held: 0."""
        if amount < 0:
            raise SettlementError(f"{user} spent {-amount} more than the order held")
        if amount:
            if side is None:
                raise SettlementError(f"{user}: a hold with no side to release it in")
            asset = spec.quote if side is BUY else spec.base
            self._move(user, asset, amount, -amount)
        return 0

    def _trade(self, spec: SymbolSpec, trade: Trade) -> None:
        # The book charges each side on what it receives (the buyer base, the seller quote).
        if trade.taker_side is BUY:
            buyer, seller = trade.taker_user_id, trade.maker_user_id
            buyer_fee, seller_fee = trade.taker_fee, trade.maker_fee
        else:
            buyer, seller = trade.maker_user_id, trade.taker_user_id
            buyer_fee, seller_fee = trade.maker_fee, trade.taker_fee
        notional = trade.price * trade.quantity
        if buyer_fee > trade.quantity or seller_fee > notional:
            raise SettlementError(f"trade {trade.symbol} {trade.seq}: a fee above its receipt")
        self._move(buyer, spec.quote, 0, -notional)
        self._move(buyer, spec.base, trade.quantity - buyer_fee, 0)
        self._move(seller, spec.base, 0, -trade.quantity)
        self._move(seller, spec.quote, notional - seller_fee, 0)
        if buyer_fee:
            self._move(FEE_ACCOUNT, spec.base, buyer_fee, 0)
        if seller_fee:
            self._move(FEE_ACCOUNT, spec.quote, seller_fee, 0)
        for order_id in (trade.maker_order_id, trade.taker_order_id):
            state = self._order(order_id)
            state.filled += trade.quantity
            state.notional += notional
            state.status = advance(state.status, FILL)
            if state.remaining is not None:  # else the record's own remaining goes down
                state.remaining -= trade.quantity

    def _finish(self, spec: SymbolSpec, event: Done | Canceled, incoming: bool) -> None:
        """An order's end. One that was not the incoming order rested (or waited, a stop):
        when canceled, it releases what it held to rest (or to wait)."""
        state = self._order(event.order_id)
        state.remaining = 0
        if not isinstance(event, Canceled):
            state.status = advance(state.status, DONE)
            return
        state.status = advance(state.status, CANCEL)
        state.reason = event.reason.value
        state.settled = True
        if not incoming:
            # A resting order held price × remaining; an untriggered STOP_MARKET, which has
            # no price, its protection price × quantity (a sell: its quantity either way).
            canceled = event
            price = canceled.price if canceled.price is not None else canceled.protection_price
            held = _resting_hold(canceled.side, price or 0, canceled.remaining)
            self._release(canceled.user_id, spec, canceled.side, held)


def hold_of_stop(stop: Triggered) -> int:
    """What a stop was held at when placed, which it starts to run with."""
    return hold(stop.side, stop.order_type, stop.price, stop.protection_price, stop.quantity)


def _resting_hold(side: Side, price: int, remaining: int) -> int:
    return price * remaining if side is BUY else remaining
