"""The database port: what the batcher, the API's history reads and `spot audit` ask of a
database, whichever it is. Two adapters implement it: store/database/postgres.py (asyncpg;
COPY for the bulk rows) and store/database/mysql.py (asyncmy; MySQL 8, MariaDB 10.6+).
`store.database.open_database(url)` picks one by the URL's scheme.

The row shapes are here, once, as named tuples whose fields are the columns of their
table in schema/tables.py (tests/unit/test_rows.py holds them to it): the batcher builds
rows in their field order (batcher/rows.py), each adapter writes them by the shape's field
names, so a column added to a table, to its row shape and to the row built reaches both
databases without touching either adapter.

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

Row = Mapping[str, Any]  # what a query returns
# What the batcher writes: a tuple in the field order of its shape (OrderRow, TradeRow, ...).
# Not the shape itself: making a named tuple cost twice a tuple, ~1 µs an order.
WriteRow = tuple[Any, ...]


class Fault(enum.Enum):
    TRANSIENT = "transient"
    DATA = "data"


class DatabaseSettingsError(RuntimeError):
    """The server lacks settings Spot needs; the message names each and how to fix it."""


# -- row shapes: one per table the batcher writes, fields = columns -----------------------


class OrderRow(NamedTuple):
    order_id: int
    user_id: str
    symbol: str
    side: str
    type: str
    price: int | None
    quantity: int
    filled: int
    remaining: int
    notional: int
    status: str
    reason: str | None
    time_in_force: str
    post_only: bool
    client_order_id: str | None
    seq: int | None
    created_at: datetime
    updated_at: datetime


class OrderUpdate(NamedTuple):
    """What a flush does to an order row written before: `filled` and `notional` add up;
    `remaining` is absolute when not None, else the row's less `filled`; None keeps the
    row's status, reason and price."""

    order_id: int
    filled: int
    notional: int
    remaining: int | None
    status: str | None
    reason: str | None
    price: int | None


class TradeRow(NamedTuple):
    symbol: str
    seq: int
    price: int
    quantity: int
    maker_order_id: int
    taker_order_id: int
    maker_user_id: str
    taker_user_id: str
    taker_side: str
    created_at: datetime


class BalanceDelta(NamedTuple):
    """Added to the row (created at zero when missing): balances move by delta."""

    user_id: str
    asset: str
    available: int
    locked: int


class LedgerRow(NamedTuple):
    entry_id: str
    user_id: str
    asset: str
    amount: int
    kind: str
    reference: str
    created_at: datetime


class SymbolRow(NamedTuple):
    symbol: str
    base: str
    quote: str
    tick: int
    lot: int
    min_qty: int
    max_qty: int
    band_bps: int | None
    reference_price: int | None
    created_at: datetime


class QuarantineRow(NamedTuple):
    """A stream entry the database refused, kept whole with why (batcher/batcher.py)."""

    consumer: str
    stream: str
    entry_id: str
    error: str
    events: int
    fields: bytes  # the entry's fields, msgpack: what it takes to apply it by hand
    created_at: datetime


def column_types(shape: type[tuple[Any, ...]]) -> dict[str, type]:
    """Each field of a row shape and its value's type, None aside: {"price": int, ...}."""
    types = {}
    for name, hint in get_type_hints(shape).items():
        kinds = [k for k in get_args(hint) if k is not type(None)] or [hint]
        types[name] = kinds[0]
    return types


# Columns an adapter upserts on (the primary key) for the tables it upserts.
SYMBOL_KEY = ("symbol",)
SYMBOL_UPDATED = ("tick", "lot", "min_qty", "max_qty", "band_bps", "reference_price")


@dataclass
class FlushRows:
    """Everything one flush writes, in one transaction, offsets and progress included."""

    at: datetime  # UTC; the updated_at of what the flush changes
    orders: list[WriteRow] = field(default_factory=list)  # OrderRow's fields
    order_updates: list[WriteRow] = field(default_factory=list)  # OrderUpdate's
    trades: list[WriteRow] = field(default_factory=list)  # TradeRow's
    ledger: list[WriteRow] = field(default_factory=list)  # LedgerRow's
    # (user_id, asset) -> [available, locked]: BalanceDelta's fields, kept as the flush
    # summed them (a tuple a row cost the batcher ~1 µs an order, the GC's share counted,
    # for nothing PostgreSQL's unnest needs).
    balances: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    quarantine: list[WriteRow] = field(default_factory=list)  # QuarantineRow's
    progress: dict[str, int] = field(default_factory=dict)  # symbol -> last seq applied
    offsets: dict[str, str] = field(default_factory=dict)  # stream -> last entry applied


# -- the operations -------------------------------------------------------------------------


class Session(Protocol):
    """One pooled connection. Reads; `execute` is for tests and tooling."""

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

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

    async def save_symbols(self, rows: list[SymbolRow]) -> None:
        """Insert or update (their rules, not their created_at) the listed symbols."""
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

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> None: ...

    async def problems(self) -> list[str]:
        """Settings of the server that Spot cannot run with, each named with its fix."""
        ...

    def fault(self, error: BaseException) -> Fault | None:
        """TRANSIENT, DATA, or None: not the database's (a fault of Spot's)."""
        ...

    async def close(self) -> None: ...
