"""The database port: what the batcher, the API's history reads and `spot audit` ask of a
database, whichever it is. Two adapters implement it: store/database/postgres.py (asyncpg;
COPY for the bulk rows) and store/database/mysql.py (asyncmy; MySQL 8, MariaDB 10.6+).
`store.database.open_database(url)` picks one by the URL's scheme.

The row shapes are here, once: the column lists of the tables the batcher writes, read
from schema/tables.py. The batcher builds rows in that order (batcher/rows.py), each
adapter writes them by those names, so a column added to a table and to the row built
reaches both databases without touching either adapter.

Queries that the two databases read alike (history, audit) are written once, with `$1`,
`$2` … placeholders; the MySQL adapter rewrites them to its own. What the two do
differently (bulk rows, upserts, the order updates, locking the offsets) is an operation
of the port, each adapter doing it its own fastest way.

Errors: each adapter sorts its driver's errors (`Database.fault`) into TRANSIENT (retry:
connection lost, deadlock, serialization failure, server restarting) and DATA (the rows
themselves: a value the column cannot hold, text it cannot store, a constraint broken;
retrying changes nothing). The batcher retries the first and quarantines the entries
behind the second (batcher/batcher.py); anything else is a fault of Spot's and stops it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol, get_args, get_type_hints

from sqlalchemy import Table

from schema import tables

Row = Mapping[str, Any]  # what a query returns
# What the batcher writes: a plain tuple in its table's column order (ORDER_COLUMNS, ...) or
# its named shape's field order (OrderUpdate), not an instance of the shape: making a named
# tuple cost twice a tuple, ~1 µs an order.
WriteRow = tuple[Any, ...]


class Fault(enum.Enum):
    TRANSIENT = "transient"
    DATA = "data"


class DatabaseSettingsError(RuntimeError):
    """The server lacks settings Spot needs; the message names each and how to fix it."""


# -- row shapes ---------------------------------------------------------------------------
# A row the batcher inserts is a tuple in its table's column order, the columns read from
# schema/tables.py: a column added there (and its value in batcher/rows.py) reaches both
# adapters, which write by these names. tests/unit/test_rows.py holds the builders to them.


def _columns(table: Table, *, but: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns if c.name not in but)


ORDER_COLUMNS = _columns(tables.orders)
TRADE_COLUMNS = _columns(tables.trades)
LEDGER_COLUMNS = _columns(tables.ledger)
CANDLE_COLUMNS = _columns(tables.candles)
QUARANTINE_COLUMNS = _columns(tables.quarantine)
# What the symbols table keeps of a spec: every column but created_at, each a spec field;
# an upsert changes all but the key and the assets.
SYMBOL_COLUMNS = _columns(tables.symbols, but=("created_at",))
SYMBOL_KEY = ("symbol",)
SYMBOL_UPDATED = tuple(c for c in SYMBOL_COLUMNS if c not in ("symbol", "base", "quote"))


def column_types(table: Table, columns: tuple[str, ...]) -> dict[str, type]:
    """Each column's Python type: {"price": int, "volume": Decimal, ...}."""
    return {name: table.columns[name].type.python_type for name in columns}


class OrderUpdate(NamedTuple):
    """What a flush does to an order row written before: `filled` and `notional` add up;
    `remaining` is absolute when not None, else the row's less `filled`; None keeps the
    row's status, reason, price and triggered. (Built as plain tuples in this order.)"""

    order_id: int
    filled: int
    notional: int
    remaining: int | None
    status: str | None
    reason: str | None
    price: int | None
    triggered: bool | None


def shape_types(shape: type[tuple[Any, ...]]) -> dict[str, type]:
    """Each field of a named tuple and its value's type, None aside: {"price": int, ...}."""
    types = {}
    for name, hint in get_type_hints(shape).items():
        kinds = [k for k in get_args(hint) if k is not type(None)] or [hint]
        types[name] = kinds[0]
    return types


class QuarantineRow(NamedTuple):
    """A stream entry the database refused, kept whole with why (batcher/batcher.py)."""

    consumer: str
    stream: str
    entry_id: str
    error: str
    events: int
    fields: bytes  # the entry's fields, msgpack: what it takes to apply it by hand
    created_at: datetime


@dataclass
class FlushRows:
    """Everything one flush writes, in one transaction, offsets and progress included."""

    at: datetime  # UTC; the updated_at of what the flush changes
    orders: list[WriteRow] = field(default_factory=list)  # in ORDER_COLUMNS order
    order_updates: list[WriteRow] = field(default_factory=list)  # in OrderUpdate's
    trades: list[WriteRow] = field(default_factory=list)  # in TRADE_COLUMNS order
    candles: list[WriteRow] = field(default_factory=list)  # CANDLE_COLUMNS: added to the minute
    ledger: list[WriteRow] = field(default_factory=list)  # in LEDGER_COLUMNS order
    # (user_id, asset) -> [available, locked] to add, kept as the flush
    # summed them (a tuple a row cost the batcher ~1 µs an order, the GC's share counted,
    # for nothing PostgreSQL's unnest needs).
    balances: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    quarantine: list[WriteRow] = field(default_factory=list)  # QuarantineRows
    progress: dict[str, int] = field(default_factory=dict)  # symbol -> last seq applied
    offsets: dict[str, str] = field(default_factory=dict)  # stream -> last entry applied


# -- the operations -------------------------------------------------------------------------


class Session(Protocol):
    """One pooled connection. Reads; `execute` is for tests and tooling."""

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> None: ...

    async def offsets(self, consumer: str, streams: list[str] | None = None) -> dict[str, str]:
        """The stored stream offsets of `consumer` (of `streams` only, if given)."""
        ...

    async def progress(self, symbols: list[str] | None = None) -> dict[str, int | None]:
        """The last event seq applied per symbol (None: not known)."""
        ...


class Transaction(Session, Protocol):
    """A connection inside one transaction: committed when the block ends, rolled back
    when it raises."""

    async def lock_offsets(self, consumer: str, streams: list[str]) -> dict[str, str]:
        """`offsets`, their rows held until the transaction ends: two batchers on the same
        streams take turns, on different ones they don't wait."""
        ...

    async def save_symbols(self, rows: list[WriteRow], at: datetime) -> None:
        """Insert or update (their rules, not their assets) the listed symbols: rows in
        SYMBOL_COLUMNS order; `at` is a new row's created_at."""
        ...

    async def write(self, consumer: str, rows: FlushRows) -> None:
        """Every row of the flush; offsets and progress last (progress never goes back)."""
        ...


class Database(Protocol):
    dialect: str  # "postgresql" | "mysql"
    server: str  # what it is, for messages: "PostgreSQL 16.4", "MariaDB 10.11.19"

    def session(self) -> AbstractAsyncContextManager[Session]: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> None: ...

    async def problems(self) -> list[str]:
        """Settings of the server that Spot cannot run with, each named with its fix."""
        ...

    def fault(self, error: BaseException) -> Fault | None:
        """TRANSIENT, DATA, or None: not the database's (a fault of Spot's)."""
        ...

    async def close(self) -> None: ...
