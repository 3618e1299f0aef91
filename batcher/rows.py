"""A flush's changes as the rows the database port writes (store/database/port.py), their
columns taken from schema/tables.py (the port's ORDER_COLUMNS, TRADE_COLUMNS, ...): one list
for every database adapter, so a column added to a table cannot be missed by one of them.

Pure: no I/O. Records are plain tuples in their table's column order (what COPY and a
multi-row INSERT take; a named tuple's constructor doubled a row's cost, and the batcher
makes about two an order); tests/unit/test_rows.py holds each builder to its column list.
Enum fields go in as the members themselves: they are StrEnums, strings to asyncpg, asyncmy
and msgspec alike, and reading `.value` (a property of Enum's) cost ~0.25 µs each, four
an order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batcher.candles import minute_candles
from batcher.changes import Changes, OrderChange
from schema.messages import Accepted, Trade
from schema.orders import OrderEvent, OrderStatus, next_status
from schema.symbols import SymbolSpec
from store.database.port import (
    CANDLE_COLUMNS,
    ORDER_COLUMNS,
    SYMBOL_COLUMNS,
    TRADE_COLUMNS,
    FlushRows,
    WriteRow,
)

__all__ = ["ORDER_COLUMNS", "SYMBOL_COLUMNS", "TRADE_COLUMNS", "flush_rows", "symbol_rows"]

# A place the book rejected never had a row: it goes in as the table says it ends.
REJECTED_PLACE = next_status(OrderStatus.NEW, OrderEvent.REJECT)


def flush_rows(
    changes: Changes,
    rejected: dict[int, dict[str, Any]],
    offsets: dict[str, str],
    progress: dict[str, int],
    now: datetime,
) -> FlushRows:
    """Everything a flush writes. `rejected` holds the order records (from Redis) of places
    the book rejected: the REJECTED event alone does not say what the order was."""
    new_orders, orders = changes.new_orders, changes.orders
    rows = [order_record(a, orders[a.order_id], now) for a in new_orders.values()]
    rows += [rejected_order_record(order_id, record, now) for order_id, record in rejected.items()]
    candles = minute_candles(changes.trades, int(now.timestamp() * 1000))
    return FlushRows(
        at=now,
        orders=rows,
        # OrderUpdate's fields, in order
        order_updates=[
            (order_id, c.filled, c.notional, c.remaining, c.status, c.reason, c.price, c.triggered)
            for order_id, c in orders.items()
            if order_id not in new_orders
        ],  # fmt: skip
        trades=[trade_record(t, now) for t in changes.trades],
        candles=[tuple(getattr(c, name) for name in CANDLE_COLUMNS) for c in candles],
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


def _kind(amount: int) -> str:
    return "WITHDRAWAL" if amount < 0 else "DEPOSIT"


def trade_record(t: Trade, now: datetime) -> WriteRow:
    """One TRADE event as its `trades` row, in TRADE_COLUMNS order: spelt out rather than
    looked up by name, as it runs once per trade."""
    return (
        t.symbol,
        t.seq,
        t.price,
        t.quantity,
        t.maker_order_id,
        t.taker_order_id,
        t.maker_user_id,
        t.taker_user_id,
        t.taker_side,
        now,
        t.maker_fee,
        t.taker_fee,
    )


def symbol_rows(specs: list[SymbolSpec]) -> list[WriteRow]:
    """The specs as `symbols` rows in SYMBOL_COLUMNS order (each column a spec field)."""
    return [tuple(getattr(spec, name) for name in SYMBOL_COLUMNS) for spec in specs]


def symbol_columns(specs: list[SymbolSpec]) -> list[list[Any]]:
    """The specs as one list of values per column of SYMBOL_COLUMNS."""
    return [[getattr(spec, name) for spec in specs] for name in SYMBOL_COLUMNS]


def order_record(accepted: Accepted, change: OrderChange, now: datetime) -> WriteRow:
    """An order the flush saw accepted, as its `orders` row in ORDER_COLUMNS order, with what
    the same flush did to it since."""
    return (
        accepted.order_id,
        accepted.user_id,
        accepted.symbol,
        accepted.side,
        accepted.order_type,
        change.price if change.price is not None else accepted.price,
        accepted.quantity,
        change.filled,
        change.remaining,
        change.notional,
        change.status,
        change.reason,
        accepted.time_in_force,
        accepted.post_only,
        accepted.client_order_id,
        accepted.seq,
        now,
        now,
        accepted.stop_price,
        accepted.expire_at_ms,
        # a stop's row says whether it fired; any other order's leaves it NULL
        None if accepted.stop_price is None else bool(change.triggered),
    )


def rejected_order_record(order_id: int, record: dict[str, Any], now: datetime) -> WriteRow:
    """A place the book rejected, from its Redis record (the REJECTED event says only why),
    in ORDER_COLUMNS order."""
    return (
        order_id,
        record["user_id"],
        record["symbol"],
        record["side"],
        record["type"],
        _integer(record.get("price")),
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
        _integer(record.get("stop_price")),
        _integer(record.get("expire_at_ms")),
        None if not record.get("stop_price") else False,
    )


def _integer(value: str | None) -> int | None:
    return int(value) if value else None
