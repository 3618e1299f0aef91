"""Two orchestrators on one migration (an operator's `spot migrate` beside the API's): the
persisted steps must stay consistent whichever of them writes last."""

from __future__ import annotations

from control import migration
from schema import keys
from store.symbols import list_symbol
from tests.integration.flow import SPEC

SHARDS = 10


async def test_a_step_ending_after_another_orchestrator_rolled_back_does_not_undo_it(redis):
    home = await list_symbol(redis, SPEC, SHARDS)
    a, b = migration.Orchestrator(redis), migration.Orchestrator(redis)
    migration_id = await a.start(SPEC.symbol, (home + 1) % SHARDS, 5.0)
    await a.advance(migration_id)  # PAUSE
    record = keys.migration(migration_id)
    assert await redis.hget(record, "step") == b"DRAIN"

    # Orchestrator A timed out in DRAIN and rolled back; B saw the drain finish just after.
    await a._start_rollback(migration_id, "DRAIN timed out")
    await b._end(migration_id, "DRAIN", "TRANSFER")

    assert await redis.hmget(record, "state", "step") == [b"ROLLING_BACK", b"ROLLBACK"]
    assert await redis.hget(record, "DRAIN_end_ms") is None
    await migration.run(redis, migration_id)
    done = await migration.status(redis, migration_id)
    assert done["state"] == "ROLLED_BACK"
    assert await redis.hmget(keys.route(SPEC.symbol), "shard", "status") == [
        str(home).encode(),
        b"ACTIVE",
    ]


async def test_a_step_ends_once(redis):
    home = await list_symbol(redis, SPEC, SHARDS)
    a, b = migration.Orchestrator(redis), migration.Orchestrator(redis)
    migration_id = await a.start(SPEC.symbol, (home + 1) % SHARDS, 5.0)
    await a.advance(migration_id)  # PAUSE
    await a._end(migration_id, "DRAIN", "TRANSFER")
    ended = await redis.hget(keys.migration(migration_id), "DRAIN_end_ms")
    await b._end(migration_id, "DRAIN", "TRANSFER")  # a second orchestrator
    record = keys.migration(migration_id)
    assert await redis.hmget(record, "step", "DRAIN_end_ms") == [b"TRANSFER", ended]
