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
from schema.orders import OrderEvent, OrderStatus, advance

# An Accepted's event for the transition table: a stop's (stop_price set) waits untriggered.
_ACCEPTS = {False: OrderEvent.ACCEPT, True: OrderEvent.ACCEPT_STOP}


@dataclass
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
        self.events += len(events)
        for event in events:
            kind = type(event)
            if kind is Trade:
                trade: Trade = event  # type: ignore[assignment]
                self.trades.append(trade)
                for order_id in (trade.maker_order_id, trade.taker_order_id):
                    change = self._order(order_id)
                    change.filled += trade.quantity
                    change.notional += trade.price * trade.quantity
                    if change.remaining is not None:
                        change.remaining -= trade.quantity
                    change.status = advance(change.status, OrderEvent.FILL)
            elif kind is Accepted:
                accepted: Accepted = event  # type: ignore[assignment]
                self.new_orders[accepted.order_id] = accepted
                change = self._order(accepted.order_id)
                stop = accepted.stop_price is not None
                change.status = advance(change.status, _ACCEPTS[stop])
                change.remaining = accepted.quantity
            elif kind is Triggered:
                triggered: Triggered = event  # type: ignore[assignment]
                change = self._order(triggered.order_id)
                change.status = advance(change.status, OrderEvent.TRIGGER)
                change.remaining, change.triggered = triggered.quantity, True
            elif kind is Done:
                change = self._order(event.order_id)  # type: ignore[union-attr]
                change.status, change.remaining = advance(change.status, OrderEvent.DONE), 0
            elif kind is Canceled:
                canceled: Canceled = event  # type: ignore[assignment]
                change = self._order(canceled.order_id)
                change.status = advance(change.status, OrderEvent.CANCEL)
                change.remaining = 0
                change.reason = canceled.reason.value
            elif kind is Replaced:
                replaced: Replaced = event  # type: ignore[assignment]
                change = self._order(replaced.order_id)
                change.price, change.remaining = replaced.price, replaced.quantity
            elif kind is Rejected and event.action is Action.PLACE:  # type: ignore[union-attr]
                self.rejected_places[event.order_id] = event  # type: ignore[union-attr, assignment]

    def add_balances(self, deltas: list[tuple[str, str, int, int]]) -> None:
        for user, asset, available, locked in deltas:
            delta = self.balances.setdefault((user, asset), [0, 0])
            delta[0] += available
            delta[1] += locked

    def add_transfer(self, entry_id: str, user: str, asset: str, amount: int, ref: str) -> None:
        self.ledger.append((entry_id, user, asset, amount, ref))
        self.add_balances([(user, asset, amount, 0)])
