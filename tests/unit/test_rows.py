"""The batcher's rows line up with the tables they go into (batcher/rows.py), for both
database adapters (store/database/)."""

import re
from datetime import UTC, datetime

import pytest

from batcher.changes import Changes, OrderChange
from batcher.rows import (
    ORDER_COLUMNS,
    SYMBOL_COLUMNS,
    TRADE_COLUMNS,
    flush_rows,
    order_record,
    rejected_order_record,
    symbol_columns,
    symbol_rows,
    trade_record,
)
from schema import tables
from schema.messages import Accepted, OrderType, Side, TimeInForce, Trade
from schema.orders import OrderStatus
from schema.symbols import SymbolSpec
from store.database import postgres
from store.database.port import (
    CANDLE_COLUMNS,
    LEDGER_COLUMNS,
    QUARANTINE_COLUMNS,
    OrderUpdate,
    QuarantineRow,
    column_types,
    shape_types,
)

NOW = datetime(2026, 12, 4, tzinfo=UTC)


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
    assert symbol_rows([spec]) == [tuple(v[0] for v in values.values())]
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


@pytest.mark.parametrize(
    ("shape", "table"), [(OrderUpdate, tables.orders), (QuarantineRow, tables.quarantine)]
)
def test_the_named_shapes_are_columns_of_their_tables(shape, table) -> None:
    types = column_types(table, tuple(c.name for c in table.columns))
    assert set(shape._fields) <= set(types), set(shape._fields) - set(types)
    for name, kind in shape_types(shape).items():
        assert kind is types[name], (name, kind, types[name])
    assert QuarantineRow._fields == QUARANTINE_COLUMNS  # inserted whole, in column order


def test_every_kind_of_value_unnest_sends_has_a_postgresql_array_type() -> None:
    for table, columns in ((tables.symbols, SYMBOL_COLUMNS), (tables.candles, CANDLE_COLUMNS)):
        assert set(column_types(table, columns).values()) <= set(postgres.ARRAYS)
    assert set(shape_types(OrderUpdate).values()) <= set(postgres.ARRAYS)


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

    [order] = [dict(zip(ORDER_COLUMNS, row, strict=True)) for row in rows.orders]
    assert (order["order_id"], order["filled"], order["remaining"], order["status"]) == (
        2, 2, 3, "PARTIALLY_FILLED"
    )  # fmt: skip
    assert rows.order_updates == [(1, 2, 200, None, "PARTIALLY_FILLED", None, None, None)]
    assert len(rows.order_updates[0]) == len(OrderUpdate._fields)
    assert [dict(zip(TRADE_COLUMNS, t, strict=True))["seq"] for t in rows.trades] == [3]
    [candle] = [dict(zip(CANDLE_COLUMNS, c, strict=True)) for c in rows.candles]
    assert (candle["symbol"], candle["volume"], candle["first_seq"]) == ("AAPL", 2, 3)
    assert rows.ledger == [("1-0", "carol", "USD", -7, "WITHDRAWAL", "out", NOW)]
    assert len(rows.ledger[0]) == len(LEDGER_COLUMNS)
    assert rows.balances == {
        ("bob", "USD"): [-200, 0], ("alice", "AAPL"): [-2, 0], ("bob", "AAPL"): [2, 0],
        ("carol", "USD"): [-7, 0],
    }  # fmt: skip
    assert (rows.offsets, rows.progress, rows.at) == ({"events:0": "5-0"}, {"AAPL": 3}, NOW)
