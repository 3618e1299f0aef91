"""Orders: place, cancel, cancel-all and replace (one order script each,
api/order_gateway.py; the rules checked before placing in api/order_rules.py), and the
user's orders read back (Redis first, then the database's history)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from api.auth import Authenticator
from api.errors import (
    HTTPError,
    insufficient,
    malformed,
    not_open,
    script_failure,
    unknown_order,
    unknown_symbol,
)
from api.history import HISTORY_LIMIT, ORDER_BY_ID, ORDERS_QUERIES, History, row_view
from api.market import Listing
from api.order_gateway import RECENT_ORDERS, GatewayResult, OrderGateway, hold_for
from api.order_rules import STOPS, check_place, check_price, check_quantity
from api.request import (
    JSON,
    Body,
    Reply,
    ascii_int,
    encode,
    order_principal,
    principal,
    query,
    query_int,
    query_symbol,
    query_text,
    read_body,
)
from api.rsgi import HTTPProtocol, Scope
from schema import keys
from schema.codes import ApiError, RejectReason, ScriptStatus
from schema.messages import Cancel, OrderType, Place, Replace
from schema.orders import OrderRecord, OrderStatus
from schema.symbols import SymbolSpec
from schema.wire import (
    ORDER_STATUSES,
    CancelAllAccepted,
    OrderAccepted,
    Orders,
    OrderView,
    PlaceOrder,
    ReplaceOrder,
)

ORDER_ID_DIGITS = 18  # anything longer is no order id (they fit a signed 64-bit integer)
# The record's type and status as HMGET gives them: one lookup each on the replace path.
_NEVER_RESTS = {OrderType.MARKET.value.encode(), OrderType.STOP_MARKET.value.encode()}
_STOP_TYPES = {kind.value.encode() for kind in STOPS}
# A stop the book may not have triggered yet: queued (NEW) or waiting (UNTRIGGERED).
_WAITING = {OrderStatus.NEW.value.encode(), OrderStatus.UNTRIGGERED.value.encode()}

_place_body = Body(PlaceOrder)
_replace_body = Body(ReplaceOrder)


class OrderRoutes:
    """POST, GET /v1/orders; GET, DELETE, PATCH /v1/orders/{id}."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        gateway: OrderGateway,
        listing: Listing,
        history: History,
        redis: Redis,
        max_body: int,
    ) -> None:
        self.auth = auth
        self.gateway = gateway
        self.reads = gateway.pipeline
        self.listing = listing
        self.history = history
        self.redis = redis
        self.max_body = max_body

    async def place(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = order_principal(self.auth, scope).user_id
        order = _place_body.decode(await read_body(scope, proto, self.max_body))
        order_id = await self.submit(user, order)
        accepted = OrderAccepted(
            order_id=order_id, status=OrderStatus.NEW, client_order_id=order.client_order_id
        )
        return 202, encode(accepted), JSON

    async def submit(self, user: str, order: PlaceOrder) -> int:
        """Check `order` against the symbol's rules and queue it (one PLACE script): its
        order id, or HTTPError. What /v1 and /api/v3 (api/binance/) place through."""
        market = self.listing.market
        symbol = order.symbol
        spec = market.specs.get(symbol)
        if spec is None:
            raise unknown_symbol(symbol)
        now_ms = time.time_ns() // 1_000_000
        protection = check_place(
            spec, order, market.bands[symbol], market.references.get(symbol), now_ms
        )
        order_id = await self.gateway.order_ids.take()
        command = Place(
            order_id=order_id,
            user_id=user,
            symbol=symbol,
            side=order.side,
            quantity=order.quantity,
            type=order.type,
            price=order.price,
            time_in_force=order.time_in_force,
            post_only=order.post_only,
            self_trade=order.self_trade,
            client_order_id=order.client_order_id,
            protection_price=protection,
            stop_price=order.stop_price,
            expire_at_ms=order.expire_at_ms,
        )
        result = await self.gateway.place(spec, command, now_ms)
        if result.status is ScriptStatus.OK:
            return order_id
        raise self._place_refused(result, spec, command)

    def _place_refused(self, result: GatewayResult, spec: SymbolSpec, place: Place) -> HTTPError:
        status = result.status
        if status is ScriptStatus.DUPLICATE:
            return HTTPError(
                RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                f"client_order_id {place.client_order_id!r} is taken by an earlier order",
                order_id=int(result.detail or 0),
            )
        if status is ScriptStatus.INSUFFICIENT_BALANCE:
            asset, hold = hold_for(spec, place)
            return insufficient(asset, hold, result.detail)
        if status is ScriptStatus.TOO_MANY_OPEN:
            gateway = self.gateway
            if result.detail == "SYMBOL":
                what = f"{gateway.max_open_per_symbol} open orders on {spec.symbol}"
            else:
                what = f"{gateway.max_open} open orders"
            return HTTPError(
                RejectReason.TOO_MANY_OPEN_ORDERS, f"you have {what}, the most allowed"
            )
        return script_failure(status, spec.symbol)

    async def order(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = principal(self.auth, scope).user_id
        order_id = _order_id(param)
        # Redis first: its record is never behind the database's row, and lasts until
        # the batcher has committed the order's end (SPOT_FINISHED_ORDER_KEPT_S after).
        record = await self.reads.hgetall(keys.order(order_id))
        owner = record.get(b"user_id")
        if owner is not None:
            if owner.decode() != user:
                raise unknown_order(order_id)
            return 200, encode(_record_view(order_id, record)), JSON
        rows = await self.history.fetch(ORDER_BY_ID, order_id)
        if not rows or rows[0]["user_id"] != user:
            raise unknown_order(order_id)
        return 200, encode(row_view(rows[0])), JSON

    async def orders(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        q = query(scope)
        symbol = query_symbol(q)
        status = query_text(q, "status")
        if status is not None and status not in ORDER_STATUSES:
            raise malformed(f"status must be one of {', '.join(ORDER_STATUSES)}")
        limit = query_int(q, "limit", HISTORY_LIMIT)
        await self.history.ready()  # no database: 503 before any work
        recent = await self._recent_orders(user)
        fresh = [
            view
            for view in recent.values()
            if (symbol is None or view.symbol == symbol)
            and (status is None or view.status == status)
        ]
        # A row whose newer Redis record no longer matches the filters is dropped: ask for
        # that many more, so that `limit` rows are still there to show.
        hidden = len(recent) - len(fresh)
        filters = [f for f in (symbol, status) if f is not None]
        rows = await self.history.fetch(
            ORDERS_QUERIES[symbol is not None, status is not None], user, limit + hidden, *filters
        )
        views = fresh + [row_view(row) for row in rows if row["order_id"] not in recent]
        views.sort(key=_by_order_id, reverse=True)
        return 200, encode(Orders(orders=views[:limit])), JSON

    async def _recent_orders(self, user: str) -> dict[int, OrderView]:
        records = await self.recent_records(user)
        return {order_id: _record_view(order_id, r) for order_id, r in records.items()}

    async def recent_records(self, user: str) -> dict[int, dict[bytes, bytes]]:
        """The user's newest order records as Redis holds them, newest first, which may be
        ahead of the database or not in it yet (the batcher writes every 100 ms). An id
        whose record has gone (its end committed) is left to the database."""
        recent = await self.redis.lrange(keys.user_orders(user), 0, RECENT_ORDERS - 1)
        ids = [int(i) for i in recent]
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for order_id in ids:
            pipe.hgetall(keys.order(order_id))
        owner = user.encode()
        return {
            order_id: record
            for order_id, record in zip(ids, await pipe.execute(), strict=True)
            if record.get(b"user_id") == owner
        }

    async def cancel(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = order_principal(self.auth, scope).user_id
        order_id = _order_id(param)
        await self.cancel_order(user, order_id)
        return 202, encode(OrderAccepted(order_id=order_id, status="CANCEL_REQUESTED")), JSON

    async def cancel_order(self, user: str, order_id: int) -> None:
        """Queue the cancel of the user's order (one CANCEL script), or HTTPError."""
        # The script finds the symbol in the order record, atomically with the enqueue.
        result = await self.gateway.cancel(Cancel(order_id=order_id, user_id=user, symbol=""))
        status = result.status
        if status is ScriptStatus.OK:
            return
        if status is ScriptStatus.NOT_FOUND:
            raise await self._ended_or_unknown(user, order_id)
        if status is ScriptStatus.NOT_OPEN:
            raise not_open(order_id, result.detail)
        raise script_failure(status, "")

    async def cancel_all(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        """DELETE /v1/orders[?symbol=]: every open order and untriggered stop of the
        caller's, in one symbol or in every listed one, each symbol's CancelAll queued in
        one step."""
        user = principal(self.auth, scope).user_id
        symbol = query_symbol(query(scope))
        specs = self.listing.market.specs
        if symbol is not None and symbol not in specs:
            raise unknown_symbol(symbol)
        symbols = [symbol] if symbol is not None else sorted(specs)
        result = await self.gateway.cancel_all(user, symbols)
        if result.status is not ScriptStatus.OK:
            raise script_failure(result.status, result.detail or "")
        accepted = CancelAllAccepted(status="CANCEL_ALL_REQUESTED", symbols=symbols)
        return 202, encode(accepted), JSON

    async def replace(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = order_principal(self.auth, scope).user_id
        order_id = _order_id(param)
        change = _replace_body.decode(await read_body(scope, proto, self.max_body))
        if change.price is None and change.quantity is None:
            raise HTTPError(RejectReason.REPLACE_WITHOUT_CHANGE, "give a new price and/or quantity")
        owner, symbol, kind, state = await self.reads.hmget(
            keys.order(order_id), "user_id", "symbol", "type", "status"
        )
        if owner is None:
            raise await self._ended_or_unknown(user, order_id)
        if owner.decode() != user:
            raise unknown_order(order_id)
        _check_replaceable(order_id, kind, state)
        assert symbol is not None  # written with user_id, by the PLACE script
        name = symbol.decode()
        market = self.listing.market
        spec = market.specs.get(name)
        if spec is None:
            raise HTTPError(RejectReason.UNKNOWN_SYMBOL, f"{name} is no longer listed")
        if change.price is not None:
            check_price(spec, change.price, market.bands.get(name))
        if change.quantity is not None:
            check_quantity(spec, change.quantity, replace=True)
        result = await self.gateway.replace(
            Replace(
                order_id=order_id,
                user_id=user,
                symbol=name,
                price=change.price,
                quantity=change.quantity,
            )
        )
        if result.status is ScriptStatus.OK:
            return 202, encode(OrderAccepted(order_id=order_id, status="REPLACE_REQUESTED")), JSON
        if result.status is ScriptStatus.NOT_FOUND:
            # Its record left Redis since the HMGET above (committed, then let go): the
            # database knows how it ended.
            raise await self._ended_or_unknown(user, order_id)
        raise _replace_refused(result, order_id, name)

    async def _ended_or_unknown(self, user: str, order_id: int) -> HTTPError:
        """No record in Redis: no such order, or one that ended and is in the database only
        (the batcher lets a finished order's record go once committed): 409 as while its
        record was there. Without the database to ask, its 503: the order may exist."""
        if await self.reads.command("EXISTS", keys.order(order_id)):  # another user's
            return unknown_order(order_id)
        try:
            rows = await self.history.fetch(ORDER_BY_ID, order_id)
        except HTTPError as unavailable:
            return unavailable
        if rows and rows[0]["user_id"] == user:
            return not_open(order_id, rows[0]["status"])
        return unknown_order(order_id)


def _replace_refused(result: GatewayResult, order_id: int, symbol: str) -> HTTPError:
    status = result.status
    if status is ScriptStatus.NOT_OPEN:
        return not_open(order_id, result.detail)
    if status is ScriptStatus.PENDING:
        return HTTPError(
            ApiError.REPLACE_PENDING, f"an earlier replace of order {order_id} is still queued"
        )
    if status is ScriptStatus.INSUFFICIENT_BALANCE:
        return insufficient("", None, result.detail)
    return script_failure(status, symbol)


def _check_replaceable(order_id: int, kind: bytes | None, status: bytes | None) -> None:
    """What the record says of the order's type and status (the book checks again)."""
    if kind in _STOP_TYPES and status in _WAITING:
        # A waiting stop's size and price are its hold: it is replaced by cancel and place.
        raise HTTPError(
            RejectReason.STOP_NOT_REPLACEABLE,
            f"order {order_id} is a stop not yet triggered: cancel it and place another",
        )
    if kind in _NEVER_RESTS:
        assert kind is not None
        raise HTTPError(ApiError.ORDER_NOT_OPEN, f"order {order_id} is a {kind.decode()} order")


def _order_id(param: str) -> int:
    # Anything that is not an order id names no order: 404, as for someone else's order.
    order_id = ascii_int(param) if len(param) <= ORDER_ID_DIGITS else None
    if order_id is None:
        raise unknown_order(param)
    return order_id


def _record_view(order_id: int, r: dict[bytes, bytes]) -> OrderView:
    o = OrderRecord.from_hash(r)
    filled = o.filled
    return OrderView(
        order_id=order_id,
        symbol=o.symbol,
        side=o.side,
        type=o.type,
        price=o.price,
        quantity=o.quantity,
        remaining=o.remaining,
        filled=filled,
        average_price=o.notional // filled if filled else None,
        time_in_force=o.time_in_force,
        post_only=o.post_only,
        client_order_id=o.client_order_id,
        status=o.status,
        created_ms=o.created_ms,
        replace_pending=o.pending,
        reason=o.reason,
        stop_price=o.stop_price,
        triggered=o.triggered if o.stop_price is not None else None,
        expire_at_ms=o.expire_at_ms,
    )


def _by_order_id(view: OrderView) -> int:
    return view.order_id
