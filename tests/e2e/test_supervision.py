"""`spot up` supervising its processes and servers (issue #19), driven as a user would: the
API SIGKILLed comes back without a restart loop and without an orphan, an orphaned API of an
earlier run that holds the port is ended, the embedded Redis and PostgreSQL SIGKILLed are
restarted on their data, orders keep being accepted while PostgreSQL is down and none is
lost, and nothing of the stack outlives `spot up`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from redis.asyncio import Redis

from spot.processes import pid_listening
from spot.stack import EmbeddedPostgres
from tests.e2e.test_up import Client, spot, start, stop, wait_for

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("SPOT_REDIS_URL") or os.environ.get("SPOT_DATABASE_URL")),
    reason="supervises the embedded servers: runs without SPOT_REDIS_URL / SPOT_DATABASE_URL",
)

RECOVER_TIMEOUT_S = 60.0
DATABASE_DOWN_S = 5.0
ORDER_PACE_S = 0.05  # under SPOT_RATE_LIMIT_ORDERS' 50/s
ORDER = {"symbol": "AAPL", "side": "BUY", "price": 19_000, "quantity": 1}


def tree(process: subprocess.Popen[bytes]) -> dict[int, list[str]]:
    """Every process under `spot up` now: pid -> command line."""
    out = {}
    for proc in psutil.Process(process.pid).children(recursive=True):
        try:
            out[proc.pid] = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
    return out


def api_server(up: subprocess.Popen[bytes]) -> int:
    [pid] = [p for p, cmd in tree(up).items() if cmd[-1:] == ["api"] and _parent_is(p, up.pid)]
    return pid


def _parent_is(pid: int, parent: int) -> bool:
    try:
        return bool(psutil.Process(pid).ppid() == parent)
    except psutil.NoSuchProcess:
        return False


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_until(done, what: str, timeout: float = RECOVER_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def ready(client: Client) -> bool:
    try:
        return client.call("GET", "/readyz")[0] == 200
    except OSError:
        return False


def place(trader: Client) -> int:
    """One order, accepted (202): paced under the user's order rate, a 429 waited out."""
    for _ in range(10):
        status, placed = trader.call("POST", "/v1/orders", ORDER)
        if status != 429:
            assert status == 202, placed
            time.sleep(ORDER_PACE_S)
            return int(placed["order_id"])
        time.sleep(1)
    raise AssertionError("rate limited for 10 s")


def stop_and_check_nothing_left(up: subprocess.Popen[bytes], seen: set[int], port: int) -> str:
    output = stop(up)
    wait_until(lambda: not any(alive(p) for p in seen), f"left running: {seen}", 10)
    assert pid_listening(port) is None
    return output


def test_a_killed_api_comes_back_without_a_loop_or_an_orphan(env: dict[str, str]) -> None:
    port = int(env["SPOT_API_PORT"])
    up = start(env, "--seed", "--users", "2")
    seen = set(tree(up))
    try:
        server = api_server(up)
        worker = pid_listening(port)
        assert worker is not None and worker != server  # Granian's worker listens
        os.kill(server, signal.SIGKILL)
        public = Client(port)
        wait_until(lambda: not alive(worker), "the killed API's worker to go")
        wait_until(lambda: ready(public), "the API to be back")
        assert api_server(up) != server
        seen |= set(tree(up))
        trader = Client(port, spot("token", "u1", env=env).strip())
        assert trader.call("POST", "/v1/orders", ORDER)[0] == 202
    finally:
        output = stop_and_check_nothing_left(up, seen, port)
    assert output.count("api exited") == 1, output  # once, then it came back


def orphan_api(env: dict[str, str]) -> int:
    """A `spot api` of this data folder whose parent is gone, holding the port (as a
    Granian worker orphaned before this fix did); its Redis is a throwaway one."""
    subprocess.run(
        ["sh", "-c", f"{sys.executable} -m spot.cli api >/dev/null 2>&1 &"],
        env=env | {"SPOT_REDIS_URL": "redis://127.0.0.1:1/0"},
        check=True,
    )
    port = int(env["SPOT_API_PORT"])
    wait_until(lambda: pid_listening(port) is not None, "the orphan to listen", 30)
    worker = pid_listening(port)
    assert worker is not None
    return int(psutil.Process(worker).ppid())


def test_an_orphaned_api_holding_the_port_is_ended(env: dict[str, str]) -> None:
    port = int(env["SPOT_API_PORT"])
    orphan = orphan_api(env)
    try:
        up = start(env, "--seed", "--users", "1")
    except BaseException:
        os.kill(orphan, signal.SIGKILL)
        raise
    seen = set(tree(up))
    try:
        assert not alive(orphan)
        listener = pid_listening(port)
        assert listener in tree(up)  # spot up's own API answers, and only it
    finally:
        output = stop_and_check_nothing_left(up, seen, port)
    assert f"ended pid {orphan}" in output, output
    assert "api exited" not in output, output


def _pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


async def _committed(url: str, ids: list[int]) -> int:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval("SELECT count(*) FROM orders WHERE order_id = ANY($1)", ids)
        return int(found)
    finally:
        await conn.close()


def test_killed_embedded_servers_are_restarted_and_nothing_is_lost(
    env: dict[str, str], aio: asyncio.Runner
) -> None:
    port = int(env["SPOT_API_PORT"])
    data = Path(env["SPOT_DATA_DIR"])
    up = start(env, "--seed", "--users", "2")
    seen = set(tree(up))
    try:
        trader = Client(port, spot("token", "u1", env=env).strip())
        status, first = trader.call("POST", "/v1/orders", ORDER)
        assert status == 202, first
        accepted = [first["order_id"]]

        # Redis: SIGKILLed, restarted on its port from its AOF; the order is still there.
        redis_pid = _pid_in(data / "redis" / "redis.pid")
        os.kill(redis_pid, signal.SIGKILL)
        wait_until(lambda: _pid_in(data / "redis" / "redis.pid") != redis_pid, "Redis restarted")
        wait_until(lambda: ready(trader), "the stack back after Redis")
        path = f"/v1/orders/{first['order_id']}"
        wait_for(trader, path, lambda o: o["status"] == "OPEN", RECOVER_TIMEOUT_S)

        # PostgreSQL: SIGKILLed; orders go on being accepted while it is down or recovering.
        postmaster = data / "postgres" / "postmaster.pid"
        pg_pid = _pid_in(postmaster)
        os.kill(pg_pid, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            accepted.append(place(trader))  # Redis alone takes an order
        wait_until(lambda: postmaster.exists() and _pid_in(postmaster) != pg_pid, "PG restarted")
        wait_until(lambda: ready(trader), "the stack back after PostgreSQL")
        seen |= set(tree(up))

        # The batcher caught up: every accepted order is in the database, the audit clean.
        assert spot("audit", env=env).strip().endswith("audit: clean")
        url = f"postgresql://postgres@127.0.0.1:{(data / 'postgres.port').read_text().split()[1]}"
        assert aio.run(_committed(url + "/spot", accepted)) == len(accepted)
    finally:
        output = stop_and_check_nothing_left(up, seen, port)
    assert "the embedded Redis restarted" in output, output
    assert "the embedded PostgreSQL restarted" in output, output


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start (not under tmp_path: see
    tests/conftest.py's database_url)."""
    folder = Path(tempfile.mkdtemp(prefix="spot-e2e-pg-"))
    server = EmbeddedPostgres(folder / "cluster")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_orders_are_accepted_while_postgres_is_down_and_none_is_lost(
    env: dict[str, str],
    redis: Redis,
    redis_url: str,
    own_postgres: EmbeddedPostgres,
    aio: asyncio.Runner,
) -> None:
    """The database stopped for good (not one that `spot up` restarts): the API goes on
    taking orders, which Redis holds; history reads say 503; once it is back the batcher
    catches up and every accepted order is in it."""
    env = env | {"SPOT_REDIS_URL": redis_url, "SPOT_DATABASE_URL": own_postgres.url()}
    port = int(env["SPOT_API_PORT"])
    up = start(env, "--seed", "--users", "2")
    seen = set(tree(up))
    try:
        trader = Client(port, spot("token", "u1", env=env).strip())
        accepted = [trader.call("POST", "/v1/orders", ORDER)[1]["order_id"]]
        own_postgres.stop()
        deadline = time.monotonic() + DATABASE_DOWN_S
        while time.monotonic() < deadline:
            order_id = place(trader)
            accepted.append(order_id)
            status, order = trader.call("GET", f"/v1/orders/{order_id}")
            assert status == 200, order  # read-your-writes: Redis has it
        status, reply = trader.call("GET", "/v1/fills")
        assert (status, reply["error"]) == (503, "UNAVAILABLE"), reply
        own_postgres.start()
        url = own_postgres.url()
        wait_until(lambda: aio.run(_committed(url, accepted)) == len(accepted), "the catch-up")
        seen |= set(tree(up))
        assert spot("audit", env=env).strip().endswith("audit: clean")
    finally:
        stop_and_check_nothing_left(up, seen, port)
