"""The end-to-end tests' `spot up` environment, shared by test_up.py and
test_supervision.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from spot.stack import ensure_database
from tests.e2e.test_up import SECRET, free_port


@pytest.fixture
def env(tmp_path: Path, aio: asyncio.Runner) -> dict[str, str]:
    """`spot up`'s environment: embedded servers in tmp_path, or the machine's servers
    (a Redis DB and a database of this test's own) when the URLs are set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {
        "SPOT_DATA_DIR": str(tmp_path / "data"),
        "SPOT_API_PORT": str(free_port()),
        "SPOT_JWT_SECRET": SECRET,
        "SPOT_SNAPSHOT_INTERVAL_S": "1",
    }
    if os.environ.get("SPOT_REDIS_URL"):
        url = os.environ["SPOT_REDIS_URL"].rsplit("/", 1)[0] + "/14"
        subprocess.run(["redis-cli", "-u", url, "flushdb"], check=False, capture_output=True)
        env["SPOT_REDIS_URL"] = url
    if os.environ.get("SPOT_DATABASE_URL"):
        url = aio.run(ensure_database(os.environ["SPOT_DATABASE_URL"], "spot_e2e"))
        aio.run(_drop_tables(url))
        env["SPOT_DATABASE_URL"] = url
    return env


async def _drop_tables(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
