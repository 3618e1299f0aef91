"""The database tables, as SQLAlchemy Core: what the batcher writes and the API reads.

Portable on purpose (PostgreSQL 14+, MySQL 8, MariaDB 10.11), since the same Alembic
migrations serve all three: every string has a length, money and sizes are BigInteger in minor
units (prices in quote minor units per one base unit, quantities in base units, amounts in
the asset's minor units), no PostgreSQL-only types. On MySQL the tables use a binary
collation so that user ids, symbols and stream ids compare case-sensitively, as on
PostgreSQL, and timestamps keep microseconds (MySQL's DATETIME stores no zone: write UTC).

Constraint and index names come from `NAMING`, so autogenerate produces the same names on
every run and every backend (all well under the 63/64-character identifier limits).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# MySQL's DATETIME keeps whole seconds unless given a precision; PostgreSQL's timestamptz
# keeps microseconds. CURRENT_TIMESTAMP(6) is valid on all three servers (and MySQL wants
# the default's precision to match the column's).
Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NOW = text("CURRENT_TIMESTAMP(6)")
ZERO = text("0")

# Table options MySQL/MariaDB take and every other dialect ignores.
MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

USER_ID = 64
SYMBOL = 32
ASSET = 16
# A Redis stream id "<ms>-<seq>": 13 digits of milliseconds until the year 2286, a dash and
# the sequence within that millisecond.
STREAM_ID = 32


def _created_at() -> Column[datetime]:
    return Column("created_at", Timestamp, nullable=False, server_default=NOW)


def _updated_at() -> Column[datetime]:
    return Column("updated_at", Timestamp, nullable=False, server_default=NOW)


symbols = Table(
    "symbols",
    metadata,
    Column("symbol", String(SYMBOL), primary_key=True),
    Column("base", String(ASSET), nullable=False),
    Column("quote", String(ASSET), nullable=False),
    Column("tick", BigInteger, nullable=False),
    Column("lot", BigInteger, nullable=False),
    Column("min_qty", BigInteger, nullable=False),
    Column("max_qty", BigInteger, nullable=False),
    Column("band_bps", Integer, nullable=True),
    Column("reference_price", BigInteger, nullable=True),
    _created_at(),
    # Basis points (schema/symbols.py); after created_at because migration 0003 added them.
    Column("maker_fee_bps", Integer, nullable=False, server_default=ZERO),
    Column("taker_fee_bps", Integer, nullable=False, server_default=ZERO),
    **MYSQL,
)

orders = Table(
    "orders",
    metadata,
    # Assigned by the API before the order is queued, so never generated here.
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", String(USER_ID), nullable=False),
    Column("symbol", String(SYMBOL), nullable=False),
    Column("side", String(4), nullable=False),  # BUY | SELL
    Column("type", String(16), nullable=False),  # LIMIT | MARKET | STOP_LIMIT | STOP_MARKET
    Column("price", BigInteger, nullable=True),  # NULL for MARKET and STOP_MARKET
    Column("quantity", BigInteger, nullable=False),
    Column("filled", BigInteger, nullable=False, server_default=ZERO),
    Column("remaining", BigInteger, nullable=False),
    # Sum of price × quantity over its fills: average price = notional / filled.
    Column("notional", BigInteger, nullable=False, server_default=ZERO),
    # NEW | UNTRIGGERED | OPEN | PARTIALLY_FILLED | FILLED | CANCELED | REJECTED
    Column("status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("time_in_force", String(3), nullable=False),  # GTC | IOC | FOK | GTD
    Column("post_only", Boolean, nullable=False),
    Column("client_order_id", String(64), nullable=True),
    Column("seq", BigInteger, nullable=True),  # the symbol sequence of its ACCEPTED event
    _created_at(),
    _updated_at(),
    # Stops and GTD (revision 0004, so after the columns before them): the trade price
    # that triggers a stop, a GTD order's expiry (ms since the epoch), and whether a stop
    # has been triggered (NULL for an order that is no stop).
    Column("stop_price", BigInteger, nullable=True),
    Column("expire_at_ms", BigInteger, nullable=True),
    Column("triggered", Boolean, nullable=True),
    # A user's orders newest first: order ids grow, so a backward scan of this index.
    # Filters on symbol and status ride this scan: every index costs each COPY'd row, and
    # the batcher measured ~22 µs a row with four of them.
    Index(None, "user_id", "order_id"),
    # Not unique: the PLACE script refuses a repeat within SPOT_CLIENT_ORDER_ID_WINDOW_S,
    # and after it the id may be used again (alembic 0004).
    Index(None, "user_id", "client_order_id"),
    **MYSQL,
)

trades = Table(
    "trades",
    metadata,
    Column("symbol", String(SYMBOL), nullable=False),
    # The TRADE event's symbol sequence: gap-free per symbol, so (symbol, seq) makes a
    # redelivered trade collide instead of landing twice.
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("maker_order_id", BigInteger, nullable=False),
    Column("taker_order_id", BigInteger, nullable=False),
    Column("maker_user_id", String(USER_ID), nullable=False),
    Column("taker_user_id", String(USER_ID), nullable=False),
    Column("taker_side", String(4), nullable=False),
    _created_at(),
    # What each side paid, in the asset it received (the buyer's in the symbol's base, the
    # seller's in its quote: schema/fees.py); negative for a maker's rebate. After
    # created_at because migration 0003 added them.
    Column("maker_fee", BigInteger, nullable=False, server_default=ZERO),
    Column("taker_fee", BigInteger, nullable=False, server_default=ZERO),
    PrimaryKeyConstraint("symbol", "seq"),
    Index(None, "maker_user_id", "created_at"),
    Index(None, "taker_user_id", "created_at"),
    **MYSQL,
)

# Sums of amounts: a minute of trades can add up past what a BIGINT holds (each notional
# may reach 2^53), so these are DECIMAL(38, 0), exact on every backend.
Total = Numeric(38, 0)

candles = Table(
    "candles",
    metadata,
    # One symbol's trades of one minute, written by the batcher in the transaction that
    # writes them (so exactly once) and at the same time as their created_at: every
    # interval of GET /api/v3/klines and the 24 h ticker are sums of these.
    Column("symbol", String(SYMBOL), nullable=False),
    Column("open_time", BigInteger, nullable=False, autoincrement=False),  # ms, UTC minute
    Column("open", BigInteger, nullable=False),  # the price of its lowest seq
    Column("high", BigInteger, nullable=False),
    Column("low", BigInteger, nullable=False),
    Column("close", BigInteger, nullable=False),  # the price of its highest seq
    Column("volume", Total, nullable=False),  # base units
    Column("quote_volume", Total, nullable=False),  # quote units: sum of price x quantity
    Column("taker_buy_volume", Total, nullable=False),  # of the trades a buyer took
    Column("taker_buy_quote_volume", Total, nullable=False),
    Column("trades", BigInteger, nullable=False),
    # The trades' seq range: a time range of trades is a range of the trades' primary key.
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("symbol", "open_time"),
    **MYSQL,
)

balances = Table(
    "balances",
    metadata,
    Column("user_id", String(USER_ID), nullable=False),
    Column("asset", String(ASSET), nullable=False),
    Column("available", BigInteger, nullable=False, server_default=ZERO),
    Column("locked", BigInteger, nullable=False, server_default=ZERO),
    _updated_at(),
    PrimaryKeyConstraint("user_id", "asset"),
    # No CHECK (available >= 0): the database follows Redis, which enforces it atomically.
    # One flush sums deltas read from several streams up to different points, so a sum can
    # dip below zero for a flush before the entry that covers it lands (a withdrawal read
    # before the sale that funded it) - and PostgreSQL checks an upsert's proposed row, the
    # bare delta, before it resolves the conflict. `spot audit` checks non-negativity once
    # everything has caught up.
    **MYSQL,
)

ledger = Table(
    "ledger",
    metadata,
    # The Redis stream id of the deposit or withdrawal: a replay inserts the same key.
    Column("entry_id", String(STREAM_ID), primary_key=True),
    Column("user_id", String(USER_ID), nullable=False),
    Column("asset", String(ASSET), nullable=False),
    Column("amount", BigInteger, nullable=False),  # negative for withdrawals
    Column("kind", String(16), nullable=False),  # DEPOSIT | WITHDRAWAL | FEE
    Column("reference", String(128), nullable=False),
    _created_at(),
    Index(None, "user_id", "created_at"),
    **MYSQL,
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", String(32), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("last_id", String(STREAM_ID), nullable=False),  # the last Redis stream id applied
    _updated_at(),
    PrimaryKeyConstraint("consumer", "stream"),
    **MYSQL,
)

symbol_progress = Table(
    "symbol_progress",
    metadata,
    Column("symbol", String(SYMBOL), primary_key=True),
    # The last event sequence number of the symbol the batcher applied, written in the same
    # transaction as the rows: a migration moves a symbol's events to another stream, and the
    # batcher applies them in this order whichever stream it reads first. NULL: not known (a
    # database that had history before this table): the batcher takes the next event it
    # reads as where the symbol is.
    Column("seq", BigInteger, nullable=True, autoincrement=False),
    _updated_at(),
    **MYSQL,
)

quarantine = Table(
    "quarantine",
    metadata,
    # A stream entry the database refused (a value a column cannot hold, a constraint
    # broken): the batcher keeps it here whole, with the error, and moves its stream's offset
    # past it in the same transaction, so that one bad entry cannot stop persistence for
    # everyone. Applying it by hand, once fixed, is an operator's decision.
    Column("consumer", String(32), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("entry_id", String(STREAM_ID), nullable=False),
    Column("error", Text, nullable=False),
    Column("events", Integer, nullable=False),  # in the entry (1 for a ledger entry)
    # The entry's fields, msgpack (schema/streams.py): up to a worker batch of events.
    Column(
        "fields", LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=False
    ),  # fmt: skip
    _created_at(),
    PrimaryKeyConstraint("consumer", "stream", "entry_id"),
    **MYSQL,
)
