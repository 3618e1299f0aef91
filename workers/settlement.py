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

Statuses come from the one transition table (schema/orders.py): each order's final
status in the batch is worked out here, from what the batch saw of it, and the SETTLE
script writes it as given.
"""

from __future__ import annotations

from schema.fees import FEE_ACCOUNT
from schema.messages import (
    Accepted,
    Cancel,
    Canceled,
    Command,
    Done,
    Event,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
)
from schema.orders import TERMINAL, OrderEvent, OrderStatus, advance
from schema.symbols import SymbolSpec

BUY = Side.BUY
ACCEPT, FILL, DONE, CANCEL, REJECT = (
    OrderEvent.ACCEPT, OrderEvent.FILL, OrderEvent.DONE, OrderEvent.CANCEL, OrderEvent.REJECT
)  # fmt: skip


class OrderState:
    """Changes to one order record: absolute status/remaining/price, deltas for fills.
    `status` is None while the batch has seen nothing that moves it."""

    __slots__ = ("status", "reason", "remaining", "price", "filled", "notional", "settled")

    def __init__(self) -> None:
        self.status: OrderStatus | None = None
        self.reason: str | None = None  # why it was canceled or rejected
        self.remaining: int | None = None
        self.price: int | None = None
        self.filled = 0
        self.notional = 0
        self.settled = False  # a replace or cancel of it was applied: no longer pending

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


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
        (price, remaining) if it rests after the command, else None."""
        incoming = command.order_id
        cancel = type(command) is Cancel
        user = command.user_id
        held = self._record_hold(user, spec, side, hold)
        for event in events:
            kind = type(event)
            if kind is Trade:
                trade: Trade = event  # type: ignore[assignment]
                self._trade(spec, trade)
                if trade.taker_order_id == incoming:
                    buy = trade.taker_side is BUY
                    held -= trade.price * trade.quantity if buy else trade.quantity
            elif kind is Accepted:
                state = self._order(incoming)
                state.status = advance(state.status, ACCEPT)
            elif kind is Replaced:
                replaced: Replaced = event  # type: ignore[assignment]
                state = self._order(incoming)
                state.price, state.remaining = replaced.price, replaced.quantity
                state.settled = True
                # The old order's hold joins the replace's: together they pay for the new one.
                held += _resting_hold(replaced.side, replaced.old_price, replaced.old_quantity)
            elif kind is Rejected:
                if type(command) is Replace:
                    self._order(incoming).settled = True
                elif not cancel:
                    state = self._order(incoming)
                    state.status = advance(state.status, REJECT)
                    state.reason = event.reason.value  # type: ignore[union-attr]
                held = self._release(user, spec, side, held)
                resting = None  # what rests under this id (if anything) is not this command's
            else:  # Done or Canceled
                ended: Done | Canceled = event  # type: ignore[assignment]
                self._finish(spec, command, ended)
                if ended.order_id == incoming and not cancel:
                    held = self._release(user, spec, side, held)
        if resting is not None and not cancel:
            self._order(incoming).remaining = resting[1]
            held = self._release(user, spec, side, held - _resting_hold(side, *resting))  # type: ignore[arg-type]
        if held:
            raise SettlementError(f"order {incoming}: {held} of its hold is unaccounted for")

    def _record_hold(self, user: str, spec: SymbolSpec, side: Side | None, hold: int) -> int:
        if hold:
            key = (user, spec.quote if side is BUY else spec.base)
            self.holds[key] = self.holds.get(key, 0) + hold
        return hold

    def with_holds(self) -> dict[tuple[str, str], list[int]]:
        """Balance changes counting the router's holds: what the database must apply."""
        out = {key: list(delta) for key, delta in self.balances.items()}
        for key, hold in self.holds.items():
            delta = out.setdefault(key, [0, 0])
            delta[0] -= hold
            delta[1] += hold
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

    def _finish(self, spec: SymbolSpec, command: Command, event: Done | Canceled) -> None:
        state = self._order(event.order_id)
        state.remaining = 0
        if not isinstance(event, Canceled):
            state.status = advance(state.status, DONE)
            return
        state.status = advance(state.status, CANCEL)
        state.reason = event.reason.value
        state.settled = True
        if event.order_id != command.order_id or type(command) is Cancel:
            # A resting order leaves the book: it held exactly what it needed to rest.
            canceled = event
            hold = _resting_hold(canceled.side, canceled.price or 0, canceled.remaining)
            self._release(canceled.user_id, spec, canceled.side, hold)


def _resting_hold(side: Side, price: int, remaining: int) -> int:
    return price * remaining if side is BUY else remaining
