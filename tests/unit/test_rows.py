"""The row shapes of the database port (store/database/port.py) against the tables of
schema/tables.py: a shape's fields are its table's columns, so that whatever a parallel
change adds to a table and its shape reaches both adapters; and what the batcher builds
from a flush's changes (batcher/rows.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batcher.changes import Changes
from batcher.rows import flush_rows
from schema import tables
from schema.messages import Accepted, OrderType, Side, TimeInForce, Trade
from store.database.port import (
    BalanceDelta,
    LedgerRow,
    OrderRow,
    OrderUpdate,
    QuarantineRow,
    SymbolRow,
    TradeRow,
    column_types,
)
from store.database.postgres import ARRAYS

# shape -> its table, and whether it is a whole row (inserted) or some columns (updated)
SHAPES = [
    (OrderRow, tables.orders, True),
    (TradeRow, tables.trades, True),
    (LedgerRow, tables.ledger, True),
    (SymbolRow, tables.symbols, True),
    (QuarantineRow, tables.quarantine, True),
    (BalanceDelta, tables.balances, False),
    (OrderUpdate, tables.orders, False),
]
NOW = datetime(2026, 12, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("shape", "table", "whole"), SHAPES, ids=lambda v: getattr(v, "__name__", "")
)
def test_a_shape_is_columns_of_its_table(shape, table, whole) -> None:
    columns = [c.name for c in table.columns]
    assert set(shape._fields) <= set(columns), set(shape._fields) - set(columns)
    if whole:
        # Every column the database cannot fill by itself is in the inserted shape.
        required = {c.name for c in table.columns if not c.nullable and c.server_default is None}
        assert required <= set(shape._fields), required - set(shape._fields)
    for name, kind in column_types(shape).items():
        python = table.columns[name].type.python_type
        assert kind is python or (kind is int and python is bool), (name, kind, python)


def test_the_shapes_written_by_unnest_have_postgresql_array_types() -> None:
    for shape in (OrderUpdate, BalanceDelta, SymbolRow):
        kinds = {k for n, k in column_types(shape).items() if n != "created_at"}
        assert kinds <= set(ARRAYS)


def _accepted(order_id: int, user: str) -> Accepted:
    return Accepted("AAPL", order_id, order_id, user, Side.BUY, OrderType.LIMIT, 100, 5,
                    TimeInForce.GTC, False, None)  # fmt: skip


def test_flush_rows_insert_new_orders_filled_and_update_older_ones() -> None:
    changes = Changes()
    changes.add_events([_accepted(2, "bob")])
    changes.add_events([Trade("AAPL", 3, 100, 2, 1, 2, "alice", "bob", Side.BUY)])
    changes.add_balances([("bob", "USD", -200, 0), ("alice", "AAPL", -2, 0), ("bob", "AAPL", 2, 0)])
    changes.add_transfer("1-0", "carol", "USD", -7, "out")
    rows = flush_rows(changes, {}, {"events:0": "5-0"}, {"AAPL": 3}, NOW)

    # Plain tuples in their shape's field order: read through the shape.
    [order] = [OrderRow._make(row) for row in rows.orders]
    assert (order.order_id, order.filled, order.remaining, order.notional, order.status) == (
        2,
        2,
        3,
        200,
        "PARTIALLY_FILLED",
    )
    assert order.created_at == order.updated_at == NOW
    assert all(len(row) == len(OrderRow._fields) for row in rows.orders)
    assert rows.order_updates == [OrderUpdate(1, 2, 200, None, "PARTIALLY_FILLED", None, None)]
    assert rows.trades == [TradeRow("AAPL", 3, 100, 2, 1, 2, "alice", "bob", "BUY", NOW)]
    assert rows.ledger == [LedgerRow("1-0", "carol", "USD", -7, "WITHDRAWAL", "out", NOW)]
    assert rows.balances == {
        ("bob", "USD"): [-200, 0], ("alice", "AAPL"): [-2, 0], ("bob", "AAPL"): [2, 0],
        ("carol", "USD"): [-7, 0],
    }  # fmt: skip
    assert (rows.offsets, rows.progress, rows.at) == ({"events:0": "5-0"}, {"AAPL": 3}, NOW)
