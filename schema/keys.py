"""Every Redis key name Spot uses, in one place. Code asks here; it never builds keys inline.

The Lua scripts get prefixes from here as arguments wherever a key is only known
inside the script (the shard a route points at, the user an order belongs to).
"""

import zlib

# -- routing ------------------------------------------------------------------------------
ROUTE = "route:"  # route:{symbol} -> hash shard, status (ACTIVE|MIGRATING), epoch
ORDERS = "orders:"  # orders:{shard} -> stream of commands for the shard's worker
PENDING = "pending:"  # pending:{symbol} -> stream of commands held while migrating
MIGRATION = "migration:"  # migration:{id} -> hash: the migration state machine (control/)
MIGRATING = "migrating:"  # migrating:{symbol} -> id of the one migration moving the symbol
MIGRATION_IDS = "seq:migration"  # counter for migration ids
HANDOFF = "handoff:"  # handoff:{migration id} -> the drained book's snapshot (OrderBook bytes)
HANDOFF_KEPT_S = 3_600  # after its migration ended: outlives any recovery that may re-read it
ORDER_IDS = "seq:order_id"  # counter; API processes take blocks of ids from it

# -- accounts -----------------------------------------------------------------------------
BALANCE = "balance:"  # balance:{user} -> hash "avail:{asset}" / "locked:{asset}", and
OPEN_ORDERS = "open"  # its count of the user's open orders: "open" in all, "open:{symbol}"
ORDER = "order:"  # order:{id} -> hash of what the user sees of the order
USER_ORDERS = "user_orders:"  # user_orders:{user} -> list of recent order ids, newest first
CLIENT_ORDER = "cid:"  # cid:{user}:{client_order_id} -> order id (duplicate check)
LEDGER = "ledger"  # stream of deposits and withdrawals, for the batcher
API_KEY = "apikey:"  # apikey:{key} -> hash user_id, permissions, created_ms (no secret)
USER_API_KEYS = "apikeys:"  # apikeys:{user} -> set of the user's API keys
LISTEN_KEY = "listenkey:"  # listenkey:{key} -> user id of a Binance user data stream (1 h TTL)
USER_LISTEN_KEY = "listenkeys:"  # listenkeys:{user} -> the user's live listen key (1 h TTL)
FEE_TIERS = "fee_tiers"  # hash user -> schema.fees.FeeTier JSON: the user's own fee rates
FEE_TIERS_VERSION = "fee_tiers:version"  # counter, bumped with every change to FEE_TIERS

# -- matching workers ---------------------------------------------------------------------
EVENTS = "events:"  # events:{shard} -> stream of events
APPLIED = "applied:"  # applied:{shard} -> last orders-stream id settled (the watermark)
SNAPSHOT = "snapshot:"  # snapshot:{shard} -> hash id, books
OWNER = "owner:"  # owner:{shard} -> lease token of the one worker applying the shard
SYMBOLS = "symbols"  # hash symbol -> SymbolSpec JSON
# hash asset -> its number of decimals: how many minor units make one unit (USD 2: cents).
# Set once, before the first symbol trading the asset is listed (store/symbols.py).
ASSETS = "assets"

# -- batcher ------------------------------------------------------------------------------
# hash: the last flush, for `spot status` and /metrics; and running totals since the hash
# was made, orders_total (order rows) and trades_total, for the console's rates
BATCHER_STATS = "batcher:stats"
BATCHER_FLUSHES = "batcher:flushes"  # list: recent flushes, newest first, for benchmarks
# list: the newest entries the database refused and the batcher quarantined, newest first
BATCHER_QUARANTINE = "batcher:quarantine"

# -- market data --------------------------------------------------------------------------
DEPTH = "depth:"  # depth:{symbol} -> JSON {"bids": [[price, qty]...], "asks": ...}
TRADES = "trades:"  # trades:{symbol} -> list of recent trades, newest first
LAST_PRICE = "last:"  # last:{symbol} -> last trade price
RATE = "rate:"  # rate:{unix second} -> hash symbol -> orders routed that second


def route(symbol: str) -> str:
    return ROUTE + symbol


def orders(shard: int) -> str:
    return f"{ORDERS}{shard}"


def pending(symbol: str) -> str:
    return PENDING + symbol


def migration(migration_id: str) -> str:
    return MIGRATION + migration_id


def migrating(symbol: str) -> str:
    return MIGRATING + symbol


def handoff(migration_id: str) -> str:
    return HANDOFF + migration_id


def events(shard: int) -> str:
    return f"{EVENTS}{shard}"


def applied(shard: int) -> str:
    return f"{APPLIED}{shard}"


def snapshot(shard: int) -> str:
    return f"{SNAPSHOT}{shard}"


def owner(shard: int) -> str:
    return f"{OWNER}{shard}"


def balance(user: str) -> str:
    return BALANCE + user


def available(asset: str) -> str:
    return "avail:" + asset


def locked(asset: str) -> str:
    return "locked:" + asset


def api_key(key: str) -> str:
    return API_KEY + key


def user_api_keys(user: str) -> str:
    return USER_API_KEYS + user


def listen_key(key: str) -> str:
    return LISTEN_KEY + key


def user_listen_key(user: str) -> str:
    return USER_LISTEN_KEY + user


def open_orders(symbol: str) -> str:
    """The balance hash's field counting the user's open orders on `symbol`."""
    return f"{OPEN_ORDERS}:{symbol}"


def order(order_id: int) -> str:
    return f"{ORDER}{order_id}"


def user_orders(user: str) -> str:
    return USER_ORDERS + user


def client_order(user: str, client_order_id: str) -> str:
    return f"{CLIENT_ORDER}{user}:{client_order_id}"


def depth(symbol: str) -> str:
    return DEPTH + symbol


def trades(symbol: str) -> str:
    return TRADES + symbol


def last_price(symbol: str) -> str:
    return LAST_PRICE + symbol


def home_shard(symbol: str, shards: int) -> int:
    """Where a symbol lives until a migration moves it: the route table's seed."""
    return zlib.crc32(symbol.encode()) % shards


# -- migration index (control.migration, the admin API, `spot status`) ------------------------
# Ids of running migrations by creation time (ms): added when a migration starts, removed
# when it finishes. Few members: a symbol has at most one migration running.
MIGRATIONS_RUNNING = "migrations:running"
# Ids of finished (DONE, ROLLED_BACK) migrations by finish time (ms), trimmed by age and
# count when a migration finishes, in step with the hashes' expiry.
MIGRATIONS_FINISHED = "migrations:finished"
# hash: DONE / ROLLED_BACK -> how many migrations ended so, last_paused_ms, last_id
MIGRATION_STATS = "migrations:stats"


# -- rebalancer (control/rebalancer.py) ----------------------------------------------------
# hash, written by each worker about once a second (workers/worker.py): per shard,
# "{shard}:commands" and "{shard}:busy_us" (cumulative since the hash was made: commands
# applied and wall microseconds spent settling them) and "{shard}:at_ms" (last written).
# A shard's measured capacity is commands per busy second.
SHARD_STATS = "shard:stats"
# hash: the rebalancer's last evaluation. Per shard "{shard}:load" (fraction of capacity),
# "{shard}:level" (NORMAL|WARN|PREPARE|MOVE), "{shard}:capacity" (commands/s),
# "{shard}:measured" (1: measured, 0: SPOT_SHARD_CAPACITY), "{shard}:orders_per_s";
# the decision: code, reason, symbol, from, to, at_ms, dry_run; counters evaluations,
# moves, moves_failed; the last move: last_move_symbol, last_move_from, last_move_to,
# last_move_state, last_move_id, last_move_ms.
REBALANCER = "rebalancer:state"
# stream, capped near 1000 entries: each decision that differs from the one before and
# each move's outcome, fields at_ms, code, reason, symbol, from, to (and state, id).
REBALANCER_DECISIONS = "rebalancer:decisions"
