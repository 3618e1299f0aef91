"""The batcher's rows line up with the tables they go into (batcher/rows.py)."""

import re
from datetime import UTC, datetime

from batcher import postgres
from batcher.rows import SYMBOL_COLUMNS, TRADE_COLUMNS, symbol_columns, trade_record
from schema import tables
from schema.messages import Side, Trade
from schema.symbols import SymbolSpec


def test_a_trade_record_fills_every_column_of_trades_from_its_event():
    now = datetime.now(UTC)
    trade = Trade("BTC-USD", 7, 1_000, 3, 11, 12, "m", "t", Side.SELL, maker_fee=-2, taker_fee=9)
    row = dict(zip(TRADE_COLUMNS, trade_record(trade, now), strict=True))
    assert list(row) == [c.name for c in tables.trades.columns]
    assert row.pop("created_at") is now
    assert row.pop("taker_side") == "SELL"
    assert row == {name: getattr(trade, name) for name in row}


def test_the_symbols_columns_are_spec_fields_and_save_symbols_names_them_in_order():
    spec = SymbolSpec(symbol="X-Y", base="X", quote="Y", maker_fee_bps=-1, taker_fee_bps=4)
    values = dict(zip(SYMBOL_COLUMNS, symbol_columns([spec]), strict=True))
    assert values["maker_fee_bps"] == [-1] and values["taker_fee_bps"] == [4]
    assert set(SYMBOL_COLUMNS) <= set(SymbolSpec.__struct_fields__)
    inserted = re.search(r"INSERT INTO symbols AS s \(([^)]*)\)", postgres.SAVE_SYMBOLS)
    assert inserted is not None
    names = [name.strip() for name in inserted.group(1).split(",")]
    assert names == [*SYMBOL_COLUMNS, "created_at"]
