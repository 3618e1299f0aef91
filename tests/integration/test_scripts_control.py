"""The contracts of the control plane's Redis scripts (store/lua/migration_*-N.lua and
newest_batch-1.lua), each run alone on real Redis through the registry: what it reads,
what it writes, what it answers. Independent of control/migration.py, which calls them:
the state each test starts from is written by hand."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from schema import keys
from schema.messages import Cancel
from schema.streams import CommandEntry, Control, ControlEntry, EventsEntry, is_control
from store import scripts

SYMBOL = "AAPL"
ID = "AAPL-1"
RECORD = keys.migration(ID)
ROUTE = keys.route(SYMBOL)
PENDING = keys.pending(SYMBOL)
TTL_S = 600


async def text(redis: Redis, key: str, *fields: str) -> list[str | None]:
    return [None if v is None else v.decode() for v in await redis.hmget(key, list(fields))]


async def start(redis: Redis, to_shard: int = 4, ttl_s: int = TTL_S) -> Any:
    return await scripts.MIGRATION_START.run(
        redis,
        [keys.migrating(SYMBOL), ROUTE, keys.MIGRATION_IDS, keys.MIGRATIONS_RUNNING],
        [SYMBOL, to_shard, 5000, keys.MIGRATION, ttl_s],
    )


async def running(redis: Redis, step: str, **fields: Any) -> None:
    """A migration record RUNNING at `step`, from shard 2 to shard 4, with the lock."""
    await redis.hset(
        RECORD,
        mapping={
            "symbol": SYMBOL,
            "from": 2,
            "to": 4,
            "state": "RUNNING",
            "step": step,
            "timeout_ms": 5000,
            "ttl_s": TTL_S,
            **fields,
        },
    )
    await redis.set(keys.migrating(SYMBOL), ID)


def command(n: int) -> dict[bytes, bytes]:
    """A pending entry as the router writes it (CommandEntry's fields)."""
    payload = msgspec.msgpack.encode(Cancel(order_id=n, user_id="alice", symbol=SYMBOL))
    return {
        CommandEntry.EPOCH: b"3",
        CommandEntry.COMMAND: payload,
        CommandEntry.HOLD: b"0",
        CommandEntry.SIDE: b"",
    }


# -- START ------------------------------------------------------------------------------


async def test_start_creates_a_running_record_and_takes_the_lock(redis: Redis) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "ACTIVE", "epoch": 7})

    assert await start(redis) == [b"OK", ID.encode()]

    assert await redis.get(keys.migrating(SYMBOL)) == ID.encode()
    fields = ("symbol", "from", "to", "state", "step", "timeout_ms", "ttl_s")
    assert await text(redis, RECORD, *fields) == [
        SYMBOL,
        "2",
        "4",
        "RUNNING",
        "PAUSE",
        "5000",
        str(TTL_S),
    ]
    created = int(await redis.hget(RECORD, "created_ms"))
    assert await redis.zscore(keys.MIGRATIONS_RUNNING, ID) == created
    # the route is PAUSE's business, not START's
    assert await text(redis, ROUTE, "shard", "status", "epoch") == ["2", "ACTIVE", "7"]


async def test_start_again_answers_the_running_migration_and_writes_nothing(
    redis: Redis,
) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "ACTIVE"})
    await start(redis)

    assert await start(redis, to_shard=5) == [b"EXISTS", ID.encode()]
    assert await redis.get(keys.MIGRATION_IDS) == b"1"
    assert await redis.hget(RECORD, "to") == b"4"


@pytest.mark.parametrize(
    ("route", "refusal"),
    [
        ({}, b"NO_ROUTE"),
        ({"shard": 2, "status": "MIGRATING"}, b"NOT_ACTIVE"),
        ({"shard": 4, "status": "ACTIVE"}, b"SAME_SHARD"),
    ],
)
async def test_start_refuses_what_it_cannot_move(
    redis: Redis, route: dict[str, Any], refusal: bytes
) -> None:
    if route:
        await redis.hset(ROUTE, mapping=route)

    assert await start(redis) == [refusal]
    assert await redis.exists(keys.migrating(SYMBOL), keys.MIGRATION_IDS, RECORD) == 0


# -- PAUSE ------------------------------------------------------------------------------


async def test_pause_sends_the_route_migrating_with_the_next_epoch_once(redis: Redis) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "ACTIVE", "epoch": 7})
    await running(redis, "PAUSE")

    assert await scripts.MIGRATION_PAUSE.run(redis, [RECORD, ROUTE]) == 8

    assert await text(redis, ROUTE, "shard", "status", "epoch") == ["2", "MIGRATING", "8"]
    assert await text(redis, RECORD, "step", "epoch") == ["DRAIN", "8"]
    paused = await text(redis, RECORD, "paused_ms", "PAUSE_start_ms", "PAUSE_end_ms")
    assert paused[0] == paused[2] and paused[1] is not None
    # resumed after the step moved on: nothing bumped twice
    assert await scripts.MIGRATION_PAUSE.run(redis, [RECORD, ROUTE]) == 0
    assert await text(redis, ROUTE, "epoch") == ["8"]


async def test_pause_of_a_route_without_an_epoch_starts_at_one(redis: Redis) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "ACTIVE"})
    await running(redis, "PAUSE")

    assert await scripts.MIGRATION_PAUSE.run(redis, [RECORD, ROUTE]) == 1


# -- END (a step's end) -------------------------------------------------------------------


async def test_a_step_ends_only_from_itself_while_running(redis: Redis) -> None:
    await running(redis, "DRAIN")

    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["TRANSFER", "SWITCH"]) == 0
    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["DRAIN", "TRANSFER"]) == 1
    ended = await redis.hget(RECORD, "DRAIN_end_ms")
    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["DRAIN", "TRANSFER"]) == 0

    assert await text(redis, RECORD, "step") == ["TRANSFER"]
    assert await redis.hget(RECORD, "DRAIN_end_ms") == ended


async def test_a_step_does_not_end_a_rollback(redis: Redis) -> None:
    await running(redis, "DRAIN", state="ROLLING_BACK")
    await redis.hset(RECORD, "step", "ROLLBACK")

    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["ROLLBACK", "CLEANUP"]) == 0
    assert await text(redis, RECORD, "state", "step") == ["ROLLING_BACK", "ROLLBACK"]


# -- MARK -------------------------------------------------------------------------------


async def test_mark_adds_the_marker_once_and_answers_its_id_twice(redis: Redis) -> None:
    await running(redis, "DRAIN", epoch=8)
    marker = ControlEntry(Control.DRAIN, SYMBOL, ID, 8)
    stream = keys.orders(2)
    await redis.xadd(stream, command(1))  # queued before the marker

    first = await scripts.MIGRATION_MARK.run(
        redis, [RECORD, stream], ["DRAIN_2_id", *marker.to_fields()]
    )
    again = await scripts.MIGRATION_MARK.run(
        redis, [RECORD, stream], ["DRAIN_2_id", *marker.to_fields()]
    )

    assert first == again
    assert await redis.hget(RECORD, "DRAIN_2_id") == first
    entries = await redis.xrange(stream)
    assert [entry_id for entry_id, _ in entries][1:] == [first]
    fields = entries[1][1]
    assert is_control(fields) and not is_control(entries[0][1])
    assert ControlEntry.from_fields(fields) == marker


async def test_mark_keeps_one_marker_per_record_field(redis: Redis) -> None:
    await running(redis, "TRANSFER", epoch=8)
    adopt = ControlEntry(Control.ADOPT, SYMBOL, ID, 8).to_fields()
    stream = keys.orders(4)

    one = await scripts.MIGRATION_MARK.run(redis, [RECORD, stream], ["ADOPT_4_id", *adopt])
    two = await scripts.MIGRATION_MARK.run(redis, [RECORD, stream], ["ADOPTAGAIN_4_id", *adopt])

    assert one != two and await redis.xlen(stream) == 2


# -- ROLLBACK ---------------------------------------------------------------------------


async def test_rollback_before_the_drain_answers_0_and_records_why(redis: Redis) -> None:
    await running(redis, "DRAIN")

    assert await scripts.MIGRATION_ROLLBACK.run(redis, [RECORD], ["DRAIN timed out"]) == b"0"

    assert await text(redis, RECORD, "state", "step", "rolled_back_at", "reason") == [
        "ROLLING_BACK",
        "ROLLBACK",
        "DRAIN",
        "DRAIN timed out",
    ]
    assert await redis.hget(RECORD, "ROLLBACK_start_ms") is not None


async def test_rollback_after_the_drain_answers_1_and_again_the_same(redis: Redis) -> None:
    await running(redis, "TRANSFER", drained=1)

    assert await scripts.MIGRATION_ROLLBACK.run(redis, [RECORD], ["TRANSFER timed out"]) == b"1"
    started = await redis.hget(RECORD, "ROLLBACK_start_ms")
    assert await scripts.MIGRATION_ROLLBACK.run(redis, [RECORD], ["a second reason"]) == b"1"

    assert await text(redis, RECORD, "reason", "rolled_back_at") == [
        "TRANSFER timed out",
        "TRANSFER",
    ]
    assert await redis.hget(RECORD, "ROLLBACK_start_ms") == started


@pytest.mark.parametrize(("state", "step"), [("RUNNING", "CLEANUP"), ("DONE", "DONE")])
async def test_rollback_is_too_late_once_switched(redis: Redis, state: str, step: str) -> None:
    await running(redis, step, state=state)

    assert await scripts.MIGRATION_ROLLBACK.run(redis, [RECORD], ["late"]) is None
    assert await text(redis, RECORD, "state", "step", "reason") == [state, step, None]


# -- SWITCH -----------------------------------------------------------------------------


async def test_switch_moves_the_pending_entries_in_order_behind_the_target_queue(
    redis: Redis,
) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "MIGRATING", "epoch": 3})
    await running(redis, "SWITCH")
    target = keys.orders(4)
    await redis.xadd(target, command(100))  # the target's own queue: stays ahead
    pending_ids = [await redis.xadd(PENDING, command(n)) for n in (1, 2, 3)]

    moved = await scripts.MIGRATION_SWITCH.run(
        redis, [RECORD, ROUTE, PENDING, target], [4, "RUNNING"]
    )

    assert moved == 3
    entries = await redis.xrange(target)
    assert [CommandEntry.from_fields(f).decode_command().order_id for _, f in entries] == [
        100,
        1,
        2,
        3,
    ]
    assert [f for _, f in entries[1:]] == [command(n) for n in (1, 2, 3)]  # unchanged
    assert not await redis.exists(PENDING)
    assert await text(redis, ROUTE, "shard", "status", "epoch") == ["4", "ACTIVE", "3"]
    record = await text(
        redis,
        RECORD,
        "step",
        "pending",
        "replayed_to",
        "pending_oldest_ms",
        "switched_ms",
        "SWITCH_end_ms",
    )
    assert record[:3] == ["CLEANUP", "3", entries[-1][0].decode()]
    assert record[3] == pending_ids[0].decode().partition("-")[0]
    assert record[4] == record[5] is not None


async def test_switch_with_nothing_pending(redis: Redis) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "MIGRATING"})
    await running(redis, "SWITCH")

    moved = await scripts.MIGRATION_SWITCH.run(
        redis, [RECORD, ROUTE, PENDING, keys.orders(4)], [4, "RUNNING"]
    )

    assert moved == 0 and not await redis.exists(keys.orders(4))
    pending, replayed_to, oldest, switched = await text(
        redis, RECORD, "pending", "replayed_to", "pending_oldest_ms", "switched_ms"
    )
    assert (pending, replayed_to, oldest) == ("0", "", switched)


async def test_switch_back_from_a_rollback_points_the_route_at_the_source(redis: Redis) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "MIGRATING"})
    await running(redis, "ROLLBACK", state="ROLLING_BACK")
    await redis.xadd(PENDING, command(1))
    source = keys.orders(2)
    keys_ = [RECORD, ROUTE, PENDING, source]

    # a switch forward no longer applies
    assert await scripts.MIGRATION_SWITCH.run(redis, keys_, [4, "RUNNING"]) is None
    assert await redis.xlen(PENDING) == 1
    assert await scripts.MIGRATION_SWITCH.run(redis, keys_, [2, "ROLLING_BACK"]) == 1

    assert await text(redis, ROUTE, "shard", "status") == ["2", "ACTIVE"]
    assert await text(redis, RECORD, "step", "state") == ["CLEANUP", "ROLLING_BACK"]
    assert await redis.hget(RECORD, "ROLLBACK_end_ms") is not None
    assert await redis.xlen(source) == 1


@pytest.mark.parametrize(("state", "step"), [("RUNNING", "TRANSFER"), ("RUNNING", "CLEANUP")])
async def test_switch_from_another_step_writes_nothing(redis: Redis, state: str, step: str) -> None:
    await redis.hset(ROUTE, mapping={"shard": 2, "status": "MIGRATING"})
    await running(redis, step, state=state)
    await redis.xadd(PENDING, command(1))

    assert (
        await scripts.MIGRATION_SWITCH.run(
            redis, [RECORD, ROUTE, PENDING, keys.orders(4)], [4, "RUNNING"]
        )
        is None
    )
    assert await redis.xlen(PENDING) == 1
    assert await text(redis, ROUTE, "shard", "status") == ["2", "MIGRATING"]


# -- FINISH -----------------------------------------------------------------------------

FINISH_KEYS = [
    RECORD,
    keys.migrating(SYMBOL),
    keys.handoff(ID),
    keys.MIGRATIONS_RUNNING,
    keys.MIGRATIONS_FINISHED,
    keys.MIGRATION_STATS,
]


async def finish(redis: Redis, default_ttl_s: int = 99, kept: int = 1000) -> Any:
    return await scripts.MIGRATION_FINISH.run(
        redis, FINISH_KEYS, [ID, default_ttl_s, kept, keys.HANDOFF_KEPT_S]
    )


async def test_finish_ends_done_releases_indexes_and_counts_once(redis: Redis) -> None:
    await running(redis, "CLEANUP", paused_ms=1000, switched_ms=1250)
    await redis.zadd(keys.MIGRATIONS_RUNNING, {ID: 1})
    await redis.set(keys.handoff(ID), b"book")

    assert await finish(redis) == b"DONE"

    assert await text(redis, RECORD, "state", "step") == ["DONE", "DONE"]
    finished = await redis.hget(RECORD, "finished_ms")
    assert await redis.hget(RECORD, "CLEANUP_end_ms") == finished
    assert not await redis.exists(keys.migrating(SYMBOL))
    assert 0 < await redis.ttl(RECORD) <= TTL_S  # the record's own ttl_s, not the default
    assert 0 < await redis.ttl(keys.handoff(ID)) <= keys.HANDOFF_KEPT_S
    assert await redis.zscore(keys.MIGRATIONS_RUNNING, ID) is None
    assert await redis.zscore(keys.MIGRATIONS_FINISHED, ID) == int(finished)
    stats = {b"DONE": b"1", b"last_paused_ms": b"250", b"last_id": ID.encode()}
    assert await redis.hgetall(keys.MIGRATION_STATS) == stats
    # a second orchestrator ending it too: the same state, nothing counted twice
    assert await finish(redis) == b"DONE"
    assert await redis.hgetall(keys.MIGRATION_STATS) == stats
    assert await redis.zscore(keys.MIGRATIONS_FINISHED, ID) == int(finished)


async def test_finish_of_a_rollback_and_of_a_record_without_ttl(redis: Redis) -> None:
    await running(redis, "CLEANUP", state="ROLLING_BACK")
    await redis.hdel(RECORD, "ttl_s")
    await redis.set(keys.migrating(SYMBOL), "AAPL-2")  # a newer migration holds the lock

    assert await finish(redis, default_ttl_s=30) == b"ROLLED_BACK"

    assert await redis.get(keys.migrating(SYMBOL)) == b"AAPL-2"
    assert 0 < await redis.ttl(RECORD) <= 30
    assert await redis.hgetall(keys.MIGRATION_STATS) == {b"ROLLED_BACK": b"1"}


async def test_finish_keeps_a_handoff_expiry_and_trims_the_finished_index(redis: Redis) -> None:
    await running(redis, "CLEANUP")
    await redis.set(keys.handoff(ID), b"book", ex=5)
    now_ms = int((await redis.time())[0]) * 1000
    # one past the record's ttl_s (trimmed by age), three recent (trimmed to `kept`)
    await redis.zadd(
        keys.MIGRATIONS_FINISHED,
        {
            "AAPL-old": now_ms - (TTL_S + 60) * 1000,
            "AAPL-a": now_ms - 3000,
            "AAPL-b": now_ms - 2000,
            "AAPL-c": now_ms - 1000,
        },
    )

    await finish(redis, kept=3)

    assert await redis.ttl(keys.handoff(ID)) <= 5
    index = await redis.zrange(keys.MIGRATIONS_FINISHED, 0, -1)
    assert index == [b"AAPL-b", b"AAPL-c", ID.encode()]


# -- the load test's sampling -------------------------------------------------------------


async def test_newest_batch_answers_the_newest_entry_id_and_its_oldest_order(
    redis: Redis,
) -> None:
    stream = keys.events(3)
    assert await scripts.NEWEST_BATCH.run(redis, [stream], [EventsEntry.FIRST]) == []
    for first in (b"5-0", b"7-0"):
        newest = await redis.xadd(
            stream,
            {
                EventsEntry.ORDERS_ID: b"9-0",
                EventsEntry.FIRST: first,
                EventsEntry.EVENTS: b"",
                EventsEntry.BALANCES: b"",
            },
        )

    assert await scripts.NEWEST_BATCH.run(redis, [stream], [EventsEntry.FIRST]) == [newest, b"7-0"]
    assert await scripts.NEWEST_BATCH.run(redis, [stream], [b"missing"]) == []


# -- the registry's call path ---------------------------------------------------------------


async def test_a_script_flushed_from_redis_is_loaded_again_on_noscript(redis: Redis) -> None:
    await running(redis, "DRAIN")
    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["X", "Y"]) == 0
    await redis.script_flush()
    assert await redis.script_exists(scripts.MIGRATION_END_STEP.sha) == [False]

    assert await scripts.MIGRATION_END_STEP.run(redis, [RECORD], ["DRAIN", "TRANSFER"]) == 1
    assert await redis.script_exists(scripts.MIGRATION_END_STEP.sha) == [True]


CONTROL_SCRIPTS = [
    scripts.MIGRATION_START,
    scripts.MIGRATION_PAUSE,
    scripts.MIGRATION_END_STEP,
    scripts.MIGRATION_MARK,
    scripts.MIGRATION_ROLLBACK,
    scripts.MIGRATION_SWITCH,
    scripts.MIGRATION_FINISH,
    scripts.NEWEST_BATCH,
]


@pytest.mark.parametrize("script", CONTROL_SCRIPTS, ids=lambda s: s.name)
def test_a_control_script_opens_with_its_inputs_and_output(script: scripts.Script) -> None:
    (path,) = scripts.LUA.glob(f"{script.name}-{script.numkeys}.lua")
    header = path.read_text().split("]]", 1)[0]
    assert "Input:" in header and "Output:" in header
    assert [n for n in range(1, 10) if f"KEYS[{n}]" in header] == list(range(1, script.numkeys + 1))
