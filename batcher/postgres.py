"""Writing one flush to PostgreSQL: set-based statements in one transaction.

New orders and trades go in by COPY; order changes, balance deltas, ledger entries, the
progress of the symbols touched and offsets by one `unnest` statement each. The
consumer's offsets are written in the same transaction, so a flush is applied exactly
once whatever crashes when.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed

from batcher.changes import Changes
from batcher.rows import TRADE_COLUMNS, symbol_columns, trade_record
from schema.orders import OrderEvent, OrderStatus, next_status
from schema.symbols import SymbolSpec

CONSUMER = "batcher"
# A place the book rejected never had a row: it goes in as the table says it ends.
REJECTED_PLACE = next_status(OrderStatus.NEW, OrderEvent.REJECT)

ORDER_COLUMNS = (
    "order_id", "user_id", "symbol", "side", "type", "price", "quantity", "filled",
    "remaining", "notional", "status", "reason", "time_in_force", "post_only",
    "client_order_id", "seq", "created_at", "updated_at",
)  # fmt: skip
UPDATE_ORDERS = """
UPDATE orders AS o SET
    filled = o.filled + u.filled,
    notional = o.notional + u.notional,
    remaining = COALESCE(u.remaining, o.remaining - u.filled),
    status = COALESCE(u.status, o.status),
    reason = COALESCE(u.reason, o.reason),
    price = COALESCE(u.price, o.price),
    updated_at = $8
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
            $7::bigint[]) AS u(order_id, filled, notional, remaining, status, reason, price)
WHERE o.order_id = u.order_id
"""

ADD_BALANCES = """
INSERT INTO balances AS b (user_id, asset, available, locked, updated_at)
SELECT u.user_id, u.asset, u.available, u.locked, $5
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS u(user_id, asset, available, locked)
ON CONFLICT (user_id, asset) DO UPDATE SET
    available = b.available + excluded.available,
    locked = b.locked + excluded.locked,
    updated_at = excluded.updated_at
"""

ADD_LEDGER = """
INSERT INTO ledger (entry_id, user_id, asset, amount, kind, reference, created_at)
SELECT u.entry_id, u.user_id, u.asset, u.amount,
       CASE WHEN u.amount < 0 THEN 'WITHDRAWAL' ELSE 'DEPOSIT' END, u.reference, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
    AS u(entry_id, user_id, asset, amount, reference)
"""

SAVE_OFFSETS = """
INSERT INTO consumer_offsets AS c (consumer, stream, last_id, updated_at)
SELECT $1, u.stream, u.last_id, $4 FROM unnest($2::text[], $3::text[]) AS u(stream, last_id)
ON CONFLICT (consumer, stream) DO UPDATE SET
    last_id = excluded.last_id, updated_at = excluded.updated_at
"""

# Never backwards: each seq lives in one stream, read by one batcher, so progress only
# grows; the guard keeps it so even if two batchers were misconfigured onto one symbol.
SAVE_PROGRESS = """
INSERT INTO symbol_progress AS p (symbol, seq, updated_at)
SELECT u.symbol, u.seq, $3 FROM unnest($1::text[], $2::bigint[]) AS u(symbol, seq)
ON CONFLICT (symbol) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
WHERE p.seq IS NULL OR p.seq < excluded.seq
"""

# SYMBOL_COLUMNS (batcher/rows.py), in that order: tests/unit/test_rows.py checks it.
SAVE_SYMBOLS = """
INSERT INTO symbols AS s (symbol, base, quote, tick, lot, min_qty, max_qty, band_bps,
                          reference_price, maker_fee_bps, taker_fee_bps, created_at)
SELECT u.*, $12 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                            $6::bigint[], $7::bigint[], $8::int[], $9::bigint[], $10::int[],
                            $11::int[])
    AS u(symbol, base, quote, tick, lot, min_qty, max_qty, band_bps, reference_price,
         maker_fee_bps, taker_fee_bps)
ON CONFLICT (symbol) DO UPDATE SET
    tick = excluded.tick, lot = excluded.lot, min_qty = excluded.min_qty,
    max_qty = excluded.max_qty, band_bps = excluded.band_bps,
    reference_price = excluded.reference_price, maker_fee_bps = excluded.maker_fee_bps,
    taker_fee_bps = excluded.taker_fee_bps
"""


async def save_symbols(conn: asyncpg.Connection, specs: list[SymbolSpec]) -> None:
    if specs:
        await conn.execute(SAVE_SYMBOLS, *symbol_columns(specs), datetime.now(UTC))


async def load_offsets(
    conn: asyncpg.Connection, streams: list[str] | None = None, lock: bool = False
) -> dict[str, str]:
    """Stored offsets (of `streams` only, if given). `lock` holds their rows until the
    transaction ends: two batchers on the same streams serialise, on others they don't."""
    query = "SELECT stream, last_id FROM consumer_offsets WHERE consumer = $1"
    args: list[Any] = [CONSUMER]
    if streams is not None:
        query += " AND stream = ANY($2::text[])"
        args.append(streams)
    rows = await conn.fetch(query + (" FOR UPDATE" if lock else ""), *args)
    return {row["stream"]: row["last_id"] for row in rows}


async def load_progress(
    conn: asyncpg.Connection, symbols: list[str] | None = None
) -> dict[str, int | None]:
    """The last event seq applied per symbol (of `symbols` only, if given); None: not known."""
    query = "SELECT symbol, seq FROM symbol_progress"
    args: list[Any] = []
    if symbols is not None:
        query += " WHERE symbol = ANY($1::text[])"
        args.append(symbols)
    return {row["symbol"]: row["seq"] for row in await conn.fetch(query, *args)}


async def write(
    conn: asyncpg.Connection,
    changes: Changes,
    rejected: dict[int, dict[str, Any]],
    offsets: dict[str, str],
    progress: dict[str, int] | None = None,
) -> None:
    """Apply `changes` and move the offsets; the caller holds the transaction.

    `rejected` holds the order records (from Redis) of places the book rejected: the
    REJECTED event alone does not say what the order was."""
    now = datetime.now(UTC)
    rows = [_new_order(changes, a.order_id, a, now) for a in changes.new_orders.values()]
    rows += [_rejected_order(order_id, record, now) for order_id, record in rejected.items()]
    if rows:
        await conn.copy_records_to_table("orders", records=rows, columns=ORDER_COLUMNS)
    updates = [
        (order_id, change)
        for order_id, change in changes.orders.items()
        if order_id not in changes.new_orders
    ]
    if updates:
        await conn.execute(
            UPDATE_ORDERS,
            [order_id for order_id, _ in updates],
            [c.filled for _, c in updates],
            [c.notional for _, c in updates],
            [c.remaining for _, c in updates],
            [c.status for _, c in updates],
            [c.reason for _, c in updates],
            [c.price for _, c in updates],
            now,
        )
    if changes.trades:
        await conn.copy_records_to_table(
            "trades",
            records=[trade_record(t, now) for t in changes.trades],
            columns=TRADE_COLUMNS,
        )
    if changes.ledger:
        await conn.execute(ADD_LEDGER, *map(list, zip(*changes.ledger, strict=True)), now)
    if changes.balances:
        keys = list(changes.balances)
        await conn.execute(
            ADD_BALANCES,
            [user for user, _ in keys],
            [asset for _, asset in keys],
            [changes.balances[k][0] for k in keys],
            [changes.balances[k][1] for k in keys],
            now,
        )
    if progress:
        await conn.execute(SAVE_PROGRESS, list(progress), list(progress.values()), now)
    await conn.execute(SAVE_OFFSETS, CONSUMER, list(offsets), list(offsets.values()), now)


def _new_order(changes: Changes, order_id: int, accepted: Any, now: datetime) -> tuple[Any, ...]:
    change = changes.orders[order_id]
    return (
        order_id,
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


def _rejected_order(order_id: int, record: dict[str, Any], now: datetime) -> tuple[Any, ...]:
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
