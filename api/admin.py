"""Admin-role requests: deposits and withdrawals (the TRANSFER script, the one audited path
for funds), users' fee tiers (store/fee_tiers.py), and hot-shard migrations.

POST /v1/admin/migrations starts a hot-shard migration (control/migration.py) and runs it
as a task of this process: the API process that created a migration is its orchestrator.
A migration left unfinished (this process stopped or died) is not resumed by other API
processes: two orchestrators advancing one migration are not safe (a step's end is not
claimed, so one orchestrator's late DRAIN end can overwrite the other's rollback); an
operator resumes it with `spot migrate SYMBOL --to SHARD`, the same target.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth import Authenticator
from api.errors import (
    HTTPError,
    insufficient,
    migration_refused,
    script_failure,
    unknown_migration,
)
from api.market import Listing
from api.order_gateway import OrderGateway
from api.request import JSON, Body, Reply, admin, encode, query, query_int, read_body
from api.rsgi import HTTPProtocol, Scope
from control import migration
from schema.codes import ApiError, RejectReason, ScriptStatus
from schema.fees import FeeTier
from schema.settings import Settings
from schema.symbols import MAX_FEE_BPS, fee_rates_valid
from schema.wire import (
    MAX_INTEGER,
    USER_ID_PATTERN,
    Deposit,
    FeeRates,
    FeeTierView,
    Migrations,
    MigrationStep,
    MigrationView,
    StartMigration,
    Transferred,
    Withdrawal,
)
from store import fee_tiers

log = logging.getLogger("spot.api")

MIGRATIONS_LIMIT = (1, 100, 20)  # of ?limit= on GET /v1/admin/migrations
MIGRATION_ID_LENGTH = 64  # a symbol (32), '-', a counter: anything longer names none
MIGRATION_RETRY_S = 1.0  # an orchestrator that lost Redis tries again this often
MIGRATION_STOP_WAIT_S = 2.0  # at shutdown, for cancelled migrations to stop

_deposit_body = Body(Deposit)
_withdrawal_body = Body(Withdrawal)
_start_migration_body = Body(StartMigration)
_fee_rates_body = Body(FeeRates)
_user_pattern = re.compile(USER_ID_PATTERN)


class AdminRoutes:
    """/v1/admin/deposits, /v1/admin/withdrawals, /v1/admin/fee-tiers/{user_id},
    /v1/admin/migrations[/{id}]."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        gateway: OrderGateway,
        listing: Listing,
        redis: Redis,
        settings: Settings,
        max_body: int,
    ) -> None:
        self.auth = auth
        self.gateway = gateway
        self.listing = listing
        self.redis = redis
        self.settings = settings
        self.max_body = max_body
        # The migrations this process orchestrates: task -> migration id.
        self._migrations: dict[asyncio.Task[None], str] = {}

    # -- funds ----------------------------------------------------------------------------

    async def deposit(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return await self._transfer(scope, proto, _deposit_body, 1)

    async def withdrawal(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return await self._transfer(scope, proto, _withdrawal_body, -1)

    async def _transfer(
        self, scope: Scope, proto: HTTPProtocol, body: Body[Deposit], sign: int
    ) -> Reply:
        who = admin(self.auth, scope)
        transfer = body.decode(await read_body(scope, proto, self.max_body))
        if transfer.asset not in self.listing.market.assets:
            raise HTTPError(ApiError.UNKNOWN_ASSET, f"no listed symbol trades {transfer.asset!r}")
        kind = "deposit" if sign > 0 else "withdrawal"
        reference = transfer.reference or f"{kind} by {who.user_id}"
        result = await self.gateway.transfer(
            transfer.user_id, transfer.asset, sign * transfer.amount, reference
        )
        if result.status is ScriptStatus.INSUFFICIENT_BALANCE:
            raise insufficient(transfer.asset, transfer.amount, result.detail)
        if result.status is ScriptStatus.TOO_LARGE:
            raise HTTPError(
                ApiError.BALANCE_TOO_LARGE,
                f"the {transfer.asset} balance would pass {MAX_INTEGER} "
                f"({result.detail} available)",
            )
        if result.status is not ScriptStatus.OK:
            raise script_failure(result.status, "")
        done = Transferred(
            user_id=transfer.user_id, asset=transfer.asset, available=_amount(result.detail)
        )
        return 200, encode(done), JSON

    # -- fee tiers ------------------------------------------------------------------------

    async def put_fee_tier(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        admin(self.auth, scope)
        user = _user_id(param)
        rates = _fee_rates_body.decode(await read_body(scope, proto, self.max_body))
        maker, taker = rates.maker_fee_bps, rates.taker_fee_bps
        if not fee_rates_valid(maker, taker):
            raise HTTPError(
                RejectReason.FEE_RATE_INVALID,
                f"need 0 <= taker_fee_bps <= {MAX_FEE_BPS} and "
                f"-taker_fee_bps <= maker_fee_bps <= {MAX_FEE_BPS}",
            )
        tier = FeeTier(maker, taker)
        await fee_tiers.set_tier(self.redis, user, tier)
        self.gateway.fee_tiers.changed(user, tier)
        return 200, encode(_tier_view(user, tier)), JSON

    async def get_fee_tier(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        admin(self.auth, scope)
        user = _user_id(param)
        tier = await fee_tiers.get_tier(self.redis, user)
        if tier is None:
            raise _no_tier(user)
        return 200, encode(_tier_view(user, tier)), JSON

    async def delete_fee_tier(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        admin(self.auth, scope)
        user = _user_id(param)
        tier = await fee_tiers.delete_tier(self.redis, user)
        self.gateway.fee_tiers.changed(user, None)
        if tier is None:
            raise _no_tier(user)
        return 200, encode(_tier_view(user, tier)), JSON

    # -- migrations -----------------------------------------------------------------------

    async def start_migration(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        admin(self.auth, scope)
        body = await read_body(scope, proto, self.max_body)
        request = _start_migration_body.decode(body)
        symbol, to_shard = request.symbol, request.to_shard
        self.listing.listed(symbol)
        shards = self.settings.shards
        if not 0 <= to_shard < shards:
            raise HTTPError(ApiError.SHARD_OUT_OF_RANGE, f"to_shard must be within 0..{shards - 1}")
        try:
            # exclusive: a migration running already has its own orchestrator somewhere,
            # which a second one here would race.
            migration_id = await migration.start(
                self.redis,
                symbol,
                to_shard,
                request.timeout_s,
                ttl_s=self.settings.migration_ttl_s,
                exclusive=True,
            )
        except migration.MigrationRunning as exc:
            raise HTTPError(
                ApiError.MIGRATION_RUNNING, str(exc), migration_id=exc.migration_id
            ) from None
        except migration.MigrationError as exc:
            raise migration_refused(exc, symbol, to_shard) from None
        # Running before the reply is built: if that read fails, the migration still runs.
        self._orchestrate(migration_id)
        view = _migration_view(await migration.status(self.redis, migration_id))
        location = f"/v1/admin/migrations/{quote(migration_id, safe='')}"
        return 202, encode(view), [*JSON, ("location", location)]

    async def list_migrations(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        admin(self.auth, scope)
        limit = query_int(query(scope), "limit", MIGRATIONS_LIMIT)
        found = await migration.recent(self.redis, limit)
        return 200, encode(Migrations(migrations=[_migration_view(m) for m in found])), JSON

    async def show_migration(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        admin(self.auth, scope)
        if len(param) > MIGRATION_ID_LENGTH or not param.isprintable():
            raise unknown_migration(param[:MIGRATION_ID_LENGTH])
        try:
            found = await migration.status(self.redis, param)
        except migration.MigrationError:
            raise unknown_migration(param) from None
        return 200, encode(_migration_view(found)), JSON

    def _orchestrate(self, migration_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run_migration(migration_id))
        self._migrations[task] = migration_id
        task.add_done_callback(self._migration_ended)

    def _migration_ended(self, task: asyncio.Task[None]) -> None:
        self._migrations.pop(task, None)

    async def _run_migration(self, migration_id: str) -> None:
        """To its end. Each step resumes from its persisted state, so after losing Redis
        the run starts over where it was; a step whose time ran out meanwhile rolls back."""
        while True:
            try:
                await migration.run(self.redis, migration_id)
                done = await migration.status(self.redis, migration_id)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("migration %s: Redis unavailable (%s), retrying", migration_id, exc)
                await asyncio.sleep(MIGRATION_RETRY_S)
                continue
            except Exception:
                log.exception(
                    "migration %s stopped; `spot migrate` with its symbol and target resumes it",
                    migration_id,
                )
                return
            log.info(
                "migration %s: %s shard %s -> %s %s, paused %s ms",
                migration_id,
                done["symbol"],
                done["from"],
                done["to"],
                done["state"],
                done.get("paused_for_ms"),
            )
            return

    async def stop_migrations(self) -> None:
        """Shutdown: migrations stop at their persisted step, to be resumed (`spot migrate
        SYMBOL --to SHARD`); they are not waited for, as a step may wait seconds."""
        running = dict(self._migrations)
        if not running:
            return
        for task in running:
            task.cancel()
        # redis-py may finish the command it was in before the cancellation lands.
        await asyncio.wait(running, timeout=MIGRATION_STOP_WAIT_S)
        for task, migration_id in running.items():
            log.warning(
                "migration %s left unfinished at shutdown%s; resume it with "
                "`spot migrate SYMBOL --to SHARD`",
                migration_id,
                "" if task.done() else " (still stopping)",
            )


def _user_id(param: str) -> str:
    # A path segment naming no possible user (the fee account's `~fees` among them).
    if not _user_pattern.match(param):
        raise HTTPError(ApiError.MALFORMED, f"a user id matches {USER_ID_PATTERN}")
    return param


def _no_tier(user: str) -> HTTPError:
    return HTTPError(ApiError.NO_FEE_TIER, f"{user} has no fee tier: the symbols' rates apply")


def _tier_view(user: str, tier: FeeTier) -> FeeTierView:
    return FeeTierView(user_id=user, maker_fee_bps=tier.maker_bps, taker_fee_bps=tier.taker_bps)


def _amount(detail: str | None) -> int:
    # Lua's tostring() of a number past 14 digits is "1e+15".
    try:
        return int(detail or 0)
    except ValueError:
        return int(float(detail or 0))


def _migration_view(m: dict[str, Any]) -> MigrationView:
    """control.migration.status() as the API shows it: every step that began, with its times."""

    def number(name: str) -> int | None:
        value = m.get(name)
        return None if value is None else int(value)

    steps = []
    for step in (*migration.STEPS, "ROLLBACK"):
        begin, end = number(f"{step}_start_ms"), number(f"{step}_end_ms")
        if begin is None and end is None:
            continue
        took = end - begin if begin is not None and end is not None else None
        steps.append(MigrationStep(step=step, start_ms=begin, end_ms=end, duration_ms=took))
    finished, ttl_s = number("finished_ms"), number("ttl_s")
    return MigrationView(
        id=m["id"],
        symbol=m["symbol"],
        from_shard=int(m["from"]),
        to_shard=int(m["to"]),
        state=m["state"],
        step=m["step"],
        created_ms=int(m["created_ms"]),
        timeout_ms=int(m["timeout_ms"]),
        steps=steps,
        epoch=number("epoch"),
        paused_ms=number("paused_ms"),
        switched_ms=number("switched_ms"),
        paused_for_ms=number("paused_for_ms"),
        pending=number("pending"),
        pending_waited_ms=number("pending_waited_ms"),
        pending_applied_ms=number("pending_applied_ms"),
        rolled_back_at=m.get("rolled_back_at"),
        rollback_reason=m.get("reason"),
        finished_ms=finished,
        expires_ms=finished + ttl_s * 1000 if finished is not None and ttl_s else None,
    )
