"""Orders: place, cancel and replace (one order script each, api/order_gateway.py), and
the user's orders read back (Redis first, then the database's history)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from api.auth import Authenticator
from api.errors import (
    HTTPError,
    insufficient,
    malformed,
    not_open,
    price_refused,
    quantity_refused,
    script_failure,
    unknown_order,
    unknown_symbol,
)
from api.history import HISTORY_LIMIT, ORDER_BY_ID, ORDERS_QUERIES, History, row_view
from api.market import Listing
from api.order_gateway import RECENT_ORDERS, GatewayResult, OrderGateway, hold_for
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
from schema.messages import Cancel, OrderType, Place, Replace, Side, TimeInForce
from schema.orders import OrderRecord, OrderStatus
from schema.symbols import SymbolSpec
from schema.wire import ORDER_STATUSES, OrderAccepted, Orders, OrderView, PlaceOrder, ReplaceOrder

ORDER_ID_DIGITS = 18  # anything longer is no order id (they fit a signed 64-bit integer)
_MARKET = OrderType.MARKET.value.encode()

_place_body = Body(PlaceOrder)
_replace_body = Body(ReplaceOrder)
# The matching core has stops too; /v1 takes them once their holds are settled (issue #14).
_SERVED_TYPES = frozenset((OrderType.LIMIT, OrderType.MARKET))


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
        market = self.listing.market
        symbol = order.symbol
        spec = market.specs.get(symbol)
        if spec is None:
            raise unknown_symbol(symbol)
        _check_served(order)
        band = market.bands[symbol]
        protection = None
        if order.type is OrderType.LIMIT:
            if order.price is None:
                raise HTTPError(RejectReason.PRICE_REQUIRED, "a LIMIT order needs a price")
            _check_price(spec, order.price, band)
            if order.post_only and order.time_in_force is not TimeInForce.GTC:
                raise HTTPError(
                    RejectReason.POST_ONLY_NOT_GTC_LIMIT, "post_only needs time_in_force GTC"
                )
        else:
            if order.price is not None:
                raise HTTPError(RejectReason.PRICE_NOT_ALLOWED, "a MARKET order takes no price")
            if order.post_only:
                raise HTTPError(
                    RejectReason.POST_ONLY_NOT_GTC_LIMIT, "post_only is for LIMIT orders"
                )
            if order.side is Side.BUY:
                if band is None:
                    raise HTTPError(
                        ApiError.MARKET_BUY_WITHOUT_BAND,
                        f"{symbol} has no price band, so a MARKET BUY cannot be funded; "
                        "place a LIMIT order instead",
                    )
                # The gateway holds the buyer's funds at this price; the book never goes
                # past it.
                protection = band[1]
        _check_quantity(spec, order.quantity)
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
        )
        result = await self.gateway.place(spec, command, time.time_ns() // 1_000_000)
        if result.status is ScriptStatus.OK:
            accepted = OrderAccepted(
                order_id=order_id, status=OrderStatus.NEW, client_order_id=order.client_order_id
            )
            return 202, encode(accepted), JSON
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
        """The user's newest orders as Redis holds them, which may be ahead of the database
        or not in it yet (the batcher writes every 100 ms). An id whose record has gone
        (its end committed) is left to the database."""
        recent = await self.redis.lrange(keys.user_orders(user), 0, RECENT_ORDERS - 1)
        ids = [int(i) for i in recent]
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for order_id in ids:
            pipe.hgetall(keys.order(order_id))
        owner = user.encode()
        return {
            order_id: _record_view(order_id, record)
            for order_id, record in zip(ids, await pipe.execute(), strict=True)
            if record.get(b"user_id") == owner
        }

    async def cancel(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = order_principal(self.auth, scope).user_id
        order_id = _order_id(param)
        # The script finds the symbol in the order record, atomically with the enqueue.
        result = await self.gateway.cancel(Cancel(order_id=order_id, user_id=user, symbol=""))
        status = result.status
        if status is ScriptStatus.OK:
            return 202, encode(OrderAccepted(order_id=order_id, status="CANCEL_REQUESTED")), JSON
        if status is ScriptStatus.NOT_FOUND:
            raise await self._ended_or_unknown(user, order_id)
        if status is ScriptStatus.NOT_OPEN:
            raise not_open(order_id, result.detail)
        raise script_failure(status, "")

    async def replace(self, scope: Scope, proto: HTTPProtocol, param: str) -> Reply:
        user = order_principal(self.auth, scope).user_id
        order_id = _order_id(param)
        change = _replace_body.decode(await read_body(scope, proto, self.max_body))
        if change.price is None and change.quantity is None:
            raise HTTPError(RejectReason.REPLACE_WITHOUT_CHANGE, "give a new price and/or quantity")
        owner, symbol, kind = await self.reads.hmget(
            keys.order(order_id), "user_id", "symbol", "type"
        )
        if owner is None:
            raise await self._ended_or_unknown(user, order_id)
        if owner.decode() != user:
            raise unknown_order(order_id)
        if kind == _MARKET:
            raise HTTPError(ApiError.ORDER_NOT_OPEN, f"order {order_id} is a MARKET order")
        assert symbol is not None  # written with user_id, by the PLACE script
        name = symbol.decode()
        market = self.listing.market
        spec = market.specs.get(name)
        if spec is None:
            raise HTTPError(RejectReason.UNKNOWN_SYMBOL, f"{name} is no longer listed")
        if change.price is not None:
            _check_price(spec, change.price, market.bands.get(name))
        if change.quantity is not None:
            _check_quantity(spec, change.quantity, replace=True)
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
        raise _replace_refused(result, order_id, name)

    async def _ended_or_unknown(self, user: str, order_id: int) -> HTTPError:
        """No record in Redis: no such order, or one that ended and is in the database only
        (the batcher lets a finished order's record go once committed): 409 as while its
        record was there. Without the database to ask: 404."""
        try:
            rows = await self.history.fetch(ORDER_BY_ID, order_id)
        except HTTPError:
            return unknown_order(order_id)
        if rows and rows[0]["user_id"] == user:
            return not_open(order_id, rows[0]["status"])
        return unknown_order(order_id)


def _replace_refused(result: GatewayResult, order_id: int, symbol: str) -> HTTPError:
    status = result.status
    if status is ScriptStatus.NOT_FOUND:
        return unknown_order(order_id)
    if status is ScriptStatus.NOT_OPEN:
        return not_open(order_id, result.detail)
    if status is ScriptStatus.PENDING:
        return HTTPError(
            ApiError.REPLACE_PENDING, f"an earlier replace of order {order_id} is still queued"
        )
    if status is ScriptStatus.INSUFFICIENT_BALANCE:
        return insufficient("", None, result.detail)
    return script_failure(status, symbol)


def _check_price(spec: SymbolSpec, price: int, band: tuple[int, int] | None) -> None:
    reason = spec.check_price(price, band)
    if reason is not None:
        raise price_refused(reason, spec, price, band)


def _check_quantity(spec: SymbolSpec, quantity: int, *, replace: bool = False) -> None:
    reason = spec.check_quantity(quantity, replace=replace)
    if reason is not None:
        raise quantity_refused(reason, spec, quantity)


def _order_id(param: str) -> int:
    # Anything that is not an order id names no order: 404, as for someone else's order.
    order_id = ascii_int(param) if len(param) <= ORDER_ID_DIGITS else None
    if order_id is None:
        raise unknown_order(param)
    return order_id


def _check_served(order: PlaceOrder) -> None:
    if order.type not in _SERVED_TYPES or order.time_in_force is TimeInForce.GTD:
        raise HTTPError(ApiError.NOT_SUPPORTED, "stop orders and GTD are not served by /v1 yet")


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
    )


def _by_order_id(view: OrderView) -> int:
    return view.order_id
