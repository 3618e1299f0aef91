"""`spot up` driven as a user would: one command starts the exchange, curl-like HTTP
trades on it, Ctrl-C stops it, and a restart finds the book where it was left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

SECRET = "e2e-secret-that-is-long-enough-for-hs256"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def spot(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "spot.cli", *args], env=env, check=True, capture_output=True
    ).stdout.decode()


def start(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "up", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    public = Client(int(env["SPOT_API_PORT"]))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        try:
            if public.call("GET", "/readyz")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("spot up never became ready")


def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()
    return output.decode()


def wait_for(client: Client, path: str, done, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = client.call("GET", path)
        if status == 200 and done(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {status} {body}"
        time.sleep(0.05)


def test_a_person_trades_on_spot_up_with_http_alone(env):
    port = int(env["SPOT_API_PORT"])
    up = start(env, "--seed", "--users", "3")
    try:
        alice = Client(port, spot("token", "u1", env=env).strip())
        bob = Client(port, spot("token", "u2", env=env).strip())
        status, before = alice.call("GET", "/v1/balances")
        assert status == 200, before

        status, sell = bob.call(
            "POST",
            "/v1/orders",
            {"symbol": "AAPL", "side": "SELL", "price": 19_000, "quantity": 10},
        )
        assert status == 202, sell
        wait_for(bob, f"/v1/orders/{sell['order_id']}", lambda o: o["status"] == "OPEN")
        status, buy = alice.call(
            "POST",
            "/v1/orders",
            {"symbol": "AAPL", "side": "BUY", "price": 19_100, "quantity": 4},
        )
        assert status == 202, buy
        filled = wait_for(alice, f"/v1/orders/{buy['order_id']}", lambda o: o["status"] == "FILLED")
        assert filled["filled"] == 4
        status, trades = alice.call("GET", "/v1/trades/AAPL")
        assert status == 200 and trades, trades
        wait_for(alice, "/v1/book/AAPL", lambda book: book["asks"][0] == [19_000, 6])
        assert bob.call("DELETE", f"/v1/orders/{buy['order_id']}")[0] == 404  # not his
    finally:
        output = stop(up)
    assert "Spot is up" in output

    # Ctrl-C snapshotted the books: a restart serves the resting order where it was.
    up = start(env)
    try:
        status, book = Client(port).call("GET", "/v1/book/AAPL")
        assert status == 200 and book["asks"][0] == [19_000, 6], book
        status, order = bob.call("GET", f"/v1/orders/{sell['order_id']}")
        assert (status, order["status"], order["remaining"]) == (200, "PARTIALLY_FILLED", 6)
        assert bob.call("DELETE", f"/v1/orders/{sell['order_id']}")[0] == 202
        wait_for(bob, f"/v1/orders/{sell['order_id']}", lambda o: o["status"] == "CANCELED")
    finally:
        stop(up)


# -- on MySQL / MariaDB (SPOT_DATABASE_URL=mysql://…) ---------------------------------------


@pytest.fixture
def mysql_env(env: dict[str, str], mysql_url: str, aio: asyncio.Runner):
    """`spot up`'s environment on the MySQL server, with a database not made yet: the stack
    makes the URL's database when it is missing."""
    from tests.conftest import _drop_mysql_database

    server = mysql_url.rsplit("/", 1)[0]
    name = f"spot_e2e_{os.getpid()}"
    aio.run(_drop_mysql_database(server, name))
    env = env | {"SPOT_DATABASE_URL": f"{server}/{name}"}
    yield env
    aio.run(_drop_mysql_database(server, name))


def test_spot_up_runs_the_whole_exchange_on_mysql(mysql_env):
    env = mysql_env
    port = int(env["SPOT_API_PORT"])
    up = start(env, "--seed", "--users", "3")
    try:
        alice = Client(port, spot("token", "u1", env=env).strip())
        bob = Client(port, spot("token", "u2", env=env).strip())
        order = {"symbol": "AAPL", "side": "SELL", "price": 19_000, "quantity": 10}
        status, sell = bob.call("POST", "/v1/orders", order)
        assert status == 202, sell
        wait_for(bob, f"/v1/orders/{sell['order_id']}", lambda o: o["status"] == "OPEN")
        order = {"symbol": "AAPL", "side": "BUY", "price": 19_100, "quantity": 4}
        status, buy = alice.call("POST", "/v1/orders", order)
        assert status == 202, buy
        wait_for(alice, f"/v1/orders/{buy['order_id']}", lambda o: o["status"] == "FILLED")
        # Fills are read from the database: the batcher wrote them to MySQL.
        fills = wait_for(alice, "/v1/fills", lambda body: body["fills"])["fills"]
        assert [(f["order_id"], f["quantity"], f["liquidity"]) for f in fills] == [
            (buy["order_id"], 4, "TAKER")
        ]
        audit = subprocess.run(
            [sys.executable, "-m", "spot.cli", "audit"], env=env, capture_output=True, text=True
        )
        assert audit.returncode == 0 and "audit: clean" in audit.stdout, audit.stdout
        assert "batcher:" in spot("status", env=env)
    finally:
        output = stop(up)
    assert "Spot is up" in output


def test_spot_up_names_what_the_mysql_server_lacks(mysql_env, aio: asyncio.Runner):
    from store.database import open_database

    env = mysql_env
    spot("db", "upgrade", env=env)  # the stack makes the database, alembic the tables

    async def without_transactions() -> None:
        database = await open_database(env["SPOT_DATABASE_URL"], max_size=1)
        try:
            await database.execute("ALTER TABLE balances ENGINE=MyISAM")
        finally:
            await database.close()

    aio.run(without_transactions())
    up = subprocess.run(
        [sys.executable, "-m", "spot.cli", "up"], env=env, capture_output=True, text=True,
        timeout=START_TIMEOUT_S,
    )  # fmt: skip
    assert up.returncode == 2, up.stdout + up.stderr
    assert "lacks settings Spot needs" in up.stderr
    assert "table balances is MyISAM, not InnoDB" in up.stderr
