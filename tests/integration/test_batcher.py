"""The batcher on real Redis and each database (PostgreSQL, MySQL): trades land once, the
database agrees with Redis, a batcher killed at any moment loses and duplicates nothing,
the audit both passes a clean run and catches a corrupted balance, and entries the
database refuses are quarantined while the rest goes on. One suite, run once per database
(`backend_url`, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from api.metrics import Metrics
from api.order_gateway import OrderGateway
from batcher.batcher import CONSUMER, Batcher
from control import migration
from schema import keys
from schema.codes import CancelReason, RejectReason
from schema.fees import FEE_ACCOUNT
from schema.messages import (
    Accepted,
    Action,
    Canceled,
    OrderType,
    Rejected,
    Side,
    TimeInForce,
    Trade,
)
from schema.orders import TERMINAL, OrderRecord
from schema.symbols import SymbolSpec
from schema.tables import metadata
from spot.audit import audit, caught_up
from spot.status import batcher_status
from store import db as migrations
from store.database import Database, DatabaseSettingsError, empty, open_database
from store.symbols import list_symbol
from tests.integration.flow import SPEC, never_crashed, random_flow
from workers.worker import Worker

SHARDS = 10
_encode = msgspec.msgpack.Encoder().encode
TABLES = tuple(metadata.tables)  # every table, emptied before each test


@pytest.fixture(scope="session")
def migrated(backend_url: str) -> str:
    migrations.upgrade(backend_url)
    return backend_url


@pytest.fixture
def db(migrated: str, aio: asyncio.Runner):
    async def setup() -> Database:
        database = await open_database(migrated, min_size=1, max_size=3)
        await empty(database, list(TABLES))
        return database

    database = aio.run(setup())
    yield database
    aio.run(database.close())


@pytest.fixture
def market(redis, aio):
    async def setup():
        shard = await list_symbol(redis, SPEC, SHARDS)
        router = OrderGateway(redis)
        for user in ("alice", "bob"):
            await router.transfer(user, "USD", 1_000_000_000, "seed")
            await router.transfer(user, "AAPL", 1_000_000, "seed")
        # stepped by hand, never renewing: a lease that outlives the test on a busy machine
        worker = Worker(redis, [shard], batch=50, lease_ms=600_000)
        await worker._acquire_leases(asyncio.Event())
        await worker.load_specs()
        return router, shard, worker

    return aio.run(setup())


async def drain(worker: Worker, batcher: Batcher, redis, db) -> None:
    """Step the worker and the batcher until nothing is left behind."""
    for _ in range(1_000):
        await worker.step()
        await batcher.step()
        if not await caught_up(redis, db, SHARDS):
            return
    raise AssertionError("never caught up")


async def test_trades_land_once_and_the_database_agrees_with_redis(redis, db, market):
    router, shard, worker = market
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    sent: list = []
    await random_flow(router, random.Random(3), sent, lambda n: n >= 400)
    await drain(worker, batcher, redis, db)
    _, expected, _ = never_crashed(sent)
    trades = [e for e in expected if type(e) is Trade]
    assert len(trades) > 20
    rows = await db.fetch("SELECT symbol, seq, price, quantity FROM trades ORDER BY seq")
    assert [tuple(r.values()) for r in rows] == [
        (t.symbol, t.seq, t.price, t.quantity) for t in trades
    ]
    assert await audit(redis, db) == {name: [] for name in await audit(redis, db)}

    # A redelivery (positions rewound, as after a crash before the offsets were read)
    # is refused against the offsets in the database: nothing is written twice.
    batcher.positions = dict.fromkeys(batcher.positions, "0-0")
    await redis.xadd(keys.events(shard), {"id": "0-1", "first": "0-1", "events": b"\x90",
                                          "balances": b"\x90"})  # fmt: skip
    await batcher.step()
    await batcher.step()
    assert await db.fetchval("SELECT count(*) FROM trades") == len(trades)


FEE_SPEC = msgspec.structs.replace(SPEC, symbol="FEE", maker_fee_bps=7, taker_fee_bps=25)


async def test_trades_carry_their_fees_and_the_fee_account_is_persisted(redis, db, market):
    router, _, _ = market
    shard = await list_symbol(redis, FEE_SPEC, SHARDS)
    worker = Worker(redis, [shard], batch=50)
    await worker._acquire_leases(asyncio.Event())
    await worker.load_specs()
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    sent: list = []
    await random_flow(router, random.Random(5), sent, lambda n: n >= 300, FEE_SPEC)
    await drain(worker, batcher, redis, db)
    _, expected, settlement = never_crashed(sent, [FEE_SPEC])
    trades = [e for e in expected if type(e) is Trade]
    assert len(trades) > 20 and all(t.taker_fee > 0 for t in trades)
    rows = await db.fetch(
        "SELECT seq, maker_fee, taker_fee FROM trades WHERE symbol = 'FEE' ORDER BY seq"
    )
    assert [tuple(r.values()) for r in rows] == [(t.seq, t.maker_fee, t.taker_fee) for t in trades]
    fees = await db.fetch(
        "SELECT asset, available, locked FROM balances WHERE user_id = $1 ORDER BY asset",
        FEE_ACCOUNT,
    )
    collected = {a: d for (u, a), d in settlement.balances.items() if u == FEE_ACCOUNT}
    assert [tuple(r.values()) for r in fees] == [(a, *collected[a]) for a in sorted(collected)]
    assert collected["AAPL"][0] > 0 and collected["USD"][0] > 0
    [symbol] = await db.fetch("SELECT * FROM symbols WHERE symbol = 'FEE'")
    assert symbol["taker_fee_bps"] == 25
    assert await audit(redis, db) == {name: [] for name in await audit(redis, db)}


@pytest.fixture
def pg_session(database_url: str, aio: asyncio.Runner):
    """PostgreSQL through a pool of one connection, migrated and emptied (before `market`
    takes its worker's lease, which lasts 3 s unrenewed)."""
    migrations.upgrade(database_url)

    async def setup() -> Database:
        database = await open_database(database_url, min_size=1, max_size=1)
        await empty(database, list(TABLES))
        return database

    database = aio.run(setup())
    yield database
    aio.run(database.close())


async def test_every_flush_plans_its_statements_for_the_values_it_writes(redis, pg_session, market):
    """PostgreSQL gives a prepared statement one generic plan after five runs, planned for
    the tables as they were: the UPDATE of orders by id, planned while orders was nearly
    empty, scanned the whole table on every flush as it grew (store/db.py POOL_SETTINGS)."""
    router, _, worker = market
    # One connection: pg_prepared_statements shows the statements of its own session.
    session = pg_session
    batcher = Batcher(redis, session, list(range(SHARDS)), batch=20, interval_s=0.01)
    await batcher.start()
    await random_flow(router, random.Random(11), [], lambda n: n >= 1_000)
    await drain(worker, batcher, redis, session)
    plans = await session.fetch(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
    )
    updates = [p for p in plans if p["statement"].lstrip().startswith("UPDATE orders")]
    assert updates and updates[0]["custom_plans"] > 5, plans  # past where generic ones start
    # A statement without parameters has only the one plan, which counts as generic.
    assert [p["statement"] for p in plans if p["generic_plans"] and "$1" in p["statement"]] == []


async def test_audit_catches_a_corrupted_balance(redis, db, market):
    router, _, worker = market
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await random_flow(router, random.Random(5), [], lambda n: n >= 100)
    await drain(worker, batcher, redis, db)
    assert not any((await audit(redis, db)).values())
    await redis.hincrby(keys.balance("bob"), keys.available("USD"), 7)
    found = await audit(redis, db)
    assert any("('bob', 'USD')" in p for p in found["balances"])
    assert any("USD: redis" in p for p in found["conservation"])
    assert not any("USD: database" in p for p in found["conservation"])


REBATE_SPEC = msgspec.structs.replace(SPEC, symbol="REBATE", maker_fee_bps=-9, taker_fee_bps=9)


async def test_audit_counts_the_fee_account_and_catches_fees_gone_astray(redis, db, market):
    router, _, _ = market
    shard = await list_symbol(redis, REBATE_SPEC, SHARDS)
    worker = Worker(redis, [shard], batch=50)
    await worker._acquire_leases(asyncio.Event())
    await worker.load_specs()
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await random_flow(router, random.Random(11), [], lambda n: n >= 200, REBATE_SPEC)
    await drain(worker, batcher, redis, db)
    # Rebates as large as the fees, paid in the other asset: the fee account is short
    # of one of them, which is no failure.
    account = await redis.hgetall(keys.balance(FEE_ACCOUNT))
    assert min(int(v) for v in account.values()) < 0
    assert not any((await audit(redis, db)).values()), await audit(redis, db)

    # A fee paid out to a user, in both stores alike: conserved, and yet caught.
    for user, amount in ((FEE_ACCOUNT, -3), ("bob", 3)):
        await redis.hincrby(keys.balance(user), keys.available("USD"), amount)
        await db.execute(
            "UPDATE balances SET available = available + $3 WHERE user_id = $1 AND asset = $2",
            user,
            "USD",
            amount,
        )
    found = await audit(redis, db)
    assert [name for name, problems in found.items() if problems] == ["fees"]
    assert any(p.startswith("USD: redis fee account") for p in found["fees"])
    assert any(p.startswith("USD: database fee account") for p in found["fees"])


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spot.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_batcher_killed_before_during_and_after_commits(
    redis, redis_url, migrated, db, market
):
    router, shard, worker = market
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPOT_")},
        "SPOT_REDIS_URL": redis_url,
        "SPOT_DATABASE_URL": migrated,
        "SPOT_SHARDS": str(SHARDS),
        "SPOT_BATCHER_BATCH": "20",  # many small flushes: kills land in every phase
        "SPOT_BATCHER_INTERVAL_S": "0.02",
    }
    rng = random.Random(11)
    sent: list = []
    kills = 0
    flow = asyncio.create_task(
        random_flow(router, rng, sent, lambda n: kills >= 4 and n % 200 == 0)
    )
    applying = asyncio.create_task(_keep_stepping(worker, flow))
    batcher = start("batcher", env=env)
    try:
        while kills < 4:
            flushes = await redis.hget(keys.BATCHER_STATS, "flushes")
            while await redis.hget(keys.BATCHER_STATS, "flushes") == flushes:
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0, 0.03))
            batcher.send_signal(signal.SIGKILL)
            batcher.wait()
            kills += 1
            batcher = start("batcher", env=env)
        await flow
        await applying
        for _ in range(600):
            if not await caught_up(redis, db, SHARDS):
                break
            await asyncio.sleep(0.05)
        _, expected, _ = never_crashed(sent)
        trades = [(e.symbol, e.seq) for e in expected if type(e) is Trade]
        rows = await db.fetch("SELECT symbol, seq FROM trades ORDER BY seq")
        assert [tuple(r.values()) for r in rows] == trades
        orders = {c.order_id for c, _ in sent if hasattr(c, "side")}
        assert await db.fetchval("SELECT count(*) FROM orders") == len(orders)
        assert not any((await audit(redis, db)).values())
    finally:
        flow.cancel()
        applying.cancel()
        batcher.terminate()
        batcher.wait(timeout=30)


async def _keep_stepping(worker: Worker, flow: asyncio.Task) -> None:
    stop = asyncio.Event()
    renewing = asyncio.create_task(worker._renew_leases(stop))  # the test outlives a lease
    try:
        while not flow.done():
            await worker.step(block_ms=10)
        while await worker.step(block_ms=10):
            pass
    finally:
        stop.set()
        renewing.cancel()


# -- each symbol's events in sequence order, across streams (issue #7) ----------------------
# A migration moves a symbol's book, and its events continue, gap-free, on another stream.


def _accepted(
    seq: int,
    order_id: int,
    symbol: str = SPEC.symbol,
    *,
    quantity: int = 5,
    client_order_id: str | None = None,
) -> Accepted:
    return Accepted(symbol, seq, order_id, "alice", Side.BUY, OrderType.LIMIT, 10_000, quantity,
                    TimeInForce.GTC, False, client_order_id)  # fmt: skip


def _canceled(seq: int, order_id: int, symbol: str = SPEC.symbol) -> Canceled:
    return Canceled(symbol, seq, order_id, "alice", Side.BUY, 10_000, 5,
                    CancelReason.USER)  # fmt: skip


async def _publish(redis, shard: int, events: list, balances: list | None = None) -> None:
    """One entry of `events:{shard}`, as a worker's settle script writes it."""
    now = f"{int(time.time() * 1000)}-0"
    await redis.xadd(keys.events(shard), {"id": now, "first": now,
                                          "events": _encode(events),
                                          "balances": _encode(balances or [])})  # fmt: skip


async def _order_row(db, order_id: int) -> tuple | None:
    rows = await db.fetch(
        "SELECT status, remaining, filled FROM orders WHERE order_id = $1", order_id
    )
    return tuple(rows[0].values()) if rows else None


async def test_a_symbol_moved_to_an_earlier_stream_keeps_its_order(redis, db, market):
    # seq 1 on events:{5}, then (the symbol migrated) seq 2 on events:{0}, which the batcher
    # reads first: the cancel must not be overwritten by the older accept.
    await _publish(redis, 5, [_accepted(1, 101)])
    await _publish(redis, 0, [_canceled(2, 101)])
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await batcher.step()
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)


async def test_interleaved_symbols_each_keep_their_order(redis, db, market):
    # One worker entry holds several symbols' runs; only MSFT moved (to events:{0}).
    await _publish(redis, 3, [_accepted(1, 101), _accepted(1, 201, "MSFT"), _canceled(2, 101),
                              _accepted(2, 202, "MSFT"), _accepted(3, 102)])  # fmt: skip
    await _publish(redis, 0, [_canceled(4, 202, "MSFT"), _accepted(4, 103)])
    await _publish(redis, 3, [_canceled(3, 201, "MSFT")])
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await batcher.step()
    rows = await db.fetch("SELECT order_id, status FROM orders ORDER BY order_id")
    assert [tuple(r.values()) for r in rows] == [(101, "CANCELED"), (102, "OPEN"), (103, "OPEN"),
                                        (201, "CANCELED"), (202, "CANCELED")]  # fmt: skip
    progress = await db.fetch("SELECT symbol, seq FROM symbol_progress ORDER BY symbol")
    assert [tuple(r.values()) for r in progress] == [("AAPL", 4), ("MSFT", 4)]
    assert not batcher.holds and batcher.sequencer.refused == 0


async def test_a_newer_event_waits_for_the_older_one_from_another_stream(redis, db, market):
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    alice_usd = "SELECT available FROM balances WHERE user_id = 'alice' AND asset = 'USD'"
    # The newer half arrives first (the older one is still unread, e.g. a backlog).
    await _publish(redis, 0, [_canceled(2, 101)], [("alice", "USD", 50_000, -50_000)])
    await batcher.step()
    assert await _order_row(db, 101) is None
    assert await db.fetchval(alice_usd) == 1_000_000_000  # the entry waits whole
    stats = await redis.hgetall(keys.BATCHER_STATS)
    assert stats[b"held_streams"] == b"1"
    assert stats[b"held"] == b"events:0 waits for AAPL seq 1 (has 2)"
    await _publish(redis, 5, [_accepted(1, 101)])
    await batcher.step()
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)
    assert await db.fetchval(alice_usd) == 1_000_050_000
    assert await db.fetchval("SELECT seq FROM symbol_progress WHERE symbol = 'AAPL'") == 2
    assert (await redis.hgetall(keys.BATCHER_STATS))[b"held_streams"] == b"0"


async def _assert_orders_as_in_redis(redis, db, sent: list) -> None:
    """Every order row says what its Redis record says (a stop's too: its stop price and
    whether it triggered); the audit is clean."""
    rows = await db.fetch(
        "SELECT order_id, status, remaining, filled, price, stop_price, triggered FROM orders"
    )
    assert len(rows) == len({c.order_id for c, _ in sent if hasattr(c, "side")})
    for row in rows:
        fields = await redis.hgetall(keys.order(row["order_id"]))
        if not fields:  # let go by the batcher: only once its end was committed
            assert row["status"] in TERMINAL, row
            continue
        record = OrderRecord.from_hash(fields)
        stop = record.stop_price is not None
        assert tuple(row.values())[1:] == (
            record.status,
            record.remaining,
            record.filled,
            record.price,
            record.stop_price,
            record.triggered if stop else None,
        ), row["order_id"]
    assert any(row["triggered"] for row in rows) and any(row["stop_price"] for row in rows)
    assert not any((await audit(redis, db)).values())


async def _workers_settled(redis, shards: list[int]) -> bool:
    if await redis.exists(keys.pending(SPEC.symbol)):
        return False
    for n in shards:
        last = await redis.xrevrange(keys.orders(n), count=1)
        if last and await redis.get(keys.applied(n)) != last[0][0]:
            return False
    return True


async def test_a_real_migration_with_the_batcher_stopped_lands_as_redis_says(redis, db, market):
    router, home, _ = market
    other = 0 if home else SHARDS - 1  # the batcher reads events:{0} before the others
    await redis.delete(keys.owner(home))  # the fixture's worker steps aside
    stop = asyncio.Event()
    worker = Worker(redis, [home, other], batch=20)
    running = asyncio.create_task(worker.run(stop))
    sent: list = []
    flow = asyncio.create_task(random_flow(router, random.Random(7), sent, lambda n: n >= 900))
    try:
        for target in (other, home):  # there and back, the batcher stopped all along
            while len(sent) < (300 if target == other else 600):
                await asyncio.sleep(0.01)
            done = await migration.migrate(redis, SPEC.symbol, target, timeout_s=20)
            assert done["state"] == "DONE", done
        await flow
        while not await _workers_settled(redis, [home, other]):
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert await redis.xlen(keys.events(home)) and await redis.xlen(keys.events(other))

    batcher = Batcher(redis, db, list(range(SHARDS)), batch=50, interval_s=0.01)
    await batcher.start()
    for _ in range(1_000):
        if not await caught_up(redis, db, SHARDS):
            break
        await batcher.step()
    assert not await caught_up(redis, db, SHARDS)
    await _assert_orders_as_in_redis(redis, db, sent)
    assert batcher.sequencer.refused == 0


async def test_a_repeated_event_is_refused_and_the_rest_of_its_entry_applies(redis, db, market):
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await _publish(redis, 3, [_accepted(1, 101), _accepted(2, 102)])
    await batcher.step()
    # seq 2 again (it must never happen) beside seq 3, with the entry's balance deltas
    await _publish(redis, 3, [_canceled(2, 101), _canceled(3, 102)], [("bob", "EUR", 7, 0)])
    await batcher.step()
    assert await _order_row(db, 101) == ("OPEN", 5, 0)
    assert await _order_row(db, 102) == ("CANCELED", 0, 0)
    assert await db.fetchval("SELECT available FROM balances WHERE asset = 'EUR'") == 7
    assert (await redis.hgetall(keys.BATCHER_STATS))[b"refused"] == b"1"


async def test_events_outside_any_book_always_apply(redis, db, market):
    # seq 0: a STALE_ROUTE rejection by the shard the symbol left, read before the
    # symbol's older events on another stream; it never waits.
    stale = Rejected(SPEC.symbol, 0, 103, "bob", Action.CANCEL, RejectReason.STALE_ROUTE)
    await _publish(redis, 0, [stale], [("bob", "EUR", 3, 0)])
    batcher = Batcher(redis, db, [0], batch=100, interval_s=0.01)
    await batcher.start()
    await batcher.step()
    assert await db.fetchval("SELECT available FROM balances WHERE asset = 'EUR'") == 3
    assert not batcher.holds


async def test_a_gap_another_batcher_fills_is_reloaded(redis, db, market):
    ours = Batcher(redis, db, [0], batch=100, interval_s=0.01)  # the symbol's new shard
    theirs = Batcher(redis, db, [5], batch=100, interval_s=0.01)  # and the one it left
    await ours.start()
    await theirs.start()
    await _publish(redis, 5, [_accepted(1, 101)])
    await _publish(redis, 0, [_canceled(2, 101)])
    await ours.step()
    assert list(ours.holds) == [keys.events(0)]
    await theirs.step()
    assert await _order_row(db, 101) == ("OPEN", 5, 0)
    await ours.step()
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)
    assert not ours.holds


async def test_a_gap_that_lasts_is_logged_and_shown(redis, db, market, caplog):
    # hold_warn_s: a few seconds in production
    batcher = Batcher(redis, db, [0], batch=100, interval_s=0.01, hold_warn_s=0.0)
    await batcher.start()
    await batcher.step()  # the deposits
    await _publish(redis, 0, [_canceled(7, 101)])
    with caplog.at_level(logging.WARNING, logger="spot.batcher"):
        for _ in range(100):  # nothing to flush: the stats still say it waits, and how long
            await batcher.step()
            stats = await redis.hgetall(keys.BATCHER_STATS)
            if int(stats.get(b"held_ms", 0)) > 0:
                break
            await asyncio.sleep(0.1)
    warnings = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(warnings) == 1 and "AAPL needs seq 1 next, the entry has seq 7" in warnings[0]
    assert stats[b"held_streams"] == b"1" and int(stats[b"held_ms"]) > 0
    assert "1 stream(s) waiting" in await batcher_status(redis)  # spot status shows it
    assert await _order_row(db, 101) is None


async def test_a_symbol_of_unknown_progress_starts_where_its_events_are(redis, db, market):
    # A database upgraded with history: the symbol's row says NULL (alembic 0002).
    await db.execute("INSERT INTO symbol_progress (symbol) VALUES ('AAPL')")
    await _publish(redis, 0, [_accepted(41, 101), _canceled(42, 101)])
    await _publish(redis, 0, [_accepted(44, 102)])
    batcher = Batcher(redis, db, [0], batch=100, interval_s=0.01)
    await batcher.start()
    await batcher.step()
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)
    assert await _order_row(db, 102) is None  # seq 43 is missing: that one waits
    assert await db.fetchval("SELECT seq FROM symbol_progress") == 42


async def test_seqs_run_on_from_a_fresh_listing_and_a_worker_restored_from_a_snapshot(
    redis, db, market
):
    router, shard, worker = market
    sent: list = []
    rng = random.Random(17)
    await random_flow(router, rng, sent, lambda n: n >= 150)
    while await worker.step():
        pass
    await worker.snapshot(worker.shards[shard])
    await random_flow(router, rng, sent, lambda n: n >= 100)
    while await worker.step():  # applied after the snapshot: re-applied on recovery
        pass
    await redis.delete(keys.owner(shard))  # the worker dies (kill -9): its lease goes
    restarted = Worker(redis, [shard], batch=50)
    await restarted._acquire_leases(asyncio.Event())
    await restarted.load_specs()
    await restarted._recover(restarted.shards[shard])
    await random_flow(router, rng, sent, lambda n: n >= 150)
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=100, interval_s=0.01)
    await batcher.start()
    await drain(restarted, batcher, redis, db)
    await _assert_orders_as_in_redis(redis, db, sent)
    progress = await db.fetchval("SELECT seq FROM symbol_progress WHERE symbol = 'AAPL'")
    assert progress == restarted.shards[shard].engine.books[SPEC.symbol].seq > 0
    assert batcher.sequencer.refused == 0 and not batcher.holds


# -- what the database refuses, and what it fails at for a while (issue #19) ---------------


async def _entries(redis, shard: int) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await redis.xrange(keys.events(shard))]


async def test_entries_the_database_refuses_are_quarantined_and_the_rest_goes_on(redis, db, market):
    await list_symbol(redis, SymbolSpec(symbol="MSFT", base="MSFT", quote="USD"), SHARDS)
    batcher = Batcher(redis, db, [0, 3], batch=100, interval_s=0.01)
    await batcher.start()
    eur = "SELECT available FROM balances WHERE user_id = 'alice' AND asset = 'EUR'"
    await _publish(redis, 3, [_accepted(1, 101)], [("alice", "EUR", 1, 0)])
    # A client order id longer than its column, and a quantity no BIGINT holds: retrying
    # them cannot help. The database must not be left behind for every other entry.
    await _publish(redis, 3, [_accepted(2, 102, client_order_id="x" * 65)],
                   [("alice", "EUR", 10, 0)])  # fmt: skip
    await _publish(redis, 0, [_accepted(1, 201, "MSFT")])
    await _publish(redis, 0, [_accepted(2, 202, "MSFT", quantity=2**63)])
    await _publish(redis, 3, [_canceled(3, 101)], [("alice", "EUR", 100, 0)])
    refused = [(await _entries(redis, 3))[1], (await _entries(redis, 0))[1]]
    await batcher.step()

    rows = await db.fetch("SELECT order_id, status FROM orders ORDER BY order_id")
    assert [tuple(r.values()) for r in rows] == [(101, "CANCELED"), (201, "OPEN")]
    assert await db.fetchval(eur) == 101  # the refused entry's deltas went with it
    kept = await db.fetch("SELECT stream, entry_id, error, events FROM quarantine ORDER BY stream")
    assert [(r["stream"], r["entry_id"], r["events"]) for r in kept] == [
        (keys.events(0), refused[1], 1),
        (keys.events(3), refused[0], 1),
    ]
    assert "too long" in kept[1]["error"].lower(), kept[1]["error"]
    progress = await db.fetch("SELECT symbol, seq FROM symbol_progress ORDER BY symbol")
    assert [tuple(r.values()) for r in progress] == [("AAPL", 3), ("MSFT", 2)]
    assert (await db.fetchval(
        "SELECT last_id FROM consumer_offsets WHERE stream = $1", keys.events(3)
    )) == (await _entries(redis, 3))[-1]  # fmt: skip

    # Named where an operator looks: spot status, /metrics' source, the audit.
    stats = await redis.hgetall(keys.BATCHER_STATS)
    assert stats[b"quarantined"] == b"2"
    assert "2 entries QUARANTINED" in await batcher_status(redis)
    assert "spot_batcher_quarantined_entries 2.0" in await Metrics(redis, SHARDS).render()
    assert len(await redis.lrange(keys.BATCHER_QUARANTINE, 0, -1)) == 2
    found = await audit(redis, db)
    assert sorted(p.split(": ")[0] for p in found["quarantine"]) == [
        f"{keys.events(0)} {refused[1]}",
        f"{keys.events(3)} {refused[0]}",
    ]

    # What comes next is written as ever, and a restarted batcher counts what is kept.
    await _publish(redis, 3, [_accepted(4, 103)])
    await batcher.step()
    assert await _order_row(db, 103) == ("OPEN", 5, 0)
    restarted = Batcher(redis, db, [0, 3], batch=100, interval_s=0.01)
    await restarted.start()
    assert restarted.quarantined == 2 and not restarted.holds


async def _cut_waiting_session(admin: Database) -> None:
    """Cut the connection that waits on a row lock, as a failover or a restart would."""
    for _ in range(500):
        if admin.dialect == "postgresql":
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        else:
            rows = await admin.fetch(
                "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                "AND id <> CONNECTION_ID() AND info LIKE '%FOR UPDATE%'"
            )
            for row in rows:
                await admin.execute(f"KILL {int(row['id'])}")
        if rows:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batcher never waited on the offsets' lock")


async def test_a_connection_lost_inside_a_flush_is_retried_and_nothing_is_lost(
    redis, migrated, db, market, caplog
):
    batcher = Batcher(redis, db, [3], batch=100, interval_s=0.01)
    await batcher.start()
    await _publish(redis, 3, [_accepted(1, 101)])
    await batcher.step()
    await _publish(redis, 3, [_canceled(2, 101)], [("alice", "EUR", 5, 0)])
    holder = await open_database(migrated, max_size=1)
    admin = await open_database(migrated, max_size=1)
    try:
        with caplog.at_level(logging.WARNING, logger="spot.batcher"):
            async with holder.transaction() as tx:
                # Another batcher's flush holds the offsets: this one waits inside its own
                # transaction, and loses its connection there.
                await tx.lock_offsets(CONSUMER, [keys.events(3)])
                stepping = asyncio.create_task(batcher.step())
                await _cut_waiting_session(admin)
            await stepping
    finally:
        await holder.close()
        await admin.close()
    assert any("retrying" in r.getMessage() for r in caplog.records), caplog.records
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)
    assert await db.fetchval("SELECT available FROM balances WHERE asset = 'EUR'") == 5
    assert await db.fetchval("SELECT COUNT(*) FROM quarantine") == 0


async def test_a_server_without_what_spot_needs_is_named_at_start(redis, db, market):
    if db.dialect != "mysql":
        pytest.skip("PostgreSQL's defaults are what Spot needs")
    assert await db.problems() == []
    # A table without transactions: a flush would not be one (what a session cannot set).
    await db.execute("ALTER TABLE symbol_progress ENGINE=MyISAM")
    try:
        with pytest.raises(DatabaseSettingsError, match="symbol_progress is MyISAM"):
            await Batcher(redis, db, [0]).start()
    finally:
        await db.execute("ALTER TABLE symbol_progress ENGINE=InnoDB")


async def test_a_batcher_whose_offsets_moved_rereads_and_writes_nothing_twice(redis, db, market):
    # Two batchers on one shard (a misconfiguration): they take turns on the offsets' rows.
    first = Batcher(redis, db, [3], batch=100, interval_s=0.01)
    second = Batcher(redis, db, [3], batch=100, interval_s=0.01)
    await first.start()
    await second.start()
    eur = "SELECT available FROM balances WHERE asset = 'EUR'"
    await _publish(redis, 3, [_accepted(1, 101)], [("alice", "EUR", 1, 0)])
    await first.step()
    await _publish(redis, 3, [_canceled(2, 101)], [("alice", "EUR", 10, 0)])
    await second.step()  # read from where it started: the first one has moved past that
    assert await db.fetchval(eur) == 1
    assert second.positions == first.positions
    await second.step()
    assert await db.fetchval(eur) == 11
    assert await _order_row(db, 101) == ("CANCELED", 0, 0)
    assert second.sequencer.refused == 0


# The trades' minutes summed by the database itself: what the candles must hold.
TRADES = "SELECT symbol, seq, price, quantity, taker_side, created_at FROM trades"


def _candles_of_trades(trades) -> list[tuple]:
    """The one-minute candles the trades make, worked out here from their rows."""
    minutes: dict[tuple[str, int], list] = {}
    for t in trades:
        minute = int(t["created_at"].timestamp()) // 60 * 60_000
        minutes.setdefault((t["symbol"], minute), []).append(t)
    candles = []
    for (symbol, minute), group in sorted(minutes.items()):
        group.sort(key=lambda t: t["seq"])
        bought = [t for t in group if t["taker_side"] == "BUY"]
        candles.append((
            symbol, minute, group[0]["price"], max(t["price"] for t in group),
            min(t["price"] for t in group), group[-1]["price"],
            sum(t["quantity"] for t in group), sum(t["price"] * t["quantity"] for t in group),
            sum(t["quantity"] for t in bought), len(group), group[0]["seq"], group[-1]["seq"],
        ))  # fmt: skip
    return candles


CANDLES = (
    "SELECT symbol, open_time, open, high, low, close, volume, quote_volume, taker_buy_volume,"
    " trades, first_seq, last_seq FROM candles ORDER BY 1, 2"
)


async def test_candles_sum_each_minutes_trades_once_through_a_redelivery(redis, db, market):
    router, shard, worker = market
    # small flushes: a minute's candle is the sum of many
    batcher = Batcher(redis, db, list(range(SHARDS)), batch=25, interval_s=0.01)
    await batcher.start()
    await random_flow(router, random.Random(8), [], lambda n: n >= 300)
    await drain(worker, batcher, redis, db)
    expected = _candles_of_trades(await db.fetch(TRADES))
    assert expected and sum(r[9] for r in expected) > 20
    assert [tuple(r.values()) for r in await db.fetch(CANDLES)] == expected

    batcher.positions = dict.fromkeys(batcher.positions, "0-0")  # as after a crash
    await batcher.step()
    await batcher.step()
    assert [tuple(r.values()) for r in await db.fetch(CANDLES)] == expected


async def test_a_writers_pool_writes_and_reads_each_flushs_time_to_the_microsecond(migrated, db):
    """The batcher's pool (writer=True) encodes timestamps its own way on PostgreSQL (a memo
    of the flush's one datetime): each flush's rows carry its time exactly, a later flush's
    its own, and a plain pool reads what it wrote."""
    from datetime import UTC, datetime, timedelta

    from batcher.changes import Changes
    from batcher.rows import flush_rows

    writer = await open_database(migrated, min_size=1, max_size=1, writer=True)
    first = datetime(2026, 12, 4, 19, 59, 59, 999_999, tzinfo=UTC)
    moments = [first, first + timedelta(microseconds=1), datetime(1999, 12, 31, 23, tzinfo=UTC)]
    try:
        for n, moment in enumerate(moments, 1):
            changes = Changes()
            changes.add_events([
                Accepted("AAPL", 2 * n - 1, n, "alice", Side.BUY, OrderType.LIMIT, 100, 5,
                         TimeInForce.GTC, False, None),
                Trade("AAPL", 2 * n, 100, 2, 100 + n, n, "bob", "alice", Side.BUY),
            ])  # fmt: skip
            rows = flush_rows(changes, {}, {keys.events(0): f"{n}-0"}, {"AAPL": 2 * n}, moment)
            async with writer.transaction() as tx:
                await tx.write(CONSUMER, rows)
        for reader in (writer, db):
            orders = await reader.fetch(
                "SELECT created_at, updated_at FROM orders ORDER BY order_id"
            )
            trades = await reader.fetch("SELECT created_at FROM trades ORDER BY seq")
            assert [(r["created_at"], r["updated_at"]) for r in orders] == [(m, m) for m in moments]
            assert [r["created_at"] for r in trades] == moments
    finally:
        await writer.close()
