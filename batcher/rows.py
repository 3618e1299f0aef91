"""A flush's changes as the database port's rows (store/database/port.py). Pure: no I/O.

The one place that says which value goes in which column: a column added to a table gets
its field in the row shape (port.py) and its value here, and both adapters write it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batcher.changes import Changes
from schema.messages import Accepted
from schema.orders import OrderEvent, OrderStatus, next_status
from schema.symbols import SymbolSpec
from store.database.port import FlushRows, SymbolRow, WriteRow

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
    REJECTED event alone does not say what the order was.

    The rows are plain tuples in their shape's field order (OrderRow, TradeRow, ...), not
    instances of it: a named tuple's constructor doubled a row's cost, and the batcher
    makes about two a order (tests/unit/test_rows.py holds the order to the shapes)."""
    new_orders = changes.new_orders
    orders = [_new_order(changes, accepted, now) for accepted in new_orders.values()]
    orders += [_rejected_order(order_id, record, now) for order_id, record in rejected.items()]
    return FlushRows(
        at=now,
        orders=orders,
        order_updates=[
            (order_id, c.filled, c.notional, c.remaining, c.status, c.reason, c.price)
            for order_id, c in changes.orders.items()
            if order_id not in new_orders
        ],
        trades=[
            (
                t.symbol,
                t.seq,
                t.price,
                t.quantity,
                t.maker_order_id,
                t.taker_order_id,
                t.maker_user_id,
                t.taker_user_id,
                t.taker_side.value,
                now,
            )
            for t in changes.trades
        ],  # fmt: skip
        ledger=[
            (entry_id, user, asset, amount, _kind(amount), reference, now)
            for entry_id, user, asset, amount, reference in changes.ledger
        ],
        # Not sorted into one lock order: sorting cost 3-7 ms a flush of 2,000 orders, and
        # two batchers (on other shards) that deadlock on the same balances are retried.
        balances=changes.balances,
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


def _new_order(changes: Changes, accepted: Accepted, now: datetime) -> WriteRow:
    """An OrderRow. Its ACCEPTED event set the change's remaining and status."""
    change = changes.orders[accepted.order_id]
    return (
        accepted.order_id,
        accepted.user_id,
        accepted.symbol,
        accepted.side.value,
        accepted.order_type.value,
        change.price if change.price is not None else accepted.price,
        accepted.quantity,
        change.filled,
        change.remaining,
        change.notional,
        change.status,
        change.reason,
        accepted.time_in_force.value,
        accepted.post_only,
        accepted.client_order_id,
        accepted.seq,
        now,
        now,
    )


def _rejected_order(order_id: int, record: dict[str, Any], now: datetime) -> WriteRow:
    """An OrderRow, from the order's record in Redis."""
    price = record.get("price")
    return (
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
