"""The HTTP API in a subprocess (`python -m spot.api_server`) for integration tests, and a
client that speaks to it: what test_api.py and test_api_history.py share."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.auth import make_token
from api.market import REFRESH_S

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-for-the-api-tests-only"
START_TIMEOUT_S = 30.0
NO_RATE_LIMITS = {
    "SPOT_RATE_LIMIT_USER": "0",
    "SPOT_RATE_LIMIT_ORDERS": "0",
    "SPOT_RATE_LIMIT_IP": "0",
}


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body, or the text when it is not JSON)."""
        status, reply, _ = self.exchange(method, path, body, token=token, raw=raw, headers=headers)
        return status, reply

    def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, Any, dict[str, str]]:
        """As `request`, with the reply's headers (lower-case names)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            payload = raw if raw is not None else None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            data = response.read()
            got = {name.lower(): value for name, value in response.getheaders()}
            if got.get("content-type", "").startswith("application/json"):
                return response.status, json.loads(data), got
            return response.status, data.decode(), got
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(folder: Path, **settings: str) -> Server:
    """An API server with these settings (`redis_url=...` is SPOT_REDIS_URL) and the tests'
    JWT secret, and nothing else of the caller's SPOT_* environment; up once /healthz is."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= NO_RATE_LIMITS  # tests send bursts as one user; test_api_limits.py sets its own
    env |= {f"SPOT_{name.upper()}": value for name, value in settings.items()}
    env |= {"SPOT_API_PORT": str(port), "SPOT_JWT_SECRET": SECRET}
    log = folder / f"api-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spot.api_server"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(port, process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()}")
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop_api(server)
    raise RuntimeError(f"the API did not start: {log.read_text()}")


def stop_api(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def admin() -> str:
    return make_token("ops", secret=SECRET, admin=True)


def user_token(user: str) -> str:
    return make_token(user, secret=SECRET)


def until_listed(api: Server, symbols: set[str], timeout: float = 10) -> None:
    """Wait until the API's market view is one taken after the caller's flush and listing:
    it lists exactly `symbols`. The view is refreshed every REFRESH_S, so one refresh that
    began before the flush may still show the previous test's symbols and last prices:
    wait out a few refreshes first."""
    time.sleep(3 * REFRESH_S)
    deadline = time.monotonic() + timeout
    while {s["symbol"] for s in api.request("GET", "/v1/symbols")[1]["symbols"]} != symbols:
        assert time.monotonic() < deadline, f"the API never listed {symbols}"
        time.sleep(0.05)
    time.sleep(2 * REFRESH_S)  # the last prices come with the same refresh; one more to be sure
