"""GET /v1/ledger: every change to the caller's balances, newest first, paged by a cursor.

Shaped as exchanges shape theirs (Coinbase Exchange's account ledger: transfer, match,
fee and rebate entries, each one asset's change, paged by an id): DEPOSIT and WITHDRAWAL
from the `ledger` table; from each of the caller's `trades` rows a TRADE entry for what
the side received, one for what it paid, and a FEE (negative) or REBATE (positive) when
it had one. Per asset the entries add up to the balance (available + locked). Both tables
are written by the batcher, so the ledger is as fresh as GET /v1/fills.

Order: the rows' created_at (when the batcher wrote them), then a key that makes it total
(the source; the stream id of a transfer, symbol and seq of a trade; the part of a trade).
The cursor is that key of the last entry of a page, opaque to clients (base64 of JSON).
Each source is read from its index on (user, created_at), at most `limit` + 1 rows at or
before the cursor each; the entries they make are merged here, so the queries are the same
on any SQL database and no trade's entries are split by SQL.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from api.auth import Authenticator
from api.errors import malformed
from api.history import EPOCH, HISTORY_LIMIT, History
from api.request import JSON, Reply, encode, principal, query, query_int, query_text
from api.rsgi import HTTPProtocol, Scope
from schema.messages import Side
from schema.wire import Ledger, LedgerEntry, LedgerType
from store.database import Row

MICROSECOND = timedelta(microseconds=1)
MAX_CURSOR = 256  # characters: a cursor of ours is under 100
MAX_KEY = 64  # characters of a stream id (schema.tables.STREAM_ID) or a symbol
ASSET_LENGTH = 16  # schema.tables.ASSET
TRANSFER, TRADE = 0, 1  # the sources, in the order of the key
# A trade's parts, in the order of the key: what the side received, paid, and its fee.
RECEIVED, PAID, FEE = 0, 1, 2

# (created_at µs, source, entry id or symbol, 0 or seq, part)
Key = tuple[int, int, str, int, int]
_cursor = msgspec.json.Decoder(tuple[int, int, str, int, int])
_encode_key = msgspec.json.Encoder().encode
# Past this a cursor's time is no datetime (and no created_at of ours).
_LAST_US = (datetime(9999, 1, 1, tzinfo=UTC) - EPOCH) // MICROSECOND
_base64url = re.compile(r"[A-Za-z0-9_-]+")  # the OpenAPI document's pattern of ?cursor=


def _queries(cursor: bool, asset: bool, dialect: str) -> tuple[str, str]:
    """The transfers, and the trades as maker and as taker, of user $1, newest first, at
    most $2 rows from each; at or before the cursor ($3 created_at, $4 source, $5 entry id
    or symbol, $6 seq) if there is one; of one asset ($7, or $3 without a cursor) if asked.
    `COLLATE "C"`: text keys compare by bytes, as Python compares them when it merges (on
    MySQL the tables' utf8mb4_bin does that already; nor does it want the casts)."""
    n = 7 if cursor else 3
    pg = dialect == "postgresql"
    c = ' COLLATE "C"' if pg else ""
    source_arg, key_arg, seq_arg, zero = (
        ("$4::int", "$5::text", "$6::bigint", "0::bigint") if pg else ("$4", "$5", "$6", "0")
    )

    def before(source: int, k1: str, k2: str) -> str:
        if not cursor:
            return ""
        return (
            f" AND created_at <= $3 AND (created_at, {source}, {k1}{c}, {k2}) <= "
            f"($3, {source_arg}, {key_arg}{c}, {seq_arg})"
        )

    transfers = (
        "SELECT entry_id, asset, amount, reference, created_at FROM ledger "
        f"WHERE user_id = $1{f' AND asset = ${n}' if asset else ''}"
        f"{before(TRANSFER, 'entry_id', zero)} "
        f"ORDER BY created_at DESC, entry_id{c} DESC LIMIT $2"
    )
    in_asset = (
        f" AND symbol IN (SELECT symbol FROM symbols WHERE base = ${n} OR quote = ${n})"
        if asset
        else ""
    )

    def role(name: str, side: str) -> str:
        r = name.lower()
        return (
            f"(SELECT symbol, seq, price, quantity, {r}_order_id AS order_id, {side} AS side, "
            f"'{name}' AS liquidity, {r}_fee AS fee, created_at FROM trades "
            f"WHERE {r}_user_id = $1{in_asset}{before(TRADE, 'symbol', 'seq')} "
            f"ORDER BY created_at DESC, symbol{c} DESC, seq DESC LIMIT $2)"
        )

    maker = role("MAKER", "CASE taker_side WHEN 'BUY' THEN 'SELL' ELSE 'BUY' END")
    taker = role("TAKER", "taker_side")
    trades = (
        f"SELECT t.*, s.base, s.quote FROM ({maker} UNION ALL {taker}) t "
        "JOIN symbols s ON s.symbol = t.symbol"
    )
    return transfers, trades


QUERIES = {
    (c, a, d): _queries(c, a, d)
    for c in (False, True)
    for a in (False, True)
    for d in ("postgresql", "mysql")
}


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(_encode_key(key)).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    if len(text) > MAX_CURSOR or not _base64url.fullmatch(text):
        raise malformed("cursor is not one this API gave")
    try:
        key = _cursor.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise malformed("cursor is not one this API gave") from None
    created, source, k1, k2, part = key
    if (
        not 0 <= created < _LAST_US
        or source not in (TRANSFER, TRADE)
        or len(k1) > MAX_KEY
        or not 0 <= k2 < 2**63
        or part not in (RECEIVED, PAID, FEE)
    ):
        raise malformed("cursor is not one this API gave")
    return key


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _transfer(row: Row) -> list[tuple[Key, LedgerEntry]]:
    entry_id = row["entry_id"]
    key = (_us(row["created_at"]), TRANSFER, entry_id, 0, 0)
    entry = LedgerEntry(
        id=entry_id,
        type="WITHDRAWAL" if row["amount"] < 0 else "DEPOSIT",
        asset=row["asset"],
        amount=row["amount"],
        created_ms=key[0] // 1000,
        reference=row["reference"],
    )
    return [(key, entry)]


def _trade(row: Row) -> list[tuple[Key, LedgerEntry]]:
    symbol, seq, side = row["symbol"], row["seq"], Side(row["side"])
    quantity, notional, fee = row["quantity"], row["price"] * row["quantity"], row["fee"]
    created = _us(row["created_at"])
    if side is Side.BUY:
        received, paid = (row["base"], quantity), (row["quote"], -notional)
    else:
        received, paid = (row["quote"], notional), (row["base"], -quantity)
    parts: list[tuple[int, LedgerType, str, int]] = [
        (RECEIVED, "TRADE", *received),
        (PAID, "TRADE", *paid),
    ]
    if fee:
        parts.append((FEE, "FEE" if fee > 0 else "REBATE", received[0], -fee))
    return [
        (
            (created, TRADE, symbol, seq, part),
            LedgerEntry(
                id=f"{symbol}:{seq}:{part}",
                type=kind,
                asset=asset,
                amount=amount,
                created_ms=created // 1000,
                symbol=symbol,
                seq=seq,
                order_id=row["order_id"],
                side=side,
                price=row["price"],
                quantity=quantity,
                liquidity=row["liquidity"],
            ),
        )
        for part, kind, asset, amount in parts
    ]


class LedgerRoutes:
    """GET /v1/ledger[?asset=&limit=&cursor=]."""

    def __init__(self, auth: Authenticator, history: History) -> None:
        self.auth = auth
        self.history = history

    async def ledger(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        q = query(scope)
        limit = query_int(q, "limit", HISTORY_LIMIT)
        asset = query_text(q, "asset")
        if asset is not None and not 0 < len(asset) <= ASSET_LENGTH:
            raise malformed(f"asset must be 1 to {ASSET_LENGTH} characters")
        text = query_text(q, "cursor")
        cursor = None if text is None else decode_cursor(text)
        entries = await self.page(user, limit, asset, cursor)
        more = len(entries) > limit
        entries = entries[:limit]
        next_cursor = encode_cursor(entries[-1][0]) if more else None
        body = Ledger(entries=[entry for _, entry in entries], next_cursor=next_cursor)
        return 200, encode(body), JSON

    async def page(
        self, user: str, limit: int, asset: str | None, cursor: Key | None
    ) -> list[tuple[Key, LedgerEntry]]:
        """Up to limit + 1 entries after `cursor`, newest first (one more: is there more?).

        Each query reads limit + 2 events of each source: every event before the cursor's
        own makes at least one entry (of `asset` too: a trade of a symbol that has it), and
        the cursor's own event (read again, at or before) may make none left."""
        dialect = (await self.history.ready()).dialect
        transfers, trades = QUERIES[cursor is not None, asset is not None, dialect]
        args: list[Any] = [user, limit + 2]
        if cursor is not None:
            created, source, k1, k2, _ = cursor
            args += [EPOCH + created * MICROSECOND, source, k1, k2]
        if asset is not None:
            args.append(asset)
        entries = [e for row in await self.history.fetch(transfers, *args) for e in _transfer(row)]
        entries += [e for row in await self.history.fetch(trades, *args) for e in _trade(row)]
        entries = [
            e
            for e in entries
            if (cursor is None or e[0] < cursor) and (asset is None or e[1].asset == asset)
        ]
        entries.sort(key=_by_key, reverse=True)
        return entries[: limit + 1]


def _by_key(item: tuple[Key, LedgerEntry]) -> Key:
    return item[0]
