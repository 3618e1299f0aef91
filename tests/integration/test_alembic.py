"""Alembic migrations on a real PostgreSQL and a real MySQL/MariaDB (`backend_url`): upgrade,
downgrade and upgrade again, and the migrated database matches schema.tables exactly.

The tests run in a database of their own, created fresh for the module on the server of
`backend_url` and dropped after, so that they never fight other tests over tables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, UniqueConstraint, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from schema.tables import metadata
from spot.stack import ensure_database
from store.database import Fault, dialect_of, open_database
from store.db import alembic_config, downgrade, sqlalchemy_url, upgrade

# One per test process: concurrent runs on a shared server each get their own.
DATABASE = f"spot_migrations_{os.getpid()}"


@pytest.fixture(scope="module")
def url(backend_url: str, aio: asyncio.Runner) -> Iterator[str]:
    aio.run(_drop(backend_url))
    fresh = aio.run(ensure_database(backend_url, DATABASE))
    try:
        yield fresh
    finally:
        aio.run(_drop(backend_url))


async def _drop(server_url: str) -> None:
    admin = await open_database(server_url, max_size=1)
    try:
        if admin.dialect == "postgresql":
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        else:
            await admin.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
    finally:
        await admin.close()


def _head() -> str:
    """The newest revision: parallel work adds migrations, so the tests do not name one."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused/")).get_current_head()
    assert head is not None
    return head


async def _inspect(url: str, look: Any) -> Any:
    """`look(sync_connection)` on a connection to `url`, through SQLAlchemy's async engine."""
    engine = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(look)
    finally:
        await engine.dispose()


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_server_default": True})
    return list(compare_metadata(context, metadata))


def _layout(conn: Connection) -> dict[str, Any]:
    """Every table's columns, primary key, indexes, unique and check constraints, by name."""
    inspector = inspect(conn)
    layout = {}
    for table in inspector.get_table_names():
        unique = sorted(u["name"] for u in inspector.get_unique_constraints(table))
        layout[table] = {
            "columns": [c["name"] for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["name"],
            # A unique constraint's index is counted as the constraint (PostgreSQL marks it
            # as such; MySQL reports it as an index of the same name).
            "indexes": sorted(
                i["name"]
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint") and i["name"] not in unique
            ),
            "unique": unique,
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
        }
    return layout


async def _revision(url: str) -> str | None:
    if "alembic_version" not in await _inspect(url, _layout):
        return None
    conn = await open_database(url, max_size=1)
    try:
        revision: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
        return revision
    finally:
        await conn.close()


async def _tables(url: str) -> set[str]:
    return set(await _inspect(url, _layout))


async def _assert_at_head(url: str) -> None:
    assert await _inspect(url, _differences) == []
    layout = await _inspect(url, _layout)
    assert set(layout) == set(metadata.tables) | {"alembic_version"}
    for name, table in metadata.tables.items():
        unique = {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
        checks = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        assert layout[name] == {
            "columns": [c.name for c in table.columns],
            # MySQL names every primary key PRIMARY, whatever it was given.
            "pk": table.primary_key.name if dialect_of(url) == "postgresql" else None,
            "indexes": sorted(str(i.name) for i in table.indexes),
            "unique": sorted(str(n) for n in unique),
            "checks": sorted(str(n) for n in checks),
        }


async def test_upgrade_downgrade_upgrade(url: str) -> None:
    # Alembic's env.py runs its own event loop: from async code, migrate in a thread.
    await asyncio.to_thread(upgrade, url)
    assert await _revision(url) == _head()
    await _assert_at_head(url)

    await asyncio.to_thread(downgrade, url, "base")
    assert await _revision(url) is None
    assert set(await _inspect(url, _layout)) == {"alembic_version"}

    await asyncio.to_thread(upgrade, url)
    await _assert_at_head(url)
    # Already at head: nothing to do, nothing changes.
    await asyncio.to_thread(upgrade, url, "head")
    await _assert_at_head(url)


async def test_constraints_hold(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    conn = await open_database(url, max_size=1)
    try:
        await conn.execute("INSERT INTO balances (user_id, asset, available) VALUES ('u', 'X', 5)")
        order = (
            "INSERT INTO orders (order_id, user_id, symbol, side, type, price, quantity,"
            " remaining, status, time_in_force, post_only, client_order_id)"
            " VALUES ($1, 'u', 'BTC-USD', 'BUY', 'LIMIT', 100, 2, 2, 'NEW', 'GTC', false, $2)"
        )
        await conn.execute(order, 1, None)
        await conn.execute(order, 2, None)  # orders without a client id never collide
        await conn.execute(order, 3, "c-1")
        # Reused after the PLACE script's window (0006): the database takes it.
        await conn.execute(order, 4, "c-1")
        [row] = await conn.fetch("SELECT filled, notional, created_at FROM orders LIMIT 1")
        assert row["filled"] == 0 and row["notional"] == 0
        assert row["created_at"].tzinfo is not None
    finally:
        await conn.execute("DELETE FROM balances")
        await conn.execute("DELETE FROM orders")
        await conn.close()


async def test_symbol_progress_is_not_known_for_symbols_with_history(url: str) -> None:
    # 0002 on a database that has orders: their symbols' last applied seq is not known.
    await asyncio.to_thread(downgrade, url, "base")
    await asyncio.to_thread(upgrade, url, "0001")
    conn = await open_database(url, max_size=1)
    try:
        for order_id, symbol in ((1, "AAPL"), (2, "AAPL"), (3, "MSFT")):
            await conn.execute(
                "INSERT INTO orders (order_id, user_id, symbol, side, type, price, quantity,"
                " remaining, status, time_in_force, post_only)"
                " VALUES ($1, 'u', $2, 'BUY', 'LIMIT', 100, 2, 2, 'OPEN', 'GTC', false)",
                order_id,
                symbol,
            )
        await asyncio.to_thread(upgrade, url)
        rows = await conn.fetch("SELECT symbol, seq FROM symbol_progress ORDER BY symbol")
        assert [tuple(r.values()) for r in rows] == [("AAPL", None), ("MSFT", None)]
        await asyncio.to_thread(downgrade, url, "0001")
        assert "symbol_progress" not in await _tables(url)
        assert await conn.fetchval("SELECT count(*) FROM orders") == 3
    finally:
        await conn.execute("DELETE FROM orders")
        await conn.close()
    await asyncio.to_thread(upgrade, url)
    await _assert_at_head(url)


async def test_candles_are_built_from_the_trades_already_there(url: str) -> None:
    # 0005 on a database with trades: their one-minute candles, open and close by seq.
    if dialect_of(url) != "postgresql":
        pytest.skip("0005 backfills the candles of earlier trades on PostgreSQL only")
    await asyncio.to_thread(downgrade, url, "base")
    await asyncio.to_thread(upgrade, url, "0004")
    conn = await open_database(url, max_size=1)
    trade = (
        "INSERT INTO trades (symbol, seq, price, quantity, maker_order_id, taker_order_id,"
        " maker_user_id, taker_user_id, taker_side, created_at)"
        " VALUES ($1, $2, $3, $4, 1, 2, 'm', 't', $5, $6)"
    )
    try:
        for row in (
            ("A", 1, 100, 2, "BUY", 1_700_000_000_100),
            ("A", 2, 90, 1, "SELL", 1_700_000_000_200),
            ("A", 3, 95, 3, "BUY", 1_700_000_010_000),  # the same minute: 1_699_999_980_000 on
            ("A", 4, 97, 1, "SELL", 1_700_000_060_000),  # the next, from 1_700_000_040_000
            ("B", 1, 5, 10**15, "BUY", 1_700_000_000_000),  # sums past a BIGINT's reach
            ("B", 2, 2**53 // 10**15, 10**15, "BUY", 1_700_000_000_000),
        ):
            *values, ms = row
            await conn.execute(trade, *values, datetime.fromtimestamp(ms / 1000, UTC))
        await asyncio.to_thread(upgrade, url)
        rows = await conn.fetch(
            "SELECT symbol, open_time, open, high, low, close, volume, quote_volume,"
            " taker_buy_volume, trades, first_seq, last_seq FROM candles ORDER BY 1, 2"
        )
        assert [tuple(r.values()) for r in rows] == [
            ("A", 1_699_999_980_000, 100, 100, 90, 95, 6, 100 * 2 + 90 + 95 * 3, 5, 3, 1, 3),
            ("A", 1_700_000_040_000, 97, 97, 97, 97, 1, 97, 0, 1, 4, 4),
            ("B", 1_699_999_980_000, 5, 9, 5, 9, 2 * 10**15, 14 * 10**15, 2 * 10**15, 2, 1, 2),
        ]
    finally:
        await conn.execute("DELETE FROM trades")
        await conn.execute("DELETE FROM candles")
        await conn.close()
    await asyncio.to_thread(upgrade, url)
    await _assert_at_head(url)


async def test_upgrade_refuses_a_running_loop(url: str) -> None:
    with pytest.raises(RuntimeError, match="to_thread"):
        upgrade(url)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        (
            "postgres://u:p%40ss@h/db?sslmode=require",
            "postgresql+asyncpg://u:p%40ss@h/db?ssl=require",
        ),
        ("mysql://root@127.0.0.1:3306/test", "mysql+asyncmy://root@127.0.0.1:3306/test"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_sqlalchemy_url(given: str, expected: str) -> None:
    assert sqlalchemy_url(given) == expected


@pytest.mark.parametrize("given", ["redis://h/0", "h:5432/db"])
def test_sqlalchemy_url_refuses(given: str) -> None:
    with pytest.raises(ValueError):
        sqlalchemy_url(given)


async def test_stop_orders_fit_and_a_downgrade_with_stops_is_refused_whole(url: str) -> None:
    # 0004 on a database with orders: theirs stay as they were, the new columns NULL.
    await asyncio.to_thread(downgrade, url, "base")
    await asyncio.to_thread(upgrade, url, "0003")
    conn = await open_database(url, max_size=1)
    insert = (
        "INSERT INTO orders (order_id, user_id, symbol, side, type, price, quantity, remaining,"
        " status, time_in_force, post_only) VALUES ($1, 'u', 'AAPL', 'BUY', $2, $3, 2, 2, $4,"
        " $5, false)"
    )
    try:
        await conn.execute(insert, 1, "LIMIT", 100, "OPEN", "GTC")
        with pytest.raises(Exception) as refused:  # the column is too narrow for it
            await conn.execute(insert, 2, "STOP_MARKET", None, "UNTRIGGERED", "GTC")
        assert conn.fault(refused.value) is Fault.DATA
        await asyncio.to_thread(upgrade, url, "0004")
        [row] = await conn.fetch("SELECT type, stop_price, expire_at_ms, triggered FROM orders")
        assert tuple(row.values()) == ("LIMIT", None, None, None)
        await conn.execute(insert, 2, "STOP_MARKET", None, "UNTRIGGERED", "GTD")
        await conn.execute(
            "UPDATE orders SET stop_price = 120, expire_at_ms = 4000000000000, triggered = false"
            " WHERE order_id = 2"
        )
        # Narrowing `type` again would cut STOP_MARKET: refused, and nothing of 0004 undone.
        with pytest.raises(Exception, match="too long|truncated"):
            await asyncio.to_thread(downgrade, url, "0003")
        assert await _revision(url) == "0004"
        assert await conn.fetchval("SELECT stop_price FROM orders WHERE order_id = 2") == 120
        await conn.execute("DELETE FROM orders WHERE order_id = 2")
        await asyncio.to_thread(downgrade, url, "0003")
        assert await conn.fetchval("SELECT count(*) FROM orders") == 1
    finally:
        await conn.execute("DELETE FROM orders")
        await conn.close()
    await asyncio.to_thread(upgrade, url)
    await _assert_at_head(url)
