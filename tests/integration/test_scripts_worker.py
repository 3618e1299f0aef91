"""The worker's Lua scripts against real Redis, independent of the Python that calls them:
for given KEYS and ARGV, what each writes and returns (headers in store/lua/)."""

from __future__ import annotations

import msgspec
import pytest
from redis.exceptions import ResponseError

from schema import keys
from schema.codes import CancelReason
from schema.messages import Canceled, Side
from schema.orders import OrderStatus
from schema.streams import EventsEntry
from store import scripts
from store.scripts import ADOPTED, CLAIM, RELEASE, RENEW, SETTLE, STORE_HANDOFF, WORKER_SCRIPTS

SHARD = 3
TOKEN = "token-a"
KEPT_S = 86_400
_encode = msgspec.msgpack.encode

SETTLE_KEYS = [keys.applied(SHARD), keys.owner(SHARD), keys.events(SHARD)]
EVENT = Canceled("AAPL", 4, 11, "alice", Side.BUY, 100, 2, CancelReason.USER)


def order(
    order_id: int,
    status: str = "",
    remaining: str = "",
    price: str = "",
    filled: str = "0",
    notional: str = "0",
    settled: bool = False,
    reason: str = "",
    finished: bool = False,
    triggered: bool = False,
) -> list[object]:
    """One order's changes, as settle-3.lua's header lists them."""
    return [str(order_id), status, remaining, price, filled, notional, settled, reason, finished,
            triggered]  # fmt: skip


def settle_args(
    last_id: str,
    balances: list[list[str]] | None = None,
    orders: list[list[object]] | None = None,
    events: bytes | str = b"",
    for_database: bytes = b"\x90",
    first_id: str = "1-0",
    token: str = TOKEN,
) -> list[object]:
    return [
        token,
        last_id,
        events,
        for_database,
        first_id,
        _encode([balances or [], orders or []]),
        keys.BALANCE,
        keys.available(""),
        keys.locked(""),
        keys.ORDER,
        KEPT_S,
    ]


async def owned(redis) -> None:
    await redis.set(keys.owner(SHARD), TOKEN, px=10_000)


# -- settle-3 -----------------------------------------------------------------------------


async def test_settle_refuses_a_worker_that_lost_the_lease_and_writes_nothing(redis):
    await redis.set(keys.owner(SHARD), "token-b")
    args = settle_args("5-0", balances=[["alice", "USD", "10", "0"]], events=_encode([EVENT]))
    with pytest.raises(ResponseError, match="LEASE_LOST"):
        await SETTLE.run(redis, SETTLE_KEYS, args)
    await redis.delete(keys.owner(SHARD))
    with pytest.raises(ResponseError, match="LEASE_LOST"):
        await SETTLE.run(redis, SETTLE_KEYS, args)
    assert await redis.get(keys.applied(SHARD)) is None
    assert await redis.exists(keys.events(SHARD), keys.balance("alice")) == 0


async def test_settle_moves_balances_patches_records_appends_events_and_the_watermark(redis):
    await owned(redis)
    await redis.hset(keys.balance("alice"), mapping={"avail:USD": 100, "locked:USD": 500})
    await redis.hset(keys.order(11), mapping={"status": "OPEN", "remaining": 5, "filled": 0,
                                              "notional": 0, "pending": 1})  # fmt: skip
    events = _encode([EVENT])
    for_database = _encode([["alice", "USD", 200, -200]])
    args = settle_args(
        "7-2",
        balances=[["alice", "USD", "200", "-200"], ["alice", "AAPL", "0", "3"]],
        orders=[order(11, status="CANCELED", remaining="0", settled=True, reason="USER")],
        events=events,
        for_database=for_database,
        first_id="6-0",
    )
    assert await SETTLE.run(redis, SETTLE_KEYS, args) == 1
    assert await redis.hgetall(keys.balance("alice")) == {
        b"avail:USD": b"300",
        b"locked:USD": b"300",
        b"locked:AAPL": b"3",  # a '0' delta writes no field
    }
    record = await redis.hgetall(keys.order(11))
    assert record == {b"status": b"CANCELED", b"remaining": b"0", b"filled": b"0",
                      b"notional": b"0", b"pending": b"0", b"reason": b"USER"}  # fmt: skip
    assert await redis.get(keys.applied(SHARD)) == b"7-2"
    [(_, fields)] = await redis.xrange(keys.events(SHARD))
    entry = EventsEntry.from_fields(fields)
    assert (entry.orders_id, entry.first_id) == (b"7-2", b"6-0")
    assert entry.decode_events() == [EVENT]
    assert entry.decode_balances() == [("alice", "USD", 200, -200)]


async def test_settle_skips_a_batch_at_or_below_the_watermark(redis):
    await owned(redis)
    await redis.set(keys.applied(SHARD), "7-2")
    for last_id in ("7-2", "7-1", "6-9", "1-5"):
        args = settle_args(last_id, balances=[["alice", "USD", "1", "0"]], events=_encode([EVENT]))
        assert await SETTLE.run(redis, SETTLE_KEYS, args) == 0
    assert await redis.exists(keys.balance("alice"), keys.events(SHARD)) == 0
    assert await redis.get(keys.applied(SHARD)) == b"7-2"
    # compared as numbers, not strings: "10-0" is after "7-2"
    assert await SETTLE.run(redis, SETTLE_KEYS, settle_args("10-0")) == 1
    assert await redis.get(keys.applied(SHARD)) == b"10-0"


async def test_settle_without_events_only_moves_the_watermark(redis):
    await owned(redis)
    assert await SETTLE.run(redis, SETTLE_KEYS, settle_args("3-0", events="")) == 1
    assert await redis.get(keys.applied(SHARD)) == b"3-0"
    assert await redis.exists(keys.events(SHARD)) == 0


async def test_settle_writes_the_status_it_is_given_and_no_other(redis):
    await owned(redis)
    for order_id in (21, 22):
        await redis.hset(keys.order(order_id), mapping={"status": "OPEN", "remaining": 10,
                                                        "filled": 0, "notional": 0})  # fmt: skip
    orders = [
        # a fill with remaining '' counts the record's own remaining down
        order(21, status=OrderStatus.PARTIALLY_FILLED, filled="4", notional="400"),
        # a fill with no status given leaves the status as it is: Python decides it
        order(22, filled="3", notional="330", remaining="7", price="110"),
    ]
    assert await SETTLE.run(redis, SETTLE_KEYS, settle_args("2-0", orders=orders)) == 1
    assert await redis.hgetall(keys.order(21)) == {
        b"status": b"PARTIALLY_FILLED", b"remaining": b"6", b"filled": b"4", b"notional": b"400"
    }  # fmt: skip
    assert await redis.hgetall(keys.order(22)) == {
        b"status": b"OPEN", b"remaining": b"7", b"filled": b"3", b"notional": b"330",
        b"price": b"110",
    }  # fmt: skip


async def test_settle_marks_a_stop_triggered_and_an_old_worker_s_rows_do_not(redis):
    await owned(redis)
    for order_id in (41, 42):
        await redis.hset(keys.order(order_id), mapping={"status": "UNTRIGGERED", "remaining": 5,
                                                        "filled": 0, "notional": 0})  # fmt: skip
    orders = [
        order(41, status="OPEN", remaining="5", triggered=True),
        order(42, status="CANCELED", remaining="0")[:9],  # nine fields: no triggered
    ]
    assert await SETTLE.run(redis, SETTLE_KEYS, settle_args("2-0", orders=orders)) == 1
    assert await redis.hmget(keys.order(41), "status", "triggered") == [b"OPEN", b"1"]
    assert await redis.hmget(keys.order(42), "status", "triggered") == [b"CANCELED", None]


async def test_settle_expires_the_records_it_is_told_are_finished(redis):
    await owned(redis)
    orders = [
        order(31, status="FILLED", remaining="0", finished=True),
        order(32, status="PARTIALLY_FILLED", remaining="3"),
        # the flag decides, not the status: Lua knows no terminal list
        order(33, status="OPEN", finished=True),
    ]
    assert await SETTLE.run(redis, SETTLE_KEYS, settle_args("2-0", orders=orders)) == 1
    assert 0 < await redis.ttl(keys.order(31)) <= KEPT_S
    assert await redis.ttl(keys.order(32)) == -1
    assert 0 < await redis.ttl(keys.order(33)) <= KEPT_S


async def test_settle_rides_a_pipeline_once_loaded(redis):
    await owned(redis)
    await scripts.load(redis, *WORKER_SCRIPTS)
    pipe = redis.pipeline(transaction=False)
    SETTLE.queue(pipe, SETTLE_KEYS, settle_args("1-0", events=_encode([EVENT])))
    SETTLE.queue(pipe, SETTLE_KEYS, settle_args("1-0", events=_encode([EVENT])))
    assert await pipe.execute() == [1, 0]
    assert await redis.xlen(keys.events(SHARD)) == 1


# -- renew-1, release-1 -------------------------------------------------------------------


async def test_renew_extends_only_its_owners_lease(redis):
    owner = keys.owner(SHARD)
    await redis.set(owner, TOKEN, px=1_000)
    assert await RENEW.run(redis, [owner], [TOKEN, 60_000]) == 1
    assert 1_000 < await redis.pttl(owner) <= 60_000
    assert await RENEW.run(redis, [owner], ["token-b", 120_000]) == 0
    assert await redis.pttl(owner) <= 60_000
    assert await redis.get(owner) == TOKEN.encode()
    await redis.delete(owner)
    assert await RENEW.run(redis, [owner], [TOKEN, 60_000]) == 0
    assert await redis.exists(owner) == 0  # a lost lease is not taken back


async def test_release_drops_only_its_owners_lease(redis):
    owner = keys.owner(SHARD)
    await redis.set(owner, "token-b", px=10_000)
    assert await RELEASE.run(redis, [owner], [TOKEN]) == 0
    assert await redis.get(owner) == b"token-b"
    assert await RELEASE.run(redis, [owner], ["token-b"]) == 1
    assert await redis.exists(owner) == 0
    assert await RELEASE.run(redis, [owner], ["token-b"]) == 0


# -- store_handoff-2, adopted-1, claim-1 ----------------------------------------------------

MIGRATION = "42"
HANDOFF_KEYS = [keys.handoff(MIGRATION), keys.migration(MIGRATION)]


@pytest.mark.parametrize("state", ["RUNNING", "ROLLING_BACK"])
async def test_a_handoff_never_expires_while_its_migration_runs(redis, state):
    await redis.hset(keys.migration(MIGRATION), "state", state)
    assert await STORE_HANDOFF.run(redis, HANDOFF_KEYS, [b"book-bytes", 3_600]) == 1
    assert await redis.get(keys.handoff(MIGRATION)) == b"book-bytes"
    assert await redis.ttl(keys.handoff(MIGRATION)) == -1


@pytest.mark.parametrize("state", ["DONE", "ROLLED_BACK", None])
async def test_a_handoff_stored_after_its_migration_ended_expires(redis, state):
    if state is not None:
        await redis.hset(keys.migration(MIGRATION), "state", state)
    assert await STORE_HANDOFF.run(redis, HANDOFF_KEYS, [b"book-bytes", 3_600]) == 1
    assert await redis.get(keys.handoff(MIGRATION)) == b"book-bytes"
    assert 0 < await redis.ttl(keys.handoff(MIGRATION)) <= 3_600


@pytest.mark.parametrize("state", ["RUNNING", "ROLLING_BACK"])
async def test_adopted_tells_a_live_migration_the_shard(redis, state):
    await redis.hset(keys.migration(MIGRATION), "state", state)
    assert await ADOPTED.run(redis, [keys.migration(MIGRATION)], [7]) == 1
    assert await redis.hget(keys.migration(MIGRATION), "adopted") == b"7"


@pytest.mark.parametrize("state", ["DONE", "ROLLED_BACK", None])
async def test_adopted_leaves_an_ended_migration_as_it_is(redis, state):
    if state is not None:
        await redis.hset(keys.migration(MIGRATION), "state", state)
    assert await ADOPTED.run(redis, [keys.migration(MIGRATION)], [7]) == 1
    assert await redis.hget(keys.migration(MIGRATION), "adopted") is None
    if state is None:
        assert await redis.exists(keys.migration(MIGRATION)) == 0


async def test_claim_takes_a_running_migrations_drain_and_keeps_it_claimed(redis):
    record = keys.migration(MIGRATION)
    await redis.hset(record, "state", "RUNNING")
    assert await CLAIM.run(redis, [record]) == 1
    assert await redis.hget(record, "drained") == b"1"
    await redis.hset(record, "state", "ROLLING_BACK")  # claimed before the rollback
    assert await CLAIM.run(redis, [record]) == 1


@pytest.mark.parametrize("state", ["ROLLING_BACK", "ROLLED_BACK", "DONE", None])
async def test_claim_refuses_a_drain_the_orchestrator_rolled_back_first(redis, state):
    record = keys.migration(MIGRATION)
    if state is not None:
        await redis.hset(record, "state", state)
    assert await CLAIM.run(redis, [record]) == 0
    assert await redis.hget(record, "drained") is None


# -- the registry -------------------------------------------------------------------------


async def test_run_loads_a_script_redis_no_longer_has(redis):
    await owned(redis)
    await scripts.load(redis, RENEW)
    await redis.script_flush()
    assert await redis.script_exists(RENEW.sha) == [False]
    assert await RENEW.run(redis, [keys.owner(SHARD)], [TOKEN, 60_000]) == 1
    assert await redis.script_exists(RENEW.sha) == [True]


def test_every_worker_script_has_its_key_count_and_a_header():
    for script in WORKER_SCRIPTS:
        text = script.source
        assert text.startswith("-- "), script
        assert "Returns:" in text, script
        for n in range(1, script.numkeys + 1):
            assert f"KEYS[{n}]" in text, (script, n)
