"""The order path's way into Redis: one atomic script per order command, pipelined.

Each script (store/lua/) does, in one step that nothing can interleave with: the
duplicate `client_order_id` check, the balance hold, the route lookup and the enqueue.
Route lookup and enqueue must be atomic (DESIGN.md §4): an order that read the route as
ACTIVE just before a migration paused it would otherwise land behind the drain marker on
the old shard. What each script takes and returns is in its file's header, and
tests/integration/test_scripts_api.py holds each to it.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from redis.asyncio import Redis

from api.fee_tiers import FeeTiers
from schema import keys
from schema.codes import ScriptStatus
from schema.messages import Cancel, Place, Replace, Side
from schema.orders import hold
from schema.symbols import SymbolSpec
from schema.wire import MAX_INTEGER
from store.pipeline import PipelinedRedis
from store.scripts import CANCEL, CANCEL_ALL, PLACE, REPLACE, TRANSFER

# Amounts travel through Lua as doubles: exact up to 2^53 minor units.
MAX_AMOUNT = MAX_INTEGER
RECENT_ORDERS = 200  # per user, kept in Redis for read-your-writes (the PLACE script trims)
# A user's open orders at most, per symbol and in all: the API passes its settings'
# (SPOT_MAX_OPEN_ORDERS_PER_SYMBOL, SPOT_MAX_OPEN_ORDERS); a gateway used on its own (tests,
# benchmarks' generators) caps nothing unless told to.
NO_CAP = MAX_INTEGER
CLIENT_ORDER_ID_WINDOW_S = 3_600  # SPOT_CLIENT_ORDER_ID_WINDOW_S's default


class GatewayResult(msgspec.Struct, frozen=True, gc=False):
    """`status` is OK or a refusal; `detail` carries what goes with it (the original
    order id of a duplicate, the available balance of a refused hold, the shard)."""

    status: ScriptStatus
    detail: str | None = None


class OrderIds:
    """Order ids in blocks: one INCRBY per thousand orders instead of one per order."""

    def __init__(self, redis: Redis, block: int = 1000) -> None:
        self.redis = redis
        self.block = block
        self._next = self._end = 0
        self._lock = asyncio.Lock()

    async def take(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    end = await self.redis.incrby(keys.ORDER_IDS, self.block)
                    self._next, self._end = end - self.block + 1, end + 1
        order_id = self._next
        self._next += 1
        return order_id


def hold_for(spec: SymbolSpec, place: Place) -> tuple[str, int]:
    """The asset an order pays with and how much of it to lock (schema.orders.hold)."""
    asset = spec.base if place.side is Side.SELL else spec.quote
    return asset, hold(place.side, place.type, place.price, place.protection_price, place.quantity)


class OrderGateway:
    """PLACE, CANCEL, CANCEL_ALL, REPLACE and TRANSFER through one PipelinedRedis (`pipeline`, which
    the request path's plain reads share)."""

    def __init__(
        self,
        redis: Redis,
        max_batch: int = 512,
        *,
        max_open_per_symbol: int = NO_CAP,
        max_open: int = NO_CAP,
        client_order_id_window_s: int = CLIENT_ORDER_ID_WINDOW_S,
    ) -> None:
        self.redis = redis
        self.client_order_id_window_s = client_order_id_window_s
        self.max_open_per_symbol = max_open_per_symbol
        self.max_open = max_open
        self.pipeline = PipelinedRedis(redis, max_batch)
        self.order_ids = OrderIds(redis)
        self.fee_tiers = FeeTiers(redis)  # refreshed by the app's background task
        # A map by field name, as the PLACE script reads it (Place is not array_like).
        self._encode = msgspec.msgpack.Encoder().encode

    async def place(self, spec: SymbolSpec, place: Place, created_ms: int) -> GatewayResult:
        """Queue `place`, with its user's fee tier if it has one and names no rates."""
        tier = self.fee_tiers.rates.get(place.user_id)
        if tier is not None and place.maker_fee_bps is None and place.taker_fee_bps is None:
            place = msgspec.structs.replace(place, maker_fee_bps=tier[0], taker_fee_bps=tier[1])
        asset, hold = hold_for(spec, place)
        if hold >= MAX_AMOUNT:
            return GatewayResult(ScriptStatus.TOO_LARGE)
        user = place.user_id
        reply = await self.pipeline.call(
            PLACE,
            keys.route(place.symbol),
            keys.balance(user),
            keys.order(place.order_id),
            "" if place.client_order_id is None else keys.client_order(user, place.client_order_id),
            f"{keys.RATE}{int(time.time())}",
            keys.user_orders(user),
            keys.ORDERS,
            keys.PENDING,
            self._encode(place),
            hold,
            keys.available(asset),
            keys.locked(asset),
            asset,
            created_ms,
            keys.open_orders(place.symbol),
            keys.OPEN_ORDERS,
            self.max_open_per_symbol,
            self.max_open,
            self.client_order_id_window_s,
        )
        return _result(reply)

    async def cancel(self, cancel: Cancel) -> GatewayResult:
        reply = await self.pipeline.call(
            CANCEL,
            keys.order(cancel.order_id),
            keys.ORDERS,
            keys.PENDING,
            keys.ROUTE,
            cancel.user_id,
            cancel.order_id,
        )
        return _result(reply)

    async def cancel_all(self, user: str, symbols: list[str]) -> GatewayResult:
        """A CancelAll of the user's for each symbol, queued together or not at all."""
        reply = await self.pipeline.call(
            CANCEL_ALL, keys.ORDERS, keys.PENDING, keys.ROUTE, user, *symbols
        )
        return _result(reply)

    async def replace(self, replace: Replace) -> GatewayResult:
        reply = await self.pipeline.call(
            REPLACE,
            keys.order(replace.order_id),
            keys.balance(replace.user_id),
            keys.ORDERS,
            keys.PENDING,
            keys.ROUTE,
            replace.user_id,
            replace.order_id,
            "" if replace.price is None else replace.price,
            "" if replace.quantity is None else replace.quantity,
            keys.available(""),
            keys.locked(""),
        )
        return _result(reply)

    async def transfer(self, user: str, asset: str, amount: int, reference: str) -> GatewayResult:
        """A deposit (amount > 0) or withdrawal (amount < 0) of available funds."""
        reply = await self.pipeline.call(
            TRANSFER,
            keys.balance(user),
            keys.LEDGER,
            keys.available(asset),
            amount,
            user,
            asset,
            reference,
            keys.locked(asset),
            MAX_AMOUNT,
        )
        return _result(reply)


# The scripts' first reply element, bytes as RESP gives it: one dict lookup per reply.
_STATUSES = {status.value.encode(): status for status in ScriptStatus}


def _result(reply: list[bytes | str]) -> GatewayResult:
    first = reply[0]
    status = _STATUSES[first] if isinstance(first, bytes) else ScriptStatus(first)
    detail = None
    if len(reply) > 1:
        detail = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    return GatewayResult(status, detail)
