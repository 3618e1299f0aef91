"""The rows the batcher writes, with their columns taken from schema/tables.py: one list
for every database adapter, so a column added to a table cannot be missed by one of them.

Pure: no I/O. Records are tuples in their table's column order (what COPY and a
multi-row INSERT take); tests/unit/test_rows.py holds each builder to its column list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batcher.changes import OrderChange
from schema import tables
from schema.messages import Accepted, Trade
from schema.orders import OrderEvent, OrderStatus, next_status
from schema.symbols import SymbolSpec

ORDER_COLUMNS: tuple[str, ...] = tuple(c.name for c in tables.orders.columns)
# A place the book rejected never had a row: it goes in as the table says it ends.
REJECTED_PLACE = next_status(OrderStatus.NEW, OrderEvent.REJECT)
TRADE_COLUMNS: tuple[str, ...] = tuple(c.name for c in tables.trades.columns)
# What the symbols table keeps of a spec: every column but created_at, each a spec field.
SYMBOL_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in tables.symbols.columns if c.name != "created_at"
)


def trade_record(t: Trade, now: datetime) -> tuple[Any, ...]:
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
        t.taker_side.value,
        now,
        t.maker_fee,
        t.taker_fee,
    )


def symbol_columns(specs: list[SymbolSpec]) -> list[list[Any]]:
    """The specs as one list of values per column of SYMBOL_COLUMNS."""
    return [[getattr(spec, name) for spec in specs] for name in SYMBOL_COLUMNS]


def order_record(accepted: Accepted, change: OrderChange, now: datetime) -> tuple[Any, ...]:
    """An order the flush saw accepted, as its `orders` row in ORDER_COLUMNS order, with what
    the same flush did to it since."""
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
        accepted.stop_price,
        accepted.expire_at_ms,
        # a stop's row says whether it fired; any other order's leaves it NULL
        None if accepted.stop_price is None else bool(change.triggered),
    )


def rejected_order_record(order_id: int, record: dict[str, Any], now: datetime) -> tuple[Any, ...]:
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
