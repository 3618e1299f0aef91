"""What a batch of events does to the database's rows. Pure: no I/O.

Rows are aggregated per flush: an order accepted and filled within one flush is
inserted once, already filled; an order that traded five times gets one UPDATE.
Statuses come from the one transition table (schema/orders.py), from what the flush saw
of each order: a flush that saw a fill but not the order's accept starts it from OPEN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schema.messages import (
    Accepted,
    Action,
    Canceled,
    Done,
    Event,
    Rejected,
    Replaced,
    Trade,
    Triggered,
)
from schema.orders import TERMINAL, InvalidTransition, OrderEvent, OrderStatus, advance


class _Moves(dict[OrderStatus | None, OrderStatus]):
    """The one transition table's moves for one event, by the status before (None: the flush
    has not seen the order's), read through `advance`; a move the table lacks raises as
    `advance` does. A subscript here took 65 ns where the call to `advance` and its tuple key
    took 210, once or twice for every event of every flush."""

    def __init__(self, event: OrderEvent) -> None:
        super().__init__()
        self.event = event
        for status in (None, *OrderStatus):
            try:
                self[status] = advance(status, event)
            except InvalidTransition:
                pass

    def __missing__(self, status: OrderStatus | None) -> OrderStatus:
        return advance(status, self.event)  # raises InvalidTransition, naming both


_ACCEPTS = {False: _Moves(OrderEvent.ACCEPT), True: _Moves(OrderEvent.ACCEPT_STOP)}
_TRIGGER = _Moves(OrderEvent.TRIGGER)
_FILL = _Moves(OrderEvent.FILL)
_DONE = _Moves(OrderEvent.DONE)
_CANCEL = _Moves(OrderEvent.CANCEL)


@dataclass(slots=True)
class OrderChange:
    """Changes to one order. `remaining` is absolute once an event fixed it; until
    then fills only count down what the row already holds."""

    filled: int = 0
    notional: int = 0
    remaining: int | None = None
    status: OrderStatus | None = None  # None: nothing in the flush moved it
    reason: str | None = None
    price: int | None = None
    triggered: bool | None = None  # True: a stop's TRIGGERED was in the flush


@dataclass
class Changes:
    new_orders: dict[int, Accepted] = field(default_factory=dict)
    rejected_places: dict[int, Rejected] = field(default_factory=dict)
    orders: dict[int, OrderChange] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    # (user, asset) -> [available, locked]
    balances: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    ledger: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    events: int = 0

    def _order(self, order_id: int) -> OrderChange:
        change = self.orders.get(order_id)
        if change is None:
            change = self.orders[order_id] = OrderChange()
        return change

    def add_events(self, events: list[Event]) -> None:
        """Runs for every event of every flush: a trade's two order lookups are spelt out
        in place (the method call cost more than the lookup)."""
        self.events += len(events)
        orders = self.orders
        for event in events:
            kind = type(event)
            if kind is Trade:
                trade: Trade = event  # type: ignore[assignment]
                self.trades.append(trade)
                quantity = trade.quantity
                notional = trade.price * quantity
                for order_id in (trade.maker_order_id, trade.taker_order_id):
                    change = orders.get(order_id)
                    if change is None:
                        change = orders[order_id] = OrderChange()
                    change.filled += quantity
                    change.notional += notional
                    if change.remaining is not None:
                        change.remaining -= quantity
                    change.status = _FILL[change.status]
            elif kind is Accepted:
                accepted: Accepted = event  # type: ignore[assignment]
                self.new_orders[accepted.order_id] = accepted
                change = self._order(accepted.order_id)
                # a stop's (stop_price set) waits untriggered
                change.status = _ACCEPTS[accepted.stop_price is not None][change.status]
                change.remaining = accepted.quantity
            elif kind is Done:
                change = self._order(event.order_id)  # type: ignore[union-attr]
                change.status, change.remaining = _DONE[change.status], 0
            elif kind is Canceled:
                canceled: Canceled = event  # type: ignore[assignment]
                change = self._order(canceled.order_id)
                change.status = _CANCEL[change.status]
                change.remaining = 0
                change.reason = canceled.reason  # a StrEnum: its value, to every driver
            elif kind is Triggered:
                triggered: Triggered = event  # type: ignore[assignment]
                change = self._order(triggered.order_id)
                change.status = _TRIGGER[change.status]
                change.remaining, change.triggered = triggered.quantity, True
            elif kind is Replaced:
                replaced: Replaced = event  # type: ignore[assignment]
                change = self._order(replaced.order_id)
                change.price, change.remaining = replaced.price, replaced.quantity
            elif kind is Rejected and event.action is Action.PLACE:  # type: ignore[union-attr]
                self.rejected_places[event.order_id] = event  # type: ignore[union-attr, assignment]

    def finished(self) -> list[int]:
        """The orders that ended in this flush (filled, canceled, rejected)."""
        ended = [order_id for order_id, c in self.orders.items() if c.status in TERMINAL]
        return ended + list(self.rejected_places)

    def add_balances(self, deltas: list[tuple[str, str, int, int]]) -> None:
        balances = self.balances
        for user, asset, available, locked in deltas:
            # get, not setdefault: that made a list for every delta, summed or not
            key = (user, asset)
            delta = balances.get(key)
            if delta is None:
                balances[key] = [available, locked]
            else:
                delta[0] += available
                delta[1] += locked

    def add_transfer(self, entry_id: str, user: str, asset: str, amount: int, ref: str) -> None:
        self.ledger.append((entry_id, user, asset, amount, ref))
        self.add_balances([(user, asset, amount, 0)])
