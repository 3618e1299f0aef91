"""The MySQL 8 / MariaDB adapter of the database port (store/database/port.py), on asyncmy.

Sessions: every connection of Spot's runs with a known sql_mode (strict: a value the column
cannot hold is an error, never silently cut; no ANSI_QUOTES or NO_BACKSLASH_ESCAPES, which
would change how the statements here read), READ COMMITTED (as PostgreSQL: no gap locks
between batchers on different streams) and UTC (DATETIME keeps no zone; Spot writes UTC
and reads it back as aware UTC datetimes). Autocommit, except inside `transaction()`, so
that a pooled connection never sits in an open transaction holding metadata locks.

Writes: rows go in as multi-row INSERTs (new orders, trades, ledger, quarantine) and
multi-row INSERT … ON DUPLICATE KEY UPDATE (balances by delta, symbols, progress,
offsets), each statement kept under the server's max_allowed_packet; the order updates
as one UPDATE joined to JSON_TABLE over the updates (MySQL's unnest; MySQL 8.0.19+,
MariaDB 10.6+). The statements' columns come from the row shapes.

Not LOAD DATA LOCAL INFILE, measured against it (the same 30 flushes of 2,000 orders
through this adapter, 4 alternating runs each on MariaDB 10.11, a busy 2-core machine,
load average 8-12; medians): INSERT cost the batcher 16.6 µs and the server 31.5 µs per
order, LOAD DATA 30.8 µs and 28.9 µs (its tab-separated text is built in Python, and the
server's saving on parsing is small beside the balance upserts and order updates, which
no file loads); flushes took as long. LOAD DATA would also want local_infile=ON on the
server (off by default in MySQL 8), let the server read any file of the client's, needs a
temporary file per flush, and turns data errors into warnings (LOCAL implies IGNORE), so a
refusal would have to be read back with SHOW WARNINGS. asyncmy 0.2.18 could not run it
unpatched either (it hands the server's file name on as bytes where it takes str).

What a session cannot set is checked at startup (`problems`): the server's version, the
tables' engine (InnoDB: transactions), and the binary log's format where one is kept (READ
COMMITTED needs ROW or MIXED).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
import msgspec
from asyncmy import converters, errors
from asyncmy.constants import FIELD_TYPE
from asyncmy.converters import escape_sequence
from asyncmy.cursors import DictCursor

from schema import tables
from schema.codes import CancelReason, RejectReason
from schema.messages import OrderType, Side, TimeInForce
from schema.orders import OrderStatus
from store.database.port import (
    CANDLE_COLUMNS,
    LEDGER_COLUMNS,
    ORDER_COLUMNS,
    QUARANTINE_COLUMNS,
    SYMBOL_COLUMNS,
    SYMBOL_UPDATED,
    TRADE_COLUMNS,
    Fault,
    FlushRows,
    OrderUpdate,
    Row,
    WriteRow,
    shape_types,
)

log = logging.getLogger("spot.database")

# Strict (STRICT_TRANS_TABLES: a value too long or out of range is an error, so the batcher
# can quarantine it instead of storing it cut), and nothing that changes the SQL's reading.
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
ISOLATION = "READ-COMMITTED"
MIN_MYSQL = (8, 0, 19)  # JSON_TABLE (8.0.4) and the row alias of INSERT … AS new (8.0.19)
MIN_MARIADB = (10, 6, 0)  # JSON_TABLE
# A statement stays this far under max_allowed_packet (its header, the column list).
PACKET_MARGIN = 64 * 1024
MAX_STATEMENT = 4 * 1024 * 1024  # beyond it, more rows per statement buy nothing
TABLES = tuple(tables.metadata.tables)

# Server error numbers (mysqld_error.h, errmsg.h, MariaDB's additions).
DATA_ERRORS = frozenset({
    1048,  # column cannot be null
    1062,  # duplicate entry
    1264,  # out of range value for column
    1265,  # data truncated
    1292,  # incorrect (truncated) value
    1300,  # invalid character string
    1366,  # incorrect string value (text the column's character set cannot hold)
    1367,  # illegal value during parsing
    1406,  # data too long for column
    1452,  # foreign key
    1690,  # value out of range in an expression (BIGINT overflow)
    3140,  # invalid JSON text
    3156,  # invalid JSON value for CAST
    3819,  # check constraint violated (MySQL)
    4025,  # CONSTRAINT failed (MariaDB)
})  # fmt: skip
TRANSIENT_ERRORS = frozenset({
    1020,  # record has changed since last read (MariaDB, snapshot isolation)
    1040,  # too many connections
    1053,  # server shutdown in progress
    1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161,  # aborted or broken packets
    1205,  # lock wait timeout
    1213,  # deadlock
    1290, 1792, 1836,  # read-only (a failover under way)
    1317,  # query interrupted
    1637,  # too many active concurrent transactions
    1927,  # connection was killed (MariaDB)
    2002, 2003, 2005, 2006, 2011, 2013, 2055,  # cannot connect, gone away, lost connection
    3024,  # max execution time exceeded
    4031,  # disconnected by the server for inactivity
})  # fmt: skip
NO_SUCH_VARIABLE = 1193


def _utc(value: Any) -> Any:
    """DATETIME as the aware UTC datetime it stands for (Spot writes UTC only)."""
    moment = converters.convert_datetime(value)
    return moment.replace(tzinfo=dt.UTC) if isinstance(moment, dt.datetime) else moment


# The last datetime written and its literal: every row of a flush has the same one, and
# formatting it took 4 µs, twice for each order row.
_formatted: tuple[dt.datetime | None, str] = (None, "")


def _datetime(value: dt.datetime, mapping: Any = None) -> str:
    global _formatted
    if value is _formatted[0]:
        return _formatted[1]
    moment = value.astimezone(dt.UTC) if value.tzinfo is not None else value
    text = f"'{moment:%Y-%m-%d %H:%M:%S.%f}'"
    _formatted = (value, text)
    return text


def _bytes(value: bytes, mapping: Any = None) -> str:
    """Bytes as a hex literal: whatever they hold, the statement stays valid text."""
    return f"X'{value.hex()}'"


# The enums the batcher's rows carry as members (batcher/rows.py), each member's literal made
# once: asyncmy looks encoders up by exact type, and a StrEnum missed it, to be escaped
# as any string (str.translate, 0.3 µs).
_ENUMS: tuple[type[StrEnum], ...] = (Side, OrderType, TimeInForce, OrderStatus, CancelReason,
                                     RejectReason)  # fmt: skip
_MEMBERS = {member: f"'{member.value}'" for enum in _ENUMS for member in enum}


def _member(value: StrEnum, mapping: Any = None) -> str:
    return _MEMBERS[value]


CONVERSIONS: dict[Any, Any] = {
    **converters.conversions,
    **{enum: _member for enum in _ENUMS},
    bytes: _bytes,
    dt.datetime: _datetime,
    FIELD_TYPE.DATETIME: _utc,
    FIELD_TYPE.TIMESTAMP: _utc,
}

# What asyncmy takes apart from CONVERSIONS to escape values with (the keys that are types).
ENCODERS = {kind: encode for kind, encode in CONVERSIONS.items() if type(kind) is not int}
CHARSET = "utf8mb4"

_PLACEHOLDER = re.compile(r"\$(\d+)")


class Portable:
    """A query with `$n` placeholders (PostgreSQL's), rewritten once for asyncmy's `%s`:
    its text, and which argument goes to each placeholder in turn."""

    __slots__ = ("text", "order")

    def __init__(self, query: str) -> None:
        order: list[int] = []

        def placeholder(match: re.Match[str]) -> str:
            order.append(int(match.group(1)) - 1)
            return "%s"

        self.text = _PLACEHOLDER.sub(placeholder, query.replace("%", "%%"))
        self.order = order
        if not order:
            self.text = query  # no arguments: asyncmy leaves the text as it is

    def args(self, args: Sequence[Any]) -> tuple[Any, ...] | None:
        if not self.order:
            return None
        return tuple(args[i] for i in self.order)


_portable: dict[str, Portable] = {}


def portable(query: str) -> Portable:
    found = _portable.get(query)
    if found is None:
        found = _portable[query] = Portable(query)
    return found


class Dialect:
    """What differs between MySQL and MariaDB in the statements here."""

    def __init__(self, mariadb: bool, max_statement: int) -> None:
        self.mariadb = mariadb
        self.max_statement = max_statement

    def upsert(self, table: str, columns: Sequence[str], assignments: str) -> tuple[str, str]:
        """(the INSERT's head, its tail after the VALUES rows); in `assignments`, `new.c` is
        the value the row proposed for column c. MariaDB spells it VALUES(c); MySQL 8.0.20+
        warns of that (and asyncmy would fetch the warning after every statement), so there
        the rows get the alias `new`."""
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        if self.mariadb:
            assignments = re.sub(r"\bnew\.(\w+)", r"VALUES(\1)", assignments)
            return head, f" ON DUPLICATE KEY UPDATE {assignments}"
        return head, f" AS new ON DUPLICATE KEY UPDATE {assignments}"


def _insert(table: str, columns: Sequence[str]) -> tuple[str, str]:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", ""


_json = msgspec.json.Encoder()

# The order updates as a table: JSON_TABLE over a JSON array of arrays. Text columns are
# wide here so that the UPDATE's assignment, not JSON_TABLE, is what checks their length.
_JSON_TYPES = {int: "BIGINT", bool: "BOOLEAN", str: "VARCHAR(255)"}
_UPDATE_COLUMNS = ", ".join(
    f"{name} {_JSON_TYPES[kind]} PATH '$[{i}]'"
    for i, (name, kind) in enumerate(shape_types(OrderUpdate).items())
)
UPDATE_ORDERS = f"""
UPDATE orders AS o JOIN JSON_TABLE(%s, '$[*]' COLUMNS ({_UPDATE_COLUMNS})) AS u
    ON o.order_id = u.order_id
SET o.filled = o.filled + u.filled,
    o.notional = o.notional + u.notional,
    o.remaining = COALESCE(u.remaining, o.remaining - u.filled),
    o.status = COALESCE(u.status, o.status),
    o.reason = COALESCE(u.reason, o.reason),
    o.price = COALESCE(u.price, o.price),
    o.triggered = COALESCE(u.triggered, o.triggered),
    o.updated_at = %s
"""  # each assignment reads only its own column: MySQL applies them in turn

# A minute's row takes each flush's candle: open and close by seq (the lowest, the highest),
# extremes and sums added (as on PostgreSQL). MySQL assigns in turn: open and close read
# first_seq and last_seq before the last two assignments move them.
CANDLE_UPDATES = (
    "open = IF(new.first_seq < first_seq, new.open, open), "
    "close = IF(new.last_seq > last_seq, new.close, close), "
    "high = GREATEST(high, new.high), low = LEAST(low, new.low), "
    "volume = volume + new.volume, quote_volume = quote_volume + new.quote_volume, "
    "taker_buy_volume = taker_buy_volume + new.taker_buy_volume, "
    "taker_buy_quote_volume = taker_buy_quote_volume + new.taker_buy_quote_volume, "
    "trades = trades + new.trades, "
    "first_seq = LEAST(first_seq, new.first_seq), last_seq = GREATEST(last_seq, new.last_seq)"
)


class MySQLSession:
    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        q = portable(query)
        async with self.conn.cursor(DictCursor) as cursor:
            await cursor.execute(q.text, q.args(args))
            rows: list[Row] = list(await cursor.fetchall())
            return rows

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def fetchval(self, query: str, *args: Any) -> Any:
        q = portable(query)
        async with self.conn.cursor() as cursor:
            await cursor.execute(q.text, q.args(args))
            row = await cursor.fetchone()
            return None if row is None else row[0]

    async def execute(self, query: str, *args: Any) -> None:
        q = portable(query)
        async with self.conn.cursor() as cursor:
            await cursor.execute(q.text, q.args(args))

    async def offsets(self, consumer: str, streams: list[str] | None = None) -> dict[str, str]:
        return await self._offsets(consumer, streams, "")

    async def _offsets(self, consumer: str, streams: list[str] | None, lock: str) -> dict[str, str]:
        query = "SELECT stream, last_id FROM consumer_offsets WHERE consumer = %s"
        args: list[Any] = [consumer]
        if streams is not None:
            if not streams:
                return {}
            query += f" AND stream IN ({', '.join(['%s'] * len(streams))})"
            args += streams
        async with self.conn.cursor() as cursor:
            await cursor.execute(query + lock, args)
            return {stream: last for stream, last in await cursor.fetchall()}

    async def progress(self, symbols: list[str] | None = None) -> dict[str, int | None]:
        query = "SELECT symbol, seq FROM symbol_progress"
        if symbols is not None:
            if not symbols:
                return {}
            query += f" WHERE symbol IN ({', '.join(['%s'] * len(symbols))})"
        async with self.conn.cursor() as cursor:
            await cursor.execute(query, symbols)
            return {symbol: seq for symbol, seq in await cursor.fetchall()}


class MySQLTransaction(MySQLSession):
    async def lock_offsets(self, consumer: str, streams: list[str]) -> dict[str, str]:
        return await self._offsets(consumer, streams, " FOR UPDATE")

    async def save_symbols(self, rows: list[WriteRow], at: dt.datetime) -> None:
        assignments = ", ".join(f"{c} = new.{c}" for c in SYMBOL_UPDATED)
        statement = self.dialect.upsert("symbols", (*SYMBOL_COLUMNS, "created_at"), assignments)
        await self._rows(statement, [(*row, at) for row in rows])

    async def write(self, consumer: str, rows: FlushRows) -> None:
        at, dialect = rows.at, self.dialect
        if rows.orders:
            await self._rows(_insert("orders", ORDER_COLUMNS), rows.orders)
        if rows.order_updates:
            async with self.conn.cursor() as cursor:
                await cursor.execute(UPDATE_ORDERS, (_json.encode(rows.order_updates), at))
        if rows.trades:
            await self._rows(_insert("trades", TRADE_COLUMNS), rows.trades)
        if rows.candles:
            candles = dialect.upsert("candles", CANDLE_COLUMNS, CANDLE_UPDATES)
            await self._rows(candles, rows.candles)
        if rows.ledger:
            await self._rows(_insert("ledger", LEDGER_COLUMNS), rows.ledger)
        if rows.balances:
            statement = dialect.upsert(
                "balances",
                ("user_id", "asset", "available", "locked", "updated_at"),
                "available = available + new.available, locked = locked + new.locked, "
                "updated_at = new.updated_at",
            )
            deltas = [
                (u, asset, a, locked, at) for (u, asset), (a, locked) in rows.balances.items()
            ]
            await self._rows(statement, deltas)
        if rows.quarantine:
            await self._rows(_insert("quarantine", QUARANTINE_COLUMNS), rows.quarantine)
        if rows.progress:
            # Never backwards (as on PostgreSQL). updated_at first: MySQL assigns in turn,
            # and the test must see the row's seq before this statement changed it.
            ahead = "seq IS NULL OR seq < new.seq"
            statement = dialect.upsert(
                "symbol_progress",
                ("symbol", "seq", "updated_at"),
                f"updated_at = IF({ahead}, new.updated_at, updated_at), "
                f"seq = IF({ahead}, new.seq, seq)",
            )
            await self._rows(statement, [(s, seq, at) for s, seq in rows.progress.items()])
        if rows.offsets:
            statement = dialect.upsert(
                "consumer_offsets",
                ("consumer", "stream", "last_id", "updated_at"),
                "last_id = new.last_id, updated_at = new.updated_at",
            )
            offsets = [(consumer, s, last, at) for s, last in rows.offsets.items()]
            await self._rows(statement, offsets)

    async def _rows(self, statement: tuple[str, str], rows: Sequence[Any]) -> None:
        """Multi-row statements of `rows`, each under the size the server takes."""
        head, tail = statement
        limit = self.dialect.max_statement - len(head) - len(tail)
        values: list[str] = []
        size = 0
        for row in rows:
            # "(1,'u1',NULL,…)", by asyncmy's escaping of a tuple, called without the
            # connection's literal() before it (its type checks were 0.3 µs a row); only a
            # plain tuple is escaped so, not a named one
            text = escape_sequence(row if type(row) is tuple else tuple(row), CHARSET, ENCODERS)
            if values and size + len(text) > limit:
                await self.conn.query(head + ",".join(values) + tail)
                values, size = [], 0
            values.append(text)
            size += len(text) + 1
        if values:
            await self.conn.query(head + ",".join(values) + tail)


class MySQLDatabase:
    dialect = "mysql"

    def __init__(self, pool: Any, server: str, dialect: Dialect, isolation: str) -> None:
        self.pool = pool
        self.server = server
        self.sql = dialect
        self._isolation_variable = isolation
        self._timeout = None

    @classmethod
    async def open(
        cls, url: str, *, min_size: int, max_size: int, timeout: float | None
    ) -> MySQLDatabase:
        options = connect_options(url)
        if timeout:
            options["connect_timeout"] = max(1, int(timeout))
        # One connection first: which server it is decides the session settings' names.
        probe = await asyncmy.connect(**options)
        try:
            async with probe.cursor() as cursor:
                await cursor.execute("SELECT VERSION(), @@max_allowed_packet")
                version, packet = await cursor.fetchone()
                try:
                    await cursor.execute("SELECT @@transaction_isolation")
                    isolation = "transaction_isolation"
                except errors.OperationalError as exc:
                    if exc.args[0] != NO_SUCH_VARIABLE:
                        raise
                    isolation = "tx_isolation"  # MariaDB before 11.1
        finally:
            probe.close()
        mariadb = "mariadb" in version.lower()
        init = (
            f"SET SESSION sql_mode = '{SQL_MODE}', SESSION time_zone = '+00:00', "
            f"SESSION {isolation} = '{ISOLATION}'"
        )
        pool = await asyncmy.create_pool(
            minsize=min_size,
            maxsize=max_size,
            pool_recycle=3600,
            init_command=init,
            autocommit=True,
            conv=CONVERSIONS,
            **options,
        )
        max_statement = min(MAX_STATEMENT, int(packet) - PACKET_MARGIN)
        name = f"{'MariaDB' if mariadb else 'MySQL'} {version.split('-')[0]}"
        database = cls(pool, name, Dialect(mariadb, max_statement), isolation)
        database._timeout = timeout  # type: ignore[assignment]
        return database

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        async with asyncio.timeout(self._timeout):
            conn = await self.pool.acquire()
        try:
            yield conn
        except BaseException:
            # Whatever failed (a server error, a lost connection, a cancelled read that left
            # the protocol out of step), this connection is not to be trusted again.
            conn.close()
            raise
        finally:
            self.pool.release(conn)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MySQLSession]:
        async with self._connection() as conn:
            yield MySQLSession(conn, self.sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MySQLTransaction]:
        async with self._connection() as conn:
            await conn.begin()
            yield MySQLTransaction(conn, self.sql)
            await conn.commit()

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        async with self.session() as session:
            return await session.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        async with self.session() as session:
            return await session.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.session() as session:
            return await session.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> None:
        async with self.session() as session:
            await session.execute(query, *args)

    async def problems(self) -> list[str]:
        async with self.session() as session:
            variables = await session.fetch(
                "SELECT VERSION() AS version, @@log_bin AS log_bin, "
                f"@@binlog_format AS binlog_format, @@session.{self._isolation_variable} "
                "AS isolation, @@session.sql_mode AS sql_mode, "
                "@@innodb_flush_log_at_trx_commit AS flush_log"
            )
            engines = await session.fetch(
                "SELECT table_name AS name, engine FROM information_schema.tables "
                "WHERE table_schema = DATABASE()"
            )
        found = settings_problems(dict(variables[0]), {r["name"]: r["engine"] for r in engines})
        if str(variables[0]["flush_log"]) != "1":
            log.warning(
                "innodb_flush_log_at_trx_commit is %s: a server crash can lose the last "
                "second of commits after the batcher trimmed their entries from Redis; "
                "set it to 1 for what Spot promises",
                variables[0]["flush_log"],
            )
        return found

    def fault(self, error: BaseException) -> Fault | None:
        return fault(error)

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


def settings_problems(variables: dict[str, Any], engines: dict[str, str]) -> list[str]:
    """What Spot cannot run with, from the server's variables and the tables' engines."""
    found = []
    version = str(variables["version"])
    mariadb = "mariadb" in version.lower()
    minimum = MIN_MARIADB if mariadb else MIN_MYSQL
    numbers = tuple(int(n) for n in re.findall(r"\d+", version.split("-")[0])[:3])
    if numbers < minimum:
        found.append(
            f"the server is {'MariaDB' if mariadb else 'MySQL'} {version}: Spot needs "
            f"{'.'.join(map(str, minimum))} or newer (JSON_TABLE)"
        )
    if str(variables["log_bin"]) in ("1", "ON") and str(variables["binlog_format"]) == "STATEMENT":
        found.append(
            "binlog_format is STATEMENT: InnoDB cannot log Spot's READ COMMITTED writes "
            "that way; set binlog_format=ROW (or MIXED) in the server's configuration"
        )
    if str(variables["isolation"]).upper() != ISOLATION:
        found.append(
            f"sessions run at {variables['isolation']}, not READ COMMITTED, though Spot sets "
            "it on connecting: does a proxy between drop session settings?"
        )
    if "STRICT" not in str(variables["sql_mode"]):
        found.append(
            f"sql_mode is {variables['sql_mode']!r}, not strict, though Spot sets it on "
            "connecting: values too long would be cut instead of refused"
        )
    for table in TABLES:
        engine = engines.get(table)
        if engine is not None and engine.upper() != "INNODB":
            found.append(
                f"table {table} is {engine}, not InnoDB: a flush would not be one transaction; "
                f"ALTER TABLE {table} ENGINE=InnoDB"
            )
    return found


def connect_options(url: str) -> dict[str, Any]:
    """asyncmy's connect() arguments from mysql://user:password@host:port/database."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise ValueError(f"not a MySQL URL: {url!r}")
    if parts.query:
        raise ValueError(f"{url!r}: the MySQL adapter takes no URL options ({parts.query!r})")
    database = parts.path.lstrip("/")
    options: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "charset": CHARSET,
    }
    if database:
        options["database"] = unquote(database)
    return options


def fault(error: BaseException) -> Fault | None:
    if isinstance(error, UnicodeEncodeError):
        return Fault.DATA  # text that cannot be sent as UTF-8 (a lone surrogate)
    if isinstance(error, errors.DataError | errors.IntegrityError):
        return Fault.DATA
    if isinstance(error, errors.MySQLError) and error.args and isinstance(error.args[0], int):
        code = error.args[0]
        if code in DATA_ERRORS:
            return Fault.DATA
        if code in TRANSIENT_ERRORS:
            return Fault.TRANSIENT
    if isinstance(error, OSError | TimeoutError | errors.InterfaceError):
        return Fault.TRANSIENT  # refused, reset, timed out, or closed under a query
    if isinstance(error, asyncio.IncompleteReadError | ConnectionError):
        return Fault.TRANSIENT
    return None
