"""The PostgreSQL adapter of the database port (store/database/port.py), on asyncpg.

New orders and trades go in by COPY (binary, the fastest path into PostgreSQL: 172k rows/s
in 500-row batches, DESIGN.md §5); order changes, balance deltas, ledger entries, the
progress of the symbols touched and the offsets by one `unnest` statement each. The
statements' columns come from the port's column lists (schema/tables.py), so a column
added to a table is written without a change here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed

from schema import tables
from store.database.port import (
    CANDLE_COLUMNS,
    LEDGER_COLUMNS,
    ORDER_COLUMNS,
    QUARANTINE_COLUMNS,
    SYMBOL_COLUMNS,
    SYMBOL_KEY,
    SYMBOL_UPDATED,
    TRADE_COLUMNS,
    Fault,
    FlushRows,
    OrderUpdate,
    Row,
    WriteRow,
    column_types,
    shape_types,
)
from store.db import POOL_SETTINGS

# PostgreSQL's array type for each kind of value the port writes with unnest.
ARRAYS = {int: "bigint[]", str: "text[]", bool: "boolean[]", bytes: "bytea[]",
          Decimal: "numeric[]"}  # fmt: skip


def _unnest(types: dict[str, type], first: int = 1) -> tuple[str, str]:
    """(`unnest($1::bigint[], $2::text[], ...) AS u(a, b, ...)`, "a, b, ...")."""
    arrays = ", ".join(f"${n}::{ARRAYS[kind]}" for n, kind in enumerate(types.values(), first))
    names = ", ".join(types)
    return f"unnest({arrays}) AS u({names})", names


_updates, _ = _unnest(shape_types(OrderUpdate))
UPDATE_ORDERS = f"""
UPDATE orders AS o SET
    filled = o.filled + u.filled,
    notional = o.notional + u.notional,
    remaining = COALESCE(u.remaining, o.remaining - u.filled),
    status = COALESCE(u.status, o.status),
    reason = COALESCE(u.reason, o.reason),
    price = COALESCE(u.price, o.price),
    triggered = COALESCE(u.triggered, o.triggered),
    updated_at = ${len(OrderUpdate._fields) + 1}
FROM {_updates}
WHERE o.order_id = u.order_id
"""

ADD_BALANCES = """
INSERT INTO balances AS b (user_id, asset, available, locked, updated_at)
SELECT u.*, $5 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS u(user_id, asset, available, locked)
ON CONFLICT (user_id, asset) DO UPDATE SET
    available = b.available + excluded.available,
    locked = b.locked + excluded.locked,
    updated_at = excluded.updated_at
"""

# A minute's row takes each flush's candle: open and close by seq (the lowest, the highest),
# extremes and sums added. Exactly once with the trades, in their transaction.
_candles, _candle_columns = _unnest(column_types(tables.candles, CANDLE_COLUMNS))
ADD_CANDLES = f"""
INSERT INTO candles AS c ({_candle_columns})
SELECT * FROM {_candles}
ON CONFLICT (symbol, open_time) DO UPDATE SET
    open = CASE WHEN excluded.first_seq < c.first_seq THEN excluded.open ELSE c.open END,
    close = CASE WHEN excluded.last_seq > c.last_seq THEN excluded.close ELSE c.close END,
    high = GREATEST(c.high, excluded.high),
    low = LEAST(c.low, excluded.low),
    volume = c.volume + excluded.volume,
    quote_volume = c.quote_volume + excluded.quote_volume,
    taker_buy_volume = c.taker_buy_volume + excluded.taker_buy_volume,
    taker_buy_quote_volume = c.taker_buy_quote_volume + excluded.taker_buy_quote_volume,
    trades = c.trades + excluded.trades,
    first_seq = LEAST(c.first_seq, excluded.first_seq),
    last_seq = GREATEST(c.last_seq, excluded.last_seq)
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

_symbols, _symbol_columns = _unnest(column_types(tables.symbols, SYMBOL_COLUMNS))
SAVE_SYMBOLS = f"""
INSERT INTO symbols AS s ({_symbol_columns}, created_at)
SELECT u.*, ${len(SYMBOL_COLUMNS) + 1} FROM {_symbols}
ON CONFLICT ({", ".join(SYMBOL_KEY)}) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in SYMBOL_UPDATED)}
"""

OFFSETS = "SELECT stream, last_id FROM consumer_offsets WHERE consumer = $1"
OFFSETS_OF = OFFSETS + " AND stream = ANY($2::text[])"
PROGRESS = "SELECT symbol, seq FROM symbol_progress"
PROGRESS_OF = PROGRESS + " WHERE symbol = ANY($1::text[])"

# SQLSTATE classes: 08 connection exception, 40 transaction rollback (serialization
# failure, deadlock), 53 insufficient resources (too many connections), 57 operator
# intervention (admin shutdown, cannot connect now), 58 system error; 22 data exception
# (out of range, too long, invalid text such as NUL), 23 integrity constraint violation.
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
DATA_CLASSES = ("22", "23")


class PostgresSession:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self.conn.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        row: Row | None = await self.conn.fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> None:
        await self.conn.execute(query, *args)

    async def offsets(self, consumer: str, streams: list[str] | None = None) -> dict[str, str]:
        return await self._offsets(consumer, streams, "")

    async def _offsets(self, consumer: str, streams: list[str] | None, lock: str) -> dict[str, str]:
        if streams is None:
            rows = await self.conn.fetch(OFFSETS + lock, consumer)
        else:
            rows = await self.conn.fetch(OFFSETS_OF + lock, consumer, streams)
        return {row["stream"]: row["last_id"] for row in rows}

    async def progress(self, symbols: list[str] | None = None) -> dict[str, int | None]:
        if symbols is None:
            rows = await self.conn.fetch(PROGRESS)
        else:
            rows = await self.conn.fetch(PROGRESS_OF, symbols)
        return {row["symbol"]: row["seq"] for row in rows}


class PostgresTransaction(PostgresSession):
    async def lock_offsets(self, consumer: str, streams: list[str]) -> dict[str, str]:
        return await self._offsets(consumer, streams, " FOR UPDATE")

    async def save_symbols(self, rows: list[WriteRow], at: datetime) -> None:
        if rows:
            await self.conn.execute(SAVE_SYMBOLS, *_columns(rows), at)

    async def write(self, consumer: str, rows: FlushRows) -> None:
        conn, at = self.conn, rows.at
        if rows.orders:
            await self._copy("orders", rows.orders, ORDER_COLUMNS)
        if rows.order_updates:
            await conn.execute(UPDATE_ORDERS, *_columns(rows.order_updates), at)
        if rows.trades:
            await self._copy("trades", rows.trades, TRADE_COLUMNS)
        if rows.candles:
            await conn.execute(ADD_CANDLES, *_columns(rows.candles))
        if rows.ledger:
            await self._copy("ledger", rows.ledger, LEDGER_COLUMNS)
        if rows.balances:
            keys, deltas = rows.balances.keys(), rows.balances.values()
            await conn.execute(
                ADD_BALANCES,
                [user for user, _ in keys],
                [asset for _, asset in keys],
                [delta[0] for delta in deltas],
                [delta[1] for delta in deltas],
                at,
            )
        if rows.quarantine:
            await self._copy("quarantine", rows.quarantine, QUARANTINE_COLUMNS)
        if rows.progress:
            await conn.execute(SAVE_PROGRESS, list(rows.progress), list(rows.progress.values()), at)
        if rows.offsets:
            offsets = rows.offsets
            await conn.execute(SAVE_OFFSETS, consumer, list(offsets), list(offsets.values()), at)

    async def _copy(self, table: str, rows: list[WriteRow], columns: tuple[str, ...]) -> None:
        await self.conn.copy_records_to_table(table, records=rows, columns=columns)


def _columns(rows: list[WriteRow]) -> list[list[Any]]:
    """Rows as one list per column: unnest's arrays."""
    return [list(column) for column in zip(*rows, strict=True)]


# asyncpg's binary timestamptz encoder works each value through Python objects (compared
# with infinity, astimezone, a subtraction): 0.63 µs a value in a COPY, about two an order
# (a new order's created_at and updated_at, a trade's created_at), while every row of a
# flush carries the same datetime. A writer's connections encode timestamptz through this
# memo instead (asyncpg's tuple format: microseconds since 2000-01-01 UTC, PostgreSQL's own).
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_encoded: tuple[datetime | None, tuple[int]] = (None, (0,))


def _encode_timestamptz(value: datetime) -> tuple[int]:
    global _encoded
    if value is _encoded[0]:
        return _encoded[1]
    # astimezone: a naive datetime is local time, as asyncpg takes it
    delta = value.astimezone(UTC) - PG_EPOCH
    encoded = ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)
    _encoded = (value, encoded)
    return encoded


def _decode_timestamptz(value: tuple[int]) -> datetime:
    return PG_EPOCH + timedelta(microseconds=value[0])


async def _writer_codecs(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=_encode_timestamptz,
        decoder=_decode_timestamptz, format="tuple",
    )  # fmt: skip


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, server: str) -> None:
        self.pool = pool
        self.server = server

    @classmethod
    async def open(
        cls, url: str, *, min_size: int, max_size: int, timeout: float | None, writer: bool
    ) -> PostgresDatabase:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings=POOL_SETTINGS,
            # Only a writer's: decoding in Python would slow the API's reads instead.
            init=_writer_codecs if writer else None,
            **({"timeout": timeout, "command_timeout": timeout} if timeout else {}),
        )
        try:
            version = await pool.fetchval("SHOW server_version")
        except BaseException:
            await pool.close()
            raise
        return cls(pool, f"PostgreSQL {version.split()[0]}")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PostgresSession]:
        async with self.pool.acquire() as conn:
            yield PostgresSession(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self.pool.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        row: Row | None = await self.pool.fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> None:
        await self.pool.execute(query, *args)

    async def problems(self) -> list[str]:
        return []  # what Spot needs of PostgreSQL (14+) is its defaults

    def fault(self, error: BaseException) -> Fault | None:
        return fault(error)

    async def close(self) -> None:
        await self.pool.close()


def fault(error: BaseException) -> Fault | None:
    if isinstance(error, OverflowError | UnicodeEncodeError):
        return Fault.DATA  # asyncpg could not encode a value for its column (int64, text)
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        if state.startswith(DATA_CLASSES):
            return Fault.DATA
        if state.startswith(TRANSIENT_CLASSES):
            return Fault.TRANSIENT
        return None
    if isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError):
        # Connection refused or reset, a timeout, a connection closed under a query.
        return Fault.TRANSIENT
    return None
