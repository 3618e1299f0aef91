"""The rows the batcher writes, with their columns taken from schema/tables.py: one list
for every database adapter, so a column added to a table cannot be missed by one of them.

Pure: no I/O. Records are tuples in their table's column order (what COPY and a
multi-row INSERT take); tests/unit/test_rows.py holds each builder to its column list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schema import tables
from schema.messages import Trade
from schema.symbols import SymbolSpec

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
