"""The batcher's rows line up with the tables they go into (batcher/rows.py)."""

import re
from datetime import UTC, datetime

from batcher import postgres
from batcher.changes import OrderChange
from batcher.rows import (
    ORDER_COLUMNS,
    SYMBOL_COLUMNS,
    TRADE_COLUMNS,
    order_record,
    rejected_order_record,
    symbol_columns,
    trade_record,
)
from schema import tables
from schema.messages import Accepted, OrderType, Side, TimeInForce, Trade
from schema.orders import OrderStatus
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


def test_an_order_record_fills_every_column_of_orders_from_its_accept_and_the_flush():
    now = datetime.now(UTC)
    accepted = Accepted("BTC-USD", 4, 21, "u", Side.BUY, OrderType.STOP_LIMIT, 105, 10,
                        TimeInForce.GTD, False, "c-1", 104, 9_000)  # fmt: skip
    change = OrderChange(filled=4, notional=420, remaining=6, status=OrderStatus.PARTIALLY_FILLED,
                         triggered=True)  # fmt: skip
    row = dict(zip(ORDER_COLUMNS, order_record(accepted, change, now), strict=True))
    assert list(row) == [c.name for c in tables.orders.columns]
    assert row == {
        "order_id": 21, "user_id": "u", "symbol": "BTC-USD", "side": "BUY",
        "type": "STOP_LIMIT", "price": 105, "quantity": 10, "filled": 4, "remaining": 6,
        "notional": 420, "status": "PARTIALLY_FILLED", "reason": None, "time_in_force": "GTD",
        "post_only": False, "client_order_id": "c-1", "seq": 4, "created_at": now,
        "updated_at": now, "stop_price": 104, "expire_at_ms": 9_000, "triggered": True,
    }  # fmt: skip
    plain = Accepted("BTC-USD", 5, 22, "u", Side.SELL, OrderType.LIMIT, 105, 1,
                     TimeInForce.GTC, False, None)  # fmt: skip
    row = dict(zip(ORDER_COLUMNS, order_record(plain, OrderChange(), now), strict=True))
    assert (row["stop_price"], row["expire_at_ms"], row["triggered"]) == (None, None, None)


def test_a_rejected_place_s_record_is_its_redis_record_ended():
    now = datetime.now(UTC)
    record = {
        "user_id": "u", "symbol": "BTC-USD", "side": "SELL", "type": "STOP_MARKET", "price": "",
        "quantity": "3", "time_in_force": "GTC", "post_only": "0", "client_order_id": "",
        "stop_price": "99", "reason": "STOP_WOULD_TRIGGER",
    }  # fmt: skip
    row = dict(zip(ORDER_COLUMNS, rejected_order_record(7, record, now), strict=True))
    assert (row["status"], row["reason"], row["remaining"]) == ("REJECTED", "STOP_WOULD_TRIGGER", 0)
    assert (row["price"], row["stop_price"], row["triggered"]) == (None, 99, False)
