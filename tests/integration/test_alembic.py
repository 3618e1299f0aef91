"""Alembic migrations on a real PostgreSQL: upgrade, downgrade and upgrade again, and the
migrated database matches schema.tables exactly.

The tests run in a database of their own, created fresh for the module on the server of
`database_url` and dropped after, so that they never fight other tests over tables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, UniqueConstraint, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from schema.tables import metadata
from spot.stack import with_database
from store.db import downgrade, sqlalchemy_url, upgrade

# One per test process: concurrent runs on a shared server each get their own.
DATABASE = f"spot_migrations_{os.getpid()}"


@pytest.fixture(scope="module")
def url(database_url: str, aio: asyncio.Runner) -> Iterator[str]:
    aio.run(_admin(database_url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    aio.run(_admin(database_url, f'CREATE DATABASE "{DATABASE}"'))
    try:
        yield with_database(database_url, DATABASE)
    finally:
        aio.run(_admin(database_url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))


async def _admin(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


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
        layout[table] = {
            "columns": [c["name"] for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["name"],
            # PostgreSQL reports a unique constraint's index too: that one is counted as unique.
            "indexes": sorted(
                i["name"]
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")
            ),
            "unique": sorted(u["name"] for u in inspector.get_unique_constraints(table)),
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
        }
    return layout


async def _revision(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        table = await conn.fetchval("SELECT to_regclass('alembic_version')")
        return await conn.fetchval("SELECT version_num FROM alembic_version") if table else None
    finally:
        await conn.close()


async def _assert_at_head(url: str) -> None:
    assert await _inspect(url, _differences) == []
    layout = await _inspect(url, _layout)
    assert set(layout) == set(metadata.tables) | {"alembic_version"}
    for name, table in metadata.tables.items():
        unique = {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
        checks = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        assert layout[name] == {
            "columns": [c.name for c in table.columns],
            "pk": table.primary_key.name,
            "indexes": sorted(str(i.name) for i in table.indexes),
            "unique": sorted(str(n) for n in unique),
            "checks": sorted(str(n) for n in checks),
        }


async def test_upgrade_downgrade_upgrade(url: str) -> None:
    # Alembic's env.py runs its own event loop: from async code, migrate in a thread.
    await asyncio.to_thread(upgrade, url)
    assert await _revision(url) == "0004"
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
    conn = await asyncpg.connect(url)
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
        # Reused after the PLACE script's window (0004): the database takes it.
        await conn.execute(order, 4, "c-1")
        row = await conn.fetchrow("SELECT filled, notional, created_at FROM orders LIMIT 1")
        assert row["filled"] == 0 and row["notional"] == 0
        assert row["created_at"].tzinfo is not None
    finally:
        await conn.execute("DELETE FROM balances; DELETE FROM orders")
        await conn.close()


async def test_symbol_progress_is_not_known_for_symbols_with_history(url: str) -> None:
    # 0002 on a database that has orders: their symbols' last applied seq is not known.
    await asyncio.to_thread(downgrade, url, "base")
    await asyncio.to_thread(upgrade, url, "0001")
    conn = await asyncpg.connect(url)
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
        assert [tuple(r) for r in rows] == [("AAPL", None), ("MSFT", None)]
        await asyncio.to_thread(downgrade, url, "0001")
        assert await conn.fetchval("SELECT to_regclass('symbol_progress')") is None
        assert await conn.fetchval("SELECT count(*) FROM orders") == 3
    finally:
        await conn.execute("DELETE FROM orders")
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
