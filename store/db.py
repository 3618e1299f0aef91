"""The database schema's migrations, run from Python: `spot db upgrade`, and `spot up` before
it starts the batcher; and the session settings of Spot's asyncpg pools.

Spot's URLs are in asyncpg's form (`postgresql://user@host:port/db`); SQLAlchemy and Alembic
want the driver named (`postgresql+asyncpg://`), which `sqlalchemy_url` adds. The migrations
live in `alembic/` beside `alembic.ini` at the repo root, found from this file so that any
working directory will do; an installed image carries them in `<prefix>/share/spot/`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

# Every asyncpg pool of Spot's (batcher, API) plans each statement for its bound values.
# asyncpg prepares and caches statements, and PostgreSQL switches a prepared statement to
# one generic plan after five runs, planned for the table as it was then. The batcher's
# UPDATE of orders by id was planned while orders was nearly empty (a hash join over a
# full scan) and kept that plan as the table grew: Locust at 3,000 orders/s, 283 flushes
# read 5.9 M order rows in 30 s; on 300,000 rows one UPDATE of 200 orders took 26 ms with
# the generic plan and 2.3 ms planned each time (an index lookup per order).
POOL_SETTINGS = {"plan_cache_mode": "force_custom_plan"}

# The driver SQLAlchemy uses for each URL scheme Spot accepts.
DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}


def sqlalchemy_url(url: str) -> str:
    """`url` with its async driver named: postgresql:// → postgresql+asyncpg://,
    mysql:// → mysql+asyncmy://. A URL that names its driver already is kept as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if "+" in scheme:
        return url
    driver = DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql or mysql")
    if driver.startswith("postgresql"):
        # libpq's sslmode=... is asyncpg's ssl=... (SQLAlchemy passes the query on as is).
        rest = rest.replace("sslmode=", "ssl=")
    return f"{driver}://{rest}"


def alembic_ini() -> Path:
    """alembic.ini of the source tree (a checkout, an editable install) or of the image."""
    candidates = (
        Path(__file__).resolve().parent.parent / "alembic.ini",
        Path(sys.prefix) / "share" / "spot" / "alembic.ini",
    )
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no alembic.ini in {', '.join(str(p.parent) for p in candidates)}")


def alembic_config(database_url: str) -> Config:
    # Imported here: Alembic and SQLAlchemy take 0.2 s to import, and the API and the
    # batcher import this module for POOL_SETTINGS only.
    from alembic.config import Config

    config = Config(str(alembic_ini()))
    # Passed as an attribute, not as the ini's sqlalchemy.url: ConfigParser would read a
    # '%' in a URL-encoded password as interpolation.
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database up to `revision`. Blocking: from async code, call it through
    `await asyncio.to_thread(upgrade, url)`, since Alembic's env.py runs its own loop."""
    _refuse_running_loop()
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the database down to `revision` ("-1" one step, "base" drops every table)."""
    _refuse_running_loop()
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def _refuse_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("store.db migrations block: run them with asyncio.to_thread(...)")
