"""`spot audit`: once everything has caught up, Redis and the database must agree and
money must be conserved (DESIGN.md §3). Prints every difference; any means failure.

The database is PostgreSQL or MySQL (store/database/); the queries are written once, in
SQL both read alike."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from batcher.batcher import CONSUMER
from schema import keys
from schema.fees import FEE_ACCOUNT
from schema.orders import OPEN_STATUSES, OrderStatus
from store.balances import by_asset
from store.database import Database
from store.symbols import load_specs

CHECKS = {
    "conservation": "per asset, users' balances plus the fee account's equal deposits minus "
    "withdrawals, in Redis and in the database",
    "balances": "every balance in Redis equals the database's",
    "non-negative": "no user's balance is negative (the fee account's may be: schema/fees.py)",
    "fees": "the fee account holds the fees the trades charged less their rebates",
    "locked": "locked funds equal what open orders hold",
    "fills": "every order's filled quantity equals the sum of its trades",
    "quarantine": "the batcher quarantined no entry the database refused",
}

# Per asset, what the trades charged: each side's fee is in the asset it received (the
# buyer's in base, the seller's in quote), a maker's rebate negative.
FEES_CHARGED = """
SELECT asset, SUM(fee) AS total FROM (
    SELECT CASE t.taker_side WHEN 'BUY' THEN s.base ELSE s.quote END AS asset,
           t.taker_fee AS fee
    FROM trades t JOIN symbols s ON s.symbol = t.symbol
    UNION ALL
    SELECT CASE t.taker_side WHEN 'BUY' THEN s.quote ELSE s.base END, t.maker_fee
    FROM trades t JOIN symbols s ON s.symbol = t.symbol
) f GROUP BY asset
"""

# The statuses that hold funds in the database: every open one but NEW (an order is written
# when the book has taken it).
_HOLDING = ", ".join(f"'{s}'" for s in OPEN_STATUSES if s is not OrderStatus.NEW)
OPEN_ORDERS = f"""
SELECT order_id, user_id, symbol, side, price, remaining FROM orders WHERE status IN ({_HOLDING})
"""

FILLS_VS_TRADES = """
WITH fills AS (
    SELECT order_id, SUM(quantity) AS quantity, SUM(price * quantity) AS notional FROM (
        SELECT maker_order_id AS order_id, quantity, price FROM trades
        UNION ALL
        SELECT taker_order_id, quantity, price FROM trades
    ) t GROUP BY order_id
)
SELECT o.order_id, o.filled, o.notional, f.quantity, f.notional AS traded_notional
FROM orders o LEFT JOIN fills f ON f.order_id = o.order_id
WHERE o.filled <> COALESCE(f.quantity, 0) OR o.notional <> COALESCE(f.notional, 0)
LIMIT 20
"""

# A quarantined entry's effects are in Redis and not in the database: the other checks
# show what differs, this one says why.
QUARANTINED = "SELECT stream, entry_id, error FROM quarantine ORDER BY created_at LIMIT 20"


async def caught_up(redis: Any, db: Database, shards: int) -> list[str]:
    """What has not caught up yet: workers behind their streams, the batcher behind its."""
    behind = []
    for n in range(shards):
        last = (
            await redis.xinfo_stream(keys.orders(n)) if await redis.exists(keys.orders(n)) else None
        )
        applied = (await redis.get(keys.applied(n)) or b"0-0").decode()
        if last is not None and last["last-generated-id"].decode() != applied and last["length"]:
            behind.append(f"worker of shard {n}")
    async with db.session() as session:
        offsets = await session.offsets(CONSUMER)
    for stream in [keys.events(n) for n in range(shards)] + [keys.LEDGER]:
        if not await redis.exists(stream):
            continue
        last = (await redis.xinfo_stream(stream))["last-generated-id"].decode()
        if offsets.get(stream, "0-0") != last:
            behind.append(f"batcher on {stream}")
    return behind


async def wait_caught_up(redis: Any, db: Database, shards: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        behind = await caught_up(redis, db, shards)
        if not behind or time.monotonic() > deadline:
            return behind
        await asyncio.sleep(0.1)


async def redis_balances(redis: Any) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    async for key in redis.scan_iter(match=keys.BALANCE + "*", count=1000):
        user = key.decode()[len(keys.BALANCE) :]
        for asset, amounts in by_asset(await redis.hgetall(key)).items():
            out[(user, asset)] = amounts
    return out


async def audit(redis: Any, db: Database) -> dict[str, list[str]]:
    """Every check's differences (empty lists: clean)."""
    found: dict[str, list[str]] = {name: [] for name in CHECKS}
    in_redis = await redis_balances(redis)
    rows = await db.fetch("SELECT user_id, asset, available, locked FROM balances")
    in_db = {(r["user_id"], r["asset"]): [r["available"], r["locked"]] for r in rows}
    for key in sorted(set(in_redis) | set(in_db)):
        a, b = in_redis.get(key, [0, 0]), in_db.get(key, [0, 0])
        if a != b:
            found["balances"].append(f"{key}: redis {a} != database {b}")
        if min(a + b) < 0 and key[0] != FEE_ACCOUNT:
            found["non-negative"].append(f"{key}: redis {a}, database {b}")
    funded, charged = await _funded_and_charged(db)
    for store, balances in (("redis", in_redis), ("database", in_db)):
        found["conservation"] += _conservation(store, balances, funded)
        found["fees"] += _fee_account(store, balances, charged)
    held = await locked_by_open_orders(redis, db)
    for key in sorted(set(held) | {k for k, v in in_db.items() if v[1]}):
        if held.get(key, 0) != in_db.get(key, [0, 0])[1]:
            found["locked"].append(
                f"{key}: locked {in_db.get(key, [0, 0])[1]} != open orders {held.get(key, 0)}"
            )
    for r in await db.fetch(FILLS_VS_TRADES):
        found["fills"].append(
            f"order {r['order_id']}: filled {r['filled']} / notional {r['notional']}, "
            f"trades {r['quantity']} / {r['traded_notional']}"
        )
    for r in await db.fetch(QUARANTINED):
        found["quarantine"].append(f"{r['stream']} {r['entry_id']}: {r['error']}")
    return found


async def _funded_and_charged(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """Per asset, deposits minus withdrawals; and what the fee account should hold: the
    trades' fees, and whatever reached it through the ledger (no API transfer can)."""
    ledger = await db.fetch(
        "SELECT user_id = $1 AS fees, asset, SUM(amount) AS total FROM ledger "
        "GROUP BY user_id = $1, asset",
        FEE_ACCOUNT,
    )
    charged = {r["asset"]: int(r["total"]) for r in await db.fetch(FEES_CHARGED)}
    funded: dict[str, int] = {}
    for r in ledger:
        asset, total = r["asset"], int(r["total"])
        funded[asset] = funded.get(asset, 0) + total
        if r["fees"]:
            charged[asset] = charged.get(asset, 0) + total
    return funded, charged


def _fee_account(
    store: str, held: dict[tuple[str, str], list[int]], charged: dict[str, int]
) -> list[str]:
    account = {asset: v for (user, asset), v in held.items() if user == FEE_ACCOUNT}
    problems = []
    for asset in sorted(set(account) | {a for a, total in charged.items() if total}):
        balance, due = account.get(asset, [0, 0]), charged.get(asset, 0)
        if balance != [due, 0]:
            problems.append(f"{asset}: {store} fee account {balance} != fees charged {due}")
    return problems


def _conservation(
    store: str, held: dict[tuple[str, str], list[int]], funded: dict[str, int]
) -> list[str]:
    """Per asset, users' available + locked plus the fee account's against the ledger."""
    users: dict[str, int] = {}
    fees: dict[str, int] = {}
    for (user, asset), (available, locked) in held.items():
        totals = fees if user == FEE_ACCOUNT else users
        totals[asset] = totals.get(asset, 0) + available + locked
    problems = []
    for asset in sorted(set(funded) | set(users) | set(fees)):
        user_total, fee_total = users.get(asset, 0), fees.get(asset, 0)
        if user_total + fee_total != funded.get(asset, 0):
            problems.append(
                f"{asset}: {store} users {user_total} + fee account {fee_total} != "
                f"deposits - withdrawals {funded.get(asset, 0)}"
            )
    return problems


async def locked_by_open_orders(redis: Any, db: Database) -> dict[tuple[str, str], int]:
    """What the open orders and untriggered stops in the database hold: a buy price ×
    remaining of the quote, a sell its remaining base. An untriggered STOP_MARKET buy has no
    price: it holds at its protection price, which only its Redis record keeps (an open
    order's record lasts while it is open)."""
    specs = await load_specs(redis)
    held: dict[tuple[str, str], int] = {}
    for r in await db.fetch(OPEN_ORDERS):
        spec = specs[r["symbol"]]
        if r["side"] == "BUY":
            price = r["price"]
            if price is None:  # an untriggered STOP_MARKET
                price = int(await redis.hget(keys.order(r["order_id"]), "protection_price") or 0)
            key, amount = (r["user_id"], spec.quote), price * r["remaining"]
        else:
            key, amount = (r["user_id"], spec.base), r["remaining"]
        held[key] = held.get(key, 0) + amount
    return held


def render(found: dict[str, list[str]], behind: list[str]) -> str:
    lines = [f"not caught up: {', '.join(behind)}"] if behind else []
    for name, problems in found.items():
        lines.append(f"{'ok  ' if not problems else 'FAIL'} {name}: {CHECKS[name]}")
        lines += [f"       {p}" for p in problems]
    return "\n".join(lines)
