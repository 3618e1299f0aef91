"""Fixtures for every layer of tests.

Servers: `SPOT_REDIS_URL` / `SPOT_DATABASE_URL` when set (the machine's Redis and PostgreSQL),
else embedded ones started once per session in a temporary folder (spot.stack). Tests never
touch what else lives on a shared server: Redis DB 15 (unless the URL names another non-zero
DB) and a `spot_test` database, created if missing.

MySQL: `SPOT_MYSQL_URL`, else the machine's MariaDB or MySQL at 127.0.0.1:3306 as root; a
database of its own is made for each test session and dropped after. Where none can be
reached, the tests that need it are skipped, saying why. `backend_url` runs a test (or a
fixture) once per database: the batcher, history and audit suites are one suite for both.

Async tests: an `async def test_...` runs on one uvloop event loop shared by the session
(`aio`, an asyncio.Runner), so fixtures can set up and tear down async resources in the loop
the test uses, with `aio.run(...)`. No pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import uvloop
from redis.asyncio import Redis

from spot.stack import EmbeddedPostgres, EmbeddedRedis, ensure_database, with_database

TEST_REDIS_DB = 15
TEST_DATABASE = "spot_test"
MYSQL_URL = "mysql://root@127.0.0.1:3306"
BACKENDS = ("postgresql", "mysql")
# A hung await fails its test instead of the whole run.
ASYNC_TEST_TIMEOUT_S = 60.0


@pytest.fixture(scope="session", autouse=True)
def aio() -> Iterator[asyncio.Runner]:
    # Autouse, so that pytest_pyfunc_call finds it among every test's fixtures.
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        yield runner
    finally:
        _close(runner)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in inspect.signature(test).parameters}
    runner: asyncio.Runner = pyfuncitem.funcargs["aio"]
    runner.run(asyncio.wait_for(test(**kwargs), ASYNC_TEST_TIMEOUT_S))
    return True


def _close(runner: asyncio.Runner) -> None:
    """Close the loop (cancelling tasks left behind) and fail on leaked connections.

    uvloop warns about each transport still open when its loop closes; with warnings as
    errors that close hangs for good (seen with a redis pool never closed: a client made with
    Redis(connection_pool=pool) does not close the pool, Redis.from_pool(pool) does).
    Record the warnings instead and fail with them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.close()
    if caught:
        pytest.fail("left open: " + "; ".join(sorted({str(w.message) for w in caught})))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SPOT_REDIS_URL")
    if url:
        yield _test_db(url)
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), durable=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(aio: asyncio.Runner) -> Iterator[str]:
    url = os.environ.get("SPOT_DATABASE_URL")
    if url:
        yield aio.run(ensure_database(url, TEST_DATABASE))
        return
    # Not under tmp_path_factory: as root the cluster runs as an unprivileged user, and every
    # pytest session (a concurrent one too) resets /tmp/pytest-of-root to 0700, locking
    # that user out of its own cluster.
    folder = Path(tempfile.mkdtemp(prefix="spot-test-pg-"))
    server = EmbeddedPostgres(folder / "cluster")
    try:
        server.start()
        yield aio.run(ensure_database(server.url("postgres"), TEST_DATABASE))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mysql_url(aio: asyncio.Runner) -> Iterator[str]:
    """A fresh database for this session on the MySQL server, dropped at the end."""
    server = os.environ.get("SPOT_MYSQL_URL") or MYSQL_URL
    try:
        import asyncmy
    except ModuleNotFoundError:
        pytest.skip("MySQL tests need asyncmy: pip install -e '.[dev,mysql]'")
    name = f"spot_test_{os.getpid()}"
    try:
        url = aio.run(ensure_database(server, name))
    except (OSError, asyncmy.errors.MySQLError) as exc:
        pytest.skip(f"no MySQL at {server} (set SPOT_MYSQL_URL): {exc}")
    try:
        yield url
    finally:
        aio.run(_drop_mysql_database(server, name))


async def _drop_mysql_database(server: str, name: str) -> None:
    import asyncmy

    from store.database.mysql import connect_options

    conn = await asyncmy.connect(**connect_options(with_database(server, "")))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The URL of each database in turn: PostgreSQL (`database_url`), then MySQL."""
    fixture = "database_url" if request.param == "postgresql" else "mysql_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def redis(redis_url: str, aio: asyncio.Runner) -> Iterator[Redis]:
    """A client on an empty test DB; replies are bytes."""
    client = Redis.from_url(redis_url)
    aio.run(client.flushdb())
    yield client
    aio.run(client.aclose())


@pytest.fixture
def pg(database_url: str, aio: asyncio.Runner) -> Iterator[asyncpg.Connection]:
    """A connection to the test database (tables are the test's own business)."""
    conn = aio.run(asyncpg.connect(database_url))
    yield conn
    aio.run(conn.close())


def _test_db(url: str) -> str:
    """Keep tests off DB 0 of a shared Redis: flushdb there would wipe someone's data."""
    parts = urlsplit(url)
    if parts.path.strip("/") in ("", "0"):
        parts = parts._replace(path=f"/{TEST_REDIS_DB}")
    return urlunsplit(parts)
