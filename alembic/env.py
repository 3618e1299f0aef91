"""Alembic's entry point: runs the migrations in versions/ against Spot's database.

The URL is Spot's own (asyncpg form, `postgresql://...`): from store.db through
`config.attributes["database_url"]`, else from SPOT_DATABASE_URL. Migrations run through an
async engine (the driver Spot already has), each one inside `run_sync`.
"""

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from schema.tables import metadata
from store.db import sqlalchemy_url

config = context.config
target_metadata = metadata

# The alembic command line sets up logging from alembic.ini; store.db turns this off so that
# a migration run inside `spot up` does not replace (and disable) the process's loggers.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("SPOT_DATABASE_URL")
    if not url:
        raise SystemExit("set SPOT_DATABASE_URL, e.g. postgresql://postgres@127.0.0.1:5432/spot")
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # NullPool: a migration is one connection, closed when done, not a pool left behind.
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # A caller already inside an event loop hands over a sync-facing connection
        # (AsyncConnection.run_sync), since asyncio.run cannot nest.
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
