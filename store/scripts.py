"""Spot's Redis scripts: Lua files in `store/lua/`, run by SHA, through one call path.

A script's file is named `NAME-N.lua`, N being how many KEYS it takes (BullMQ's
convention), and opens with a header saying what its KEYS and ARGV are and what it
returns. A line `-- include: LIB` pulls in `store/lua/LIB.lua` (shared functions, no
key count in the name) ahead of the script's own text, so the SHA covers both.

`Script.run` is the call path: EVALSHA, and on NOSCRIPT (a Redis that restarted or was
flushed of its scripts) SCRIPT LOAD and EVALSHA once more. Calls that ride a pipeline
(`Script.queue`) cannot retry one command of a batch: their callers `load` the scripts
before their first pipeline, and a NOSCRIPT then fails the batch like a lost connection.
The pipelined client of the API (store/pipeline.py) takes `Script`s too and reloads on
NOSCRIPT.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

LUA = Path(__file__).resolve().parent / "lua"
_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)


class Script:
    __slots__ = ("name", "numkeys", "source", "sha")

    def __init__(self, name: str) -> None:
        paths = sorted(LUA.glob(f"{name}-[0-9]*.lua"))
        if len(paths) != 1:
            raise FileNotFoundError(f"want one {LUA}/{name}-N.lua, found {len(paths)}")
        path = paths[0]
        self.name = name
        self.numkeys = int(path.stem.rpartition("-")[2])
        text = path.read_text()
        libraries = [(LUA / f"{lib}.lua").read_text() for lib in _INCLUDE.findall(text)]
        self.source = "".join(libraries) + text
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, numkeys={self.numkeys})"

    def _check(self, keys: Sequence[Any]) -> None:
        if len(keys) != self.numkeys:
            raise TypeError(f"{self.name} takes {self.numkeys} keys, given {len(keys)}")

    async def run(self, redis: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        self._check(keys)
        try:
            return await redis.evalsha(self.sha, self.numkeys, *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, self.numkeys, *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> None:
        """EVALSHA on a pipeline; `load` the script before the pipeline's first use."""
        self._check(keys)
        pipe.evalsha(self.sha, self.numkeys, *keys, *args)


async def load(redis: Any, *scripts: Script) -> None:
    """SCRIPT LOAD each (idempotent: the SHA of the same text is the same)."""
    for script in scripts:
        loaded = await redis.script_load(script.source)
        if loaded != script.sha and (
            not isinstance(loaded, bytes) or loaded.decode() != script.sha
        ):
            raise RuntimeError(f"Redis hashed {script.name} as {loaded!r}, not {script.sha}")


# -- the scripts, by the process that runs them ------------------------------------------

# api: the order path (api/order_gateway.py), deposits and withdrawals
PLACE = Script("place")
CANCEL = Script("cancel")
CANCEL_ALL = Script("cancel_all")
REPLACE = Script("replace")
TRANSFER = Script("transfer")
API_SCRIPTS = (PLACE, CANCEL, CANCEL_ALL, REPLACE, TRANSFER)

# workers: settlement, shard leases, the migration hand-over (workers/worker.py)

SETTLE = Script("settle")  # one shard's batch: lease, watermark, balances, records, events
RENEW = Script("renew")  # extend a shard's lease, for its owner only
RELEASE = Script("release")  # give up a shard's lease, for its owner only
STORE_HANDOFF = Script("store_handoff")  # a drained book, kept while its migration runs
ADOPTED = Script("adopted")  # tell the orchestrator which shard holds the book now
CLAIM = Script("claim")  # a DRAIN marker, atomically against the rollback
WORKER_SCRIPTS = (SETTLE, RENEW, RELEASE, STORE_HANDOFF, ADOPTED, CLAIM)

# control: the hot-shard migration's steps (control/migration.py)
MIGRATION_START = Script("migration_start")
MIGRATION_PAUSE = Script("migration_pause")
MIGRATION_END_STEP = Script("migration_end_step")
MIGRATION_MARK = Script("migration_mark")
MIGRATION_ROLLBACK = Script("migration_rollback")
MIGRATION_SWITCH = Script("migration_switch")
MIGRATION_FINISH = Script("migration_finish")
# and the load test's sampling of the settled batches (loadtest/run.py)
NEWEST_BATCH = Script("newest_batch")

# batcher: the records of orders whose end is committed leave Redis (batcher/batcher.py)
EXPIRE_RECORDS = Script("expire_records")

# the API's operator console: each shard's backlog (api/console.py)
SHARD_LAG = Script("shard_lag")
