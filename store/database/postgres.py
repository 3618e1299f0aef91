"""The PostgreSQL adapter of the database port (store/database/port.py), on asyncpg.

New orders and trades go in by COPY (binary, the fastest path into PostgreSQL: 172k rows/s
in 500-row batches, DESIGN.md §5); order changes, balance deltas, ledger entries, the
progress of the symbols touched and the offsets by one `unnest` statement each. The
statements' columns come from the row shapes, so a column added to a shape is written
without a change here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed

from store.database.port import (
    SYMBOL_KEY,
    SYMBOL_UPDATED,
    BalanceDelta,
    Fault,
    FlushRows,
    LedgerRow,
    OrderRow,
    OrderUpdate,
    QuarantineRow,
    Row,
    SymbolRow,
    TradeRow,
    column_types,
)
from store.db import POOL_SETTINGS

# PostgreSQL's array type for each kind of value the port writes with unnest.
ARRAYS = {int: "bigint[]", str: "text[]", bool: "boolean[]", bytes: "bytea[]"}


def _unnest(shape: type[Any], skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """`unnest($1::bigint[], $2::text[], ...) AS u(a, b, ...)` over a shape's fields."""
    types = {f: t for f, t in column_types(shape).items() if f not in skip}
    arrays = ", ".join(f"${n}::{ARRAYS[kind]}" for n, kind in enumerate(types.values(), 1))
    return f"unnest({arrays}) AS u({', '.join(types)})", ", ".join(types)


_updates, _ = _unnest(OrderUpdate)
UPDATE_ORDERS = f"""
UPDATE orders AS o SET
    filled = o.filled + u.filled,
    notional = o.notional + u.notional,
    remaining = COALESCE(u.remaining, o.remaining - u.filled),
    status = COALESCE(u.status, o.status),
    reason = COALESCE(u.reason, o.reason),
    price = COALESCE(u.price, o.price),
    updated_at = ${len(OrderUpdate._fields) + 1}
FROM {_updates}
WHERE o.order_id = u.order_id
"""

_balances, _balance_columns = _unnest(BalanceDelta)
ADD_BALANCES = f"""
INSERT INTO balances AS b ({_balance_columns}, updated_at)
SELECT u.*, ${len(BalanceDelta._fields) + 1} FROM {_balances}
ON CONFLICT (user_id, asset) DO UPDATE SET
    available = b.available + excluded.available,
    locked = b.locked + excluded.locked,
    updated_at = excluded.updated_at
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

_symbols, _symbol_columns = _unnest(SymbolRow, skip=("created_at",))
SAVE_SYMBOLS = f"""
INSERT INTO symbols AS s ({_symbol_columns}, created_at)
SELECT u.*, ${len(SymbolRow._fields)} FROM {_symbols}
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

    async def save_symbols(self, rows: list[SymbolRow]) -> None:
        if rows:
            await self.conn.execute(SAVE_SYMBOLS, *_columns(rows, skip=1), rows[0].created_at)

    async def write(self, consumer: str, rows: FlushRows) -> None:
        conn, at = self.conn, rows.at
        if rows.orders:
            await conn.copy_records_to_table(
                "orders", records=rows.orders, columns=OrderRow._fields
            )
        if rows.order_updates:
            await conn.execute(UPDATE_ORDERS, *_columns(rows.order_updates), at)
        if rows.trades:
            await conn.copy_records_to_table(
                "trades", records=rows.trades, columns=TradeRow._fields
            )
        if rows.ledger:
            await conn.copy_records_to_table(
                "ledger", records=rows.ledger, columns=LedgerRow._fields
            )
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
            await conn.copy_records_to_table(
                "quarantine", records=rows.quarantine, columns=QuarantineRow._fields
            )
        if rows.progress:
            await conn.execute(SAVE_PROGRESS, list(rows.progress), list(rows.progress.values()), at)
        if rows.offsets:
            offsets = rows.offsets
            await conn.execute(SAVE_OFFSETS, consumer, list(offsets), list(offsets.values()), at)

    async def _copy(self, table: str, rows: list[Any], shape: type[Any]) -> None:
        await self.conn.copy_records_to_table(table, records=rows, columns=shape._fields)


def _columns(rows: list[Any], skip: int = 0) -> list[list[Any]]:
    """Rows of one shape as one list per column (unnest's arrays), the last `skip` left out."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    return columns[: len(columns) - skip] if skip else columns


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, server: str) -> None:
        self.pool = pool
        self.server = server

    @classmethod
    async def open(
        cls, url: str, *, min_size: int, max_size: int, timeout: float | None
    ) -> PostgresDatabase:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings=POOL_SETTINGS,
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
