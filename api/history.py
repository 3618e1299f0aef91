"""The user's account and history: balances (Redis), fills and past orders (the database).

Order history reads the database (PostgreSQL or MySQL, through store/database/), which the
batcher writes every 100 ms, through a small pool per API process (`History`); what the
batcher has not written yet comes from Redis (read-your-writes, api/orders.py), whose order
records are never behind the database's rows. The queries are written once, in SQL both
databases read alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from api.auth import Authenticator
from api.errors import HTTPError, Unavailable, unavailable
from api.request import JSON, Reply, encode, principal, query, query_int, query_symbol
from api.rsgi import HTTPProtocol, Scope
from schema import keys
from schema.codes import ApiError
from schema.messages import OrderType, Side, TimeInForce
from schema.wire import Balances, Fill, Fills, OrderView
from store.balances import balance_list
from store.database import Database, Row, dialect_of, open_database
from store.pipeline import PipelinedRedis

log = logging.getLogger("spot.api")

HISTORY_LIMIT = (1, 500, 100)  # of ?limit= on GET /v1/orders and /v1/fills
DB_POOL = (1, 4)  # connections per API process: history reads are few and short
DB_WAIT_S = 5.0  # to connect, for a pooled connection, for a query; then 503
DB_RETRY_S = 1.0  # while the database is down, one connection attempt a second at most
DATABASE_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)

ORDER_COLUMNS = (
    "order_id, user_id, symbol, side, type, price, quantity, filled, remaining, notional, "
    "status, reason, time_in_force, post_only, client_order_id, created_at, stop_price, "
    "triggered, expire_at_ms"
)
ORDER_BY_ID = f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"


def _orders_query(symbol: bool, status: bool) -> str:
    """A user's orders newest first: a backward scan of (user_id, order_id), the symbol and
    status filters applied on the way. One text per combination of filters rather than
    `$3 IS NULL OR ...`, so that each gets its own plan."""
    where = "user_id = $1"
    if symbol:
        where += " AND symbol = $3"
    if status:
        where += f" AND status = ${4 if symbol else 3}"
    return f"SELECT {ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY order_id DESC LIMIT $2"


def _fills_query(symbol: bool) -> str:
    """A user's trades newest first: the newest `limit` as maker and as taker, each from
    its own index on (role_user_id, created_at), merged. Trades of one flush share their
    created_at; the symbol sequence orders them. The fee is in what the user's side
    received: base for a buy, quote for a sell (the symbols row names them)."""
    extra = " AND symbol = $3" if symbol else ""

    def role(name: str, side: str) -> str:
        role = name.lower()
        return (
            f"(SELECT {role}_order_id AS order_id, symbol, {side} AS side, price, "
            f"quantity, '{name}' AS liquidity, seq, created_at, {role}_fee AS fee FROM trades "
            f"WHERE {role}_user_id = $1{extra} "
            "ORDER BY created_at DESC, seq DESC LIMIT $2)"
        )

    maker = role("MAKER", "CASE taker_side WHEN 'BUY' THEN 'SELL' ELSE 'BUY' END")
    taker = role("TAKER", "taker_side")
    return (
        "SELECT f.*, CASE f.side WHEN 'BUY' THEN s.base ELSE s.quote END AS fee_asset "
        f"FROM ({maker} UNION ALL {taker}) f JOIN symbols s ON s.symbol = f.symbol "
        "ORDER BY f.created_at DESC, f.seq DESC LIMIT $2"
    )


ORDERS_QUERIES = {(a, b): _orders_query(a, b) for a in (False, True) for b in (False, True)}
FILLS_QUERIES = {a: _fills_query(a) for a in (False, True)}


class History:
    """The API process's database pool: opened at start, or on first use after the database
    was down (one attempt at a time, one a second at most)."""

    def __init__(self, url: str | None, unavailable: Unavailable) -> None:
        self.url = url
        # What /readyz and the log call it before it ever answered.
        self.name = DATABASE_NAMES[dialect_of(url)] if url else "the database"
        self.database: Database | None = None
        self._unavailable = unavailable
        self._lock = asyncio.Lock()
        self._retry_at = 0.0

    async def open(self) -> None:
        assert self.url is not None
        low, high = DB_POOL
        try:
            self.database = await open_database(
                self.url, min_size=low, max_size=high, timeout=DB_WAIT_S
            )
        except Exception as exc:  # a database that cannot be reached fails in many ways
            self._retry_at = time.monotonic() + DB_RETRY_S
            self._unavailable.warn(self.name, exc)

    async def close(self) -> None:
        if self.database is not None:
            await self.database.close()

    async def ready(self) -> Database:
        """The pool, or a 503: no database configured, or it cannot be reached."""
        if self.database is not None:
            return self.database
        if self.url is None:
            raise HTTPError(
                ApiError.NO_DATABASE,
                "order history needs a database: this API has no SPOT_DATABASE_URL",
            )
        async with self._lock:
            if self.database is None and time.monotonic() >= self._retry_at:
                await self.open()
        if self.database is None:
            raise unavailable("the database")
        return self.database

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """`sql` with `$1`, `$2` … placeholders, in SQL both databases read alike."""
        database = await self.ready()
        try:
            async with asyncio.timeout(DB_WAIT_S):
                return await database.fetch(sql, *args)
        except Exception as exc:
            if database.fault(exc) is None:
                raise
            self._unavailable.warn(database.server, exc)
            raise unavailable("the database") from None


def row_view(row: Row) -> OrderView:
    filled = row["filled"]
    return OrderView(
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        price=row["price"],
        quantity=row["quantity"],
        remaining=row["remaining"],
        filled=filled,
        average_price=row["notional"] // filled if filled else None,
        time_in_force=TimeInForce(row["time_in_force"]),
        post_only=bool(row["post_only"]),  # MySQL's BOOLEAN is a TINYINT
        client_order_id=row["client_order_id"],
        status=row["status"],
        created_ms=ms(row["created_at"]),
        reason=row["reason"],
        stop_price=row["stop_price"],
        triggered=row["triggered"],
        expire_at_ms=row["expire_at_ms"],
    )


def _fill(row: Row) -> Fill:
    return Fill(
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        price=row["price"],
        quantity=row["quantity"],
        liquidity=row["liquidity"],
        seq=row["seq"],
        created_ms=ms(row["created_at"]),
        fee=row["fee"],
        fee_asset=row["fee_asset"],
    )


def ms(moment: datetime) -> int:
    """A database timestamp (timezone-aware) in ms since the epoch."""
    return (moment - EPOCH) // MILLISECOND


class Accounts:
    """GET /v1/balances and GET /v1/fills."""

    def __init__(self, auth: Authenticator, reads: PipelinedRedis, history: History) -> None:
        self.auth = auth
        self.reads = reads
        self.history = history

    async def balances(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        fields = await self.reads.hgetall(keys.balance(user))
        return 200, encode(Balances(user_id=user, balances=balance_list(fields))), JSON

    async def fills(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        q = query(scope)
        symbol = query_symbol(q)
        limit = query_int(q, "limit", HISTORY_LIMIT)
        filters = [symbol] if symbol is not None else []
        rows = await self.history.fetch(FILLS_QUERIES[symbol is not None], user, limit, *filters)
        return 200, encode(Fills(fills=[_fill(row) for row in rows])), JSON
