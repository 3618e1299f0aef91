"""The load test against a database it did not make (SPOT_DATABASE_URL given).

A new Redis beside a database of earlier runs would hand out the same order ids again:
the batcher would then refuse every row as a duplicate and the audit would fail, after
a whole run. The runner refuses before it starts, and says what to give it instead.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from loadtest.measured import Run
from loadtest.run import _prepare
from schema import keys
from schema.settings import Settings
from store import db as migrations
from store.database import open_database

EARLIER_ORDER = 7_000_000_000  # far above any id another test's Redis hands out


async def _insert_earlier_order(url: str) -> None:
    database = await open_database(url, max_size=1)
    try:
        await database.execute(
            "INSERT INTO orders (order_id, user_id, symbol, side, type, price, quantity,"
            " filled, remaining, status, time_in_force, post_only)"
            f" VALUES ({EARLIER_ORDER}, 'u1', 'AAPL', 'BUY', 'LIMIT', 100, 1, 0, 1,"
            " 'OPEN', 'GTC', FALSE)"
        )
    finally:
        await database.close()


async def _delete_earlier_order(url: str) -> None:
    database = await open_database(url, max_size=1)
    try:
        await database.execute(f"DELETE FROM orders WHERE order_id = {EARLIER_ORDER}")
    finally:
        await database.close()


def test_a_database_of_earlier_runs_beside_a_new_redis_is_refused_before_the_run(
    backend_url: str, redis: Redis, redis_url: str, aio: asyncio.Runner
) -> None:
    migrations.upgrade(backend_url)
    aio.run(_insert_earlier_order(backend_url))
    run = Run(seconds=1, rate=1.0, scenario="model", users=1, traders=1, processes=1,
              client="lean", speed=1.0)  # fmt: skip
    try:
        with pytest.raises(SystemExit, match=f"orders up to id {EARLIER_ORDER}"):
            aio.run(_prepare(run, Settings.from_env({}), redis_url, backend_url))
        # Nothing was seeded into a Redis the run will not use.
        assert aio.run(redis.dbsize()) == 0
        # The Redis that made those orders is accepted.
        aio.run(redis.set(keys.ORDER_IDS, EARLIER_ORDER))
        before = aio.run(_prepare(run, Settings.from_env({}), redis_url, backend_url))
        assert before["order_id"] == EARLIER_ORDER
    finally:
        aio.run(_delete_earlier_order(backend_url))
        aio.run(redis.flushdb())  # the seed's symbols and users are no later test's
