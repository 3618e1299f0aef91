"""The database behind Spot, PostgreSQL or MySQL/MariaDB, through one port
(store/database/port.py): `await open_database(url)` picks the adapter by the URL's scheme.

The MySQL adapter needs asyncmy (`pip install 'spot[mysql]'`); each adapter's driver is
imported only when a URL asks for it.
"""

from __future__ import annotations

from store.database.port import (
    Database,
    DatabaseSettingsError,
    Fault,
    FlushRows,
    Row,
    Session,
    Transaction,
)

__all__ = [
    "Database",
    "DatabaseSettingsError",
    "Fault",
    "FlushRows",
    "Row",
    "Session",
    "Transaction",
    "dialect_of",
    "empty",
    "open_database",
    "require_settings",
]

SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
           "mariadb": "mysql"}  # fmt: skip


def dialect_of(url: str) -> str:
    """ "postgresql" or "mysql", from the URL's scheme (a driver named after + is ignored)."""
    scheme = url.partition("://")[0].split("+")[0].lower()
    dialect = SCHEMES.get(scheme)
    if dialect is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use postgresql:// or mysql://"
        )
    return dialect


async def open_database(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 2,
    timeout: float | None = None,
    writer: bool = False,
) -> Database:
    """A pool of `min_size`..`max_size` connections; `timeout` bounds connecting, waiting
    for a pooled connection and (PostgreSQL) each statement. `writer`: the batcher's pool,
    whose connections encode the flush's rows their cheapest way (store/database/postgres.py);
    what they read is the same."""
    if dialect_of(url) == "postgresql":
        from store.database.postgres import PostgresDatabase

        return await PostgresDatabase.open(
            url, min_size=min_size, max_size=max_size, timeout=timeout, writer=writer
        )
    try:
        from store.database.mysql import MySQLDatabase
    except ModuleNotFoundError as exc:
        if exc.name != "asyncmy":
            raise
        raise RuntimeError(
            "SPOT_DATABASE_URL is a MySQL URL: install the driver, pip install 'spot[mysql]'"
        ) from None
    return await MySQLDatabase.open(url, min_size=min_size, max_size=max_size, timeout=timeout)


async def require_settings(database: Database) -> None:
    """Raise DatabaseSettingsError naming every setting of the server Spot cannot run with."""
    found = await database.problems()
    if found:
        raise DatabaseSettingsError(
            f"{database.server} lacks settings Spot needs:\n" + "\n".join(f"  - {p}" for p in found)
        )


async def empty(database: Database, tables: list[str]) -> None:
    """Delete every row of `tables` (tests, benchmarks): TRUNCATE, one statement on
    PostgreSQL, one a table on MySQL (where it is DDL and cannot take a list)."""
    if database.dialect == "postgresql":
        await database.execute(f"TRUNCATE {', '.join(tables)}")
        return
    for table in tables:
        await database.execute(f"TRUNCATE TABLE {table}")
