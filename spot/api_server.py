"""Run the HTTP API: Granian, RSGI interface, uvloop, `settings.api_workers` processes.

Each worker process builds its own app state from the environment (`api.app.App.
__rsgi_init__` calls Settings.from_env()), so `serve` puts the settings it was given
into the environment first: a worker always sees what the caller decided, including
URLs `spot up` filled in. `python -m spot.api_server` serves from the environment alone.
"""

from __future__ import annotations

import os

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops

from spot.settings import PREFIX, Settings

TARGET = "api.app:app"
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


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Blocks; call it from the main thread."""
    if settings.redis_url is None:
        raise ValueError("the API needs a Redis: set SPOT_REDIS_URL (`spot up` does)")
    os.environ.update(settings_env(settings))
    Granian(
        TARGET,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=settings.api_workers,
        http=HTTPModes.http1,
        websockets=False,
        backlog=BACKLOG,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    serve(Settings.from_env())
