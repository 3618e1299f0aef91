"""Run the HTTP API: Granian, RSGI interface, uvloop, `settings.api_workers` processes.

Each worker process builds its own app state from the environment (`api.app.App.
__rsgi_init__` calls Settings.from_env()), so `serve` puts the settings it was given
into the environment first: a worker always sees what the caller decided, including
URLs `spot up` filled in. `python -m spot.api_server` serves from the environment alone.

Each Granian worker is a multiprocessing child of the server process: `worker_app` (the
factory Granian calls in the worker) has it die with the server, so a SIGKILL of `spot api`
cannot leave a worker orphaned and still listening on the port (issue #19).
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import socket

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings

from schema.settings import PREFIX, Settings
from spot.lifetime import die_with_parent

# A factory (Granian's factory=True): called in each worker process, before it serves.
TARGET = "spot.api_server:worker_app"
# Pending connections the kernel holds per listener; a load test opens hundreds at once.
BACKLOG = 2048


def settings_env(settings: Settings) -> dict[str, str]:
    """The SPOT_* variables that make Settings.from_env() give back `settings`."""
    env = {}
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if value is not None:
            env[PREFIX + name.upper()] = str(value)
    return env


def check_port_free(host: str, port: int) -> None:
    """Granian listens with SO_REUSEPORT, so a second server on a taken port starts without
    a word and the kernel deals new connections between the two. Two stacks on one port
    (port 8000 by default, or the same free port picked by two runs at once) answered a
    load test's requests with the other stack's secret: bursts of 401 INVALID_TOKEN.
    A plain bind fails while anything listens there (SO_REUSEADDR only skips TIME_WAIT)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"{host}:{port} is taken by another server: {exc}") from None


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost: it may resolve to anything
        return False


def check_secret(settings: Settings) -> None:
    """The development JWT secret is public (schema/settings.py): anyone could sign an
    admin token with it. It serves a laptop's loopback only; SystemExit, with the
    message, for anything wider."""
    if settings.dev_secret and not loopback(settings.api_host):
        raise SystemExit(
            f"spot api: refusing to listen on {settings.api_host} with the development JWT "
            "secret, with which anyone can sign an admin token: set SPOT_JWT_SECRET to a "
            "secret of at least 32 bytes, or SPOT_API_HOST to a loopback address (127.0.0.1)"
        )


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Blocks; call it from the main thread."""
    if settings.redis_url is None:
        raise ValueError("the API needs a Redis: set SPOT_REDIS_URL (`spot up` does)")
    check_secret(settings)
    check_port_free(settings.api_host, settings.api_port)
    os.environ.update(settings_env(settings))
    Granian(
        TARGET,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=settings.api_workers,
        http=HTTPModes.http1,
        websockets=True,  # GET /v1/ws: market data (api/market_data.py)
        backlog=BACKLOG,
        # Connections a worker serves at once (Granian's "backpressure", 2,048 by default
        # with this backlog): slow sockets by the thousand would take every one otherwise.
        backpressure=settings.http_max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.http_header_timeout_s * 1000)
        ),
        log_access=False,
        factory=True,
    ).serve()


def worker_app() -> object:
    """The app, in a Granian worker set to get SIGTERM when the server process dies. The
    worker's loop handles SIGTERM as Granian's own shutdown: it stops listening at once and
    finishes the requests in hand."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)
    from api.app import app

    return app


if __name__ == "__main__":
    serve(Settings.from_env())
