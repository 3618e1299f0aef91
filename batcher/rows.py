"""A flush's changes as the database port's rows (store/database/port.py). Pure: no I/O.

The one place that says which value goes in which column: a column added to a table gets
its field in the row shape (port.py) and its value here, and both adapters write it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batcher.changes import Changes
from schema.messages import Accepted, Trade
from schema.orders import OrderEvent, OrderStatus, next_status
from schema.symbols import SymbolSpec
from store.database.port import (
    BalanceDelta,
    FlushRows,
    LedgerRow,
    OrderRow,
    OrderUpdate,
    SymbolRow,
    TradeRow,
)

# A place the book rejected never had a row: it goes in as the table says it ends.
REJECTED_PLACE = next_status(OrderStatus.NEW, OrderEvent.REJECT)


def flush_rows(
    changes: Changes,
    rejected: dict[int, dict[str, Any]],
    offsets: dict[str, str],
    progress: dict[str, int],
    now: datetime,
) -> FlushRows:
    """`rejected` holds the order records (from Redis) of places the book rejected: the
    REJECTED event alone does not say what the order was."""
    new_orders = changes.new_orders
    orders = [_new_order(changes, accepted, now) for accepted in new_orders.values()]
    orders += [_rejected_order(order_id, record, now) for order_id, record in rejected.items()]
    return FlushRows(
        at=now,
        orders=orders,
        order_updates=[
            OrderUpdate(order_id, c.filled, c.notional, c.remaining, c.status, c.reason, c.price)
            for order_id, c in changes.orders.items()
            if order_id not in new_orders
        ],
        trades=[_trade(trade, now) for trade in changes.trades],
        ledger=[
            LedgerRow(entry_id, user, asset, amount, _kind(amount), reference, now)
            for entry_id, user, asset, amount, reference in changes.ledger
        ],
        # Not sorted into one lock order: sorting cost 3-7 ms a flush of 2,000 orders, and
        # two batchers (on other shards) that deadlock on the same balances are retried.
        balances=[
            BalanceDelta(user, asset, available, locked)
            for (user, asset), (available, locked) in changes.balances.items()
        ],
        progress=progress,
        offsets=offsets,
    )


def symbol_rows(specs: list[SymbolSpec], now: datetime) -> list[SymbolRow]:
    """What the symbols table keeps of a spec (the fee rates are not columns yet: issue
    #14's fee work adds them with a migration)."""
    return [
        SymbolRow(s.symbol, s.base, s.quote, s.tick, s.lot, s.min_qty, s.max_qty, s.band_bps,
                  s.reference_price, now)
        for s in specs
    ]  # fmt: skip


def _kind(amount: int) -> str:
    return "WITHDRAWAL" if amount < 0 else "DEPOSIT"


def _trade(t: Trade, now: datetime) -> TradeRow:
    return TradeRow(t.symbol, t.seq, t.price, t.quantity, t.maker_order_id, t.taker_order_id,
                    t.maker_user_id, t.taker_user_id, t.taker_side.value, now)  # fmt: skip


def _new_order(changes: Changes, accepted: Accepted, now: datetime) -> OrderRow:
    change = changes.orders[accepted.order_id]
    return OrderRow(
        accepted.order_id,
        accepted.user_id,
        accepted.symbol,
        accepted.side.value,
        accepted.order_type.value,
        change.price if change.price is not None else accepted.price,
        accepted.quantity,
        change.filled,
        change.remaining if change.remaining is not None else accepted.quantity,
        change.notional,
        change.status if change.status is not None else OrderStatus.OPEN,
        change.reason,
        accepted.time_in_force.value,
        accepted.post_only,
        accepted.client_order_id,
        accepted.seq,
        now,
        now,
    )


def _rejected_order(order_id: int, record: dict[str, Any], now: datetime) -> OrderRow:
    price = record.get("price")
    return OrderRow(
        order_id,
        record["user_id"],
        record["symbol"],
        record["side"],
        record["type"],
        int(price) if price else None,
        int(record["quantity"]),
        0,
        0,
        0,
        REJECTED_PLACE,
        record.get("reason"),
        record["time_in_force"],
        record.get("post_only") == "1",
        record.get("client_order_id") or None,
        None,
        now,
        now,
    )
