"""Binance's order endpoints, translated onto /v1's (api/orders.py): the same checks, the
same PLACE and CANCEL scripts, the same order records.

Placing is asynchronous in Spot (the order is queued, a worker matches it), Binance's is
not: its RESULT and FULL replies (what ccxt asks for) carry the outcome of matching. So
for those the reply waits for the order's first settlement, polling its record (the
worker settles an incoming order in one step: every trade it makes on arrival, and
whether it rests, ends or was rejected). A book rejection (a LIMIT_MAKER that would
take) is then Binance's error for it. The wait is bounded by SETTLE_WAIT_S: a worker
that is down or far behind leaves the order NEW, which is what the reply then says (it
is true, and ccxt reads it as open). ACK replies at once. A cancel waits the same way for
the order to end, else says PENDING_CANCEL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from api.apikeys import ApiKey
from api.binance.errors import TRANSLATION, Binance, BinanceError, translate
from api.binance.market import symbol_of
from api.binance.new_order import client_id_valid, place_order
from api.binance.signing import Params
from api.binance.translate import (
    MAX_TIME_MS,
    PENDING_CANCEL,
    Scale,
    fee_text,
    moment,
    order_view,
    record_from_row,
)
from api.errors import HTTPError
from api.history import ORDER_BY_ID, ORDER_COLUMNS, History
from api.market import Listing
from api.orders import OrderRoutes
from api.request import now_ms
from schema import keys
from schema.fees import fee_asset
from schema.messages import Side, Trade
from schema.orders import OPEN_STATUSES, TERMINAL, OrderRecord, OrderStatus
from schema.symbols import SymbolSpec
from schema.wire import PlaceOrder
from store.pipeline import PipelinedRedis

SETTLE_WAIT_S = 2.0  # at most, for a RESULT/FULL placement or a cancel to be settled
POLL_S = (0.001, 0.05)  # the first pause between looks at the record, and the longest
RECENT_FILLS = 100  # the workers keep the last 100 trades of a symbol (trades:{symbol})
OPEN_LIMIT = 1_000  # open orders answered at most (Binance caps them at 200 a symbol)
ORDERS_LIMIT = (1, 1000, 500)  # allOrders' limit: min, max, default

_trade = msgspec.json.Decoder(Trade)

ORDER_BY_CLIENT_ID = (
    f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND client_order_id = $2"
)
OPEN_ORDERS = {
    False: f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND status = ANY($2::text[]) "
    "ORDER BY order_id LIMIT $3",
    True: f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND status = ANY($2::text[]) "
    "AND symbol = $4 ORDER BY order_id LIMIT $3",
}


def _all_orders_query(
    user: str, symbol: str, limit: int, from_id: int | None, start: int | None, end: int | None
) -> tuple[str, list[Any]]:
    """allOrders' query and its arguments: oldest first from orderId or startTime, else
    the newest `limit` (newest first; the caller turns them round)."""
    args: list[Any] = [user, symbol]
    where = "user_id = $1 AND symbol = $2"
    for condition, value in (
        ("order_id >=", from_id),
        ("created_at >=", moment(start)),
        ("created_at <=", moment(end)),
    ):
        if value is not None:
            args.append(value)
            where += f" AND {condition} ${len(args)}"
    args.append(limit)
    order = "ASC" if from_id is not None or start is not None else "DESC"
    query = f"SELECT {ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY order_id {order} "
    return query + f"LIMIT ${len(args)}", args


_ORDER_NAMES = ("orderId", "origClientOrderId")


class TradingRoutes:
    """order (POST, GET, DELETE), openOrders (GET, DELETE), allOrders."""

    def __init__(
        self, orders: OrderRoutes, listing: Listing, reads: PipelinedRedis, history: History
    ) -> None:
        self.orders = orders
        self.listing = listing
        self.reads = reads
        self.history = history

    # -- placing ------------------------------------------------------------------------

    async def new_order(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        scale = Scale(spec, market.decimals)
        placing = place_order(spec, scale, params, params.required("type"))
        return await self.place(key, spec, scale, placing)

    async def place(
        self, key: ApiKey, spec: SymbolSpec, scale: Scale, placing: tuple[PlaceOrder, str, str]
    ) -> dict[str, Any]:
        """Queue the order and answer as its reply type says (ACK at once, else once the
        worker has settled it)."""
        order, respond, mode = placing
        try:
            order_id = await self.orders.submit(key.user_id, order)
        except HTTPError as exc:
            raise translate(exc) from None
        if respond == "ACK":
            return {
                "symbol": spec.symbol,
                "orderId": order_id,
                "orderListId": -1,
                "clientOrderId": order.client_order_id or "",
                "transactTime": now_ms(),
            }
        record = await self._wait(key.user_id, order_id, _settled)
        if record.status is OrderStatus.REJECTED:
            error, text = TRANSLATION.get(record.reason or "", (Binance.NEW_ORDER_REJECTED, None))
            raise BinanceError(error, text or f"Order rejected: {record.reason}.")
        reply = _result(order_id, record, scale, mode)
        if respond == "FULL":
            reply["fills"] = await self._fills(spec, scale, order_id, record)
        return reply

    async def _wait(
        self, user: str, order_id: int, done: Callable[[OrderRecord], bool]
    ) -> OrderRecord:
        """The order's record once `done` says so, or as it is after SETTLE_WAIT_S. (A
        record Redis no longer holds, the order having ended and been written, is its
        row's.)"""
        deadline = time.monotonic() + SETTLE_WAIT_S
        pause, longest = POLL_S
        while True:
            record = await self._record(user, order_id)
            if record is None:  # nowhere: a fault of ours, for the dispatch to log
                raise RuntimeError(f"order {order_id} is in neither Redis nor the database")
            if done(record) or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def _fills(
        self, spec: SymbolSpec, scale: Scale, order_id: int, record: OrderRecord
    ) -> list[dict[str, Any]]:
        """The order's trades on arrival, from the workers' recent trades of the symbol.
        They are pushed just after the settlement, so a first look may miss them."""
        buyer = record.side is Side.BUY
        fills: list[Trade] = []
        for _ in range(3):
            raw = await self.reads.lrange(keys.trades(spec.symbol), 0, RECENT_FILLS - 1)
            trades = [_trade.decode(t) for t in raw]
            fills = sorted((t for t in trades if t.taker_order_id == order_id), key=_by_seq)
            if sum(t.quantity for t in fills) >= record.filled:
                break
            await asyncio.sleep(POLL_S[0] * 5)
        return [
            {
                "price": scale.px(t.price),
                "qty": scale.qty(t.quantity),
                "commission": fee_text(scale, buyer, t.taker_fee),
                "commissionAsset": fee_asset(spec, record.side),
                "tradeId": t.seq,
            }
            for t in fills
        ]

    # -- reading ------------------------------------------------------------------------

    async def query_order(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        found = await self.find(key.user_id, spec.symbol, params)
        if found is None:
            raise BinanceError(Binance.NO_SUCH_ORDER)
        order_id, record = found
        return order_view(order_id, record, Scale(spec, market.decimals))

    async def find(
        self, user: str, symbol: str, params: Params, names: tuple[str, str] = _ORDER_NAMES
    ) -> tuple[int, OrderRecord] | None:
        """The user's order named by orderId or origClientOrderId (or other `names` for
        them), in this symbol."""
        by_id, by_client_id = names
        order_id = params.integer(by_id, 0, 2**63 - 1)
        client_id = params.get(by_client_id)
        if client_id is not None and not client_id_valid(client_id):
            # no order has it (PlaceOrder refuses it), and PostgreSQL's text holds no NUL
            raise BinanceError(Binance.ILLEGAL_CHARS, param=by_client_id)
        if order_id is None and client_id is None:
            raise BinanceError(
                Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                f"Param '{by_client_id}' or '{by_id}' must be sent, but both were empty/null!",
            )
        if order_id is None:
            assert client_id is not None
            known = await self.reads.get(keys.client_order(user, client_id))
            if known is not None:
                order_id = int(known)
            else:
                rows = await self.history.fetch(ORDER_BY_CLIENT_ID, user, client_id)
                if not rows:
                    return None
                order_id = rows[0]["order_id"]
        found = await self._record(user, order_id)
        if found is None or found.symbol != symbol:
            return None
        return order_id, found

    async def _record(self, user: str, order_id: int) -> OrderRecord | None:
        """Redis first (never behind the database), then the database."""
        raw = await self.reads.hgetall(keys.order(order_id))
        if raw:
            record = OrderRecord.from_hash(raw)
            return record if record.user_id == user else None
        rows = await self.history.fetch(ORDER_BY_ID, order_id)
        if not rows or rows[0]["user_id"] != user:
            return None
        return record_from_row(rows[0])

    async def open_orders(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market) if params.get("symbol") is not None else None
        found = await self._open(key.user_id, None if spec is None else spec.symbol)
        return [
            order_view(order_id, record, _scale(record.symbol, self.listing))
            for order_id, record in found
        ]

    async def _open(self, user: str, symbol: str | None) -> list[tuple[int, OrderRecord]]:
        """The user's open orders, oldest first: the database's, each checked against its
        Redis record (which is ahead of the row), and the newest ones Redis alone has."""
        statuses = [s.value for s in OPEN_STATUSES]
        args: list[Any] = [user, statuses, OPEN_LIMIT]
        if symbol is not None:
            args.append(symbol)
        rows = await self.history.fetch(OPEN_ORDERS[symbol is not None], *args)
        recent = await self.orders.recent_records(user)
        found: dict[int, OrderRecord] = {}
        for row in rows:
            if row["order_id"] not in recent:
                found[row["order_id"]] = record_from_row(row)
        fresh = await asyncio.gather(*(self.reads.hgetall(keys.order(i)) for i in found))
        for order_id, raw in zip(list(found), fresh, strict=True):
            if raw:
                found[order_id] = OrderRecord.from_hash(raw)
        for order_id, raw in recent.items():
            found[order_id] = OrderRecord.from_hash(raw)
        return sorted(
            (
                (order_id, record)
                for order_id, record in found.items()
                if record.status not in TERMINAL and (symbol is None or record.symbol == symbol)
            ),
            key=_by_id,
        )[:OPEN_LIMIT]

    async def all_orders(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        from_id = params.integer("orderId", 0, 2**63 - 1)
        start = params.integer("startTime", 0, MAX_TIME_MS)
        end = params.integer("endTime", 0, MAX_TIME_MS)
        limit = params.integer("limit", *ORDERS_LIMIT)
        assert limit is not None
        query, args = _all_orders_query(key.user_id, spec.symbol, limit, from_id, start, end)
        rows = await self.history.fetch(query, *args)
        found = {row["order_id"]: record_from_row(row) for row in rows}
        for order_id, raw in (await self.orders.recent_records(key.user_id)).items():
            record = OrderRecord.from_hash(raw)
            if (
                record.symbol == spec.symbol
                and (from_id is None or order_id >= from_id)
                and (start is None or record.created_ms >= start)
                and (end is None or record.created_ms <= end)
            ):
                found[order_id] = record
        chosen = sorted(found.items(), key=_by_id)
        chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
        scale = Scale(spec, market.decimals)
        return [order_view(order_id, record, scale) for order_id, record in chosen]

    # -- canceling ----------------------------------------------------------------------

    async def cancel_order(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        found = await self.find(key.user_id, spec.symbol, params)
        if found is None or found[1].status in TERMINAL:
            raise BinanceError(Binance.CANCEL_REJECTED)
        return await self.cancel(key.user_id, found[0], Scale(spec, market.decimals))

    async def cancel(self, user: str, order_id: int, scale: Scale) -> dict[str, Any]:
        try:
            await self.orders.cancel_order(user, order_id)
        except HTTPError as exc:
            if exc.status in (404, 409):  # gone or ended since the look: an unknown order
                raise BinanceError(Binance.CANCEL_REJECTED) from None
            raise translate(exc) from None
        record = await self._wait(user, order_id, _ended)
        reply = order_view(order_id, record, scale)
        if record.status not in TERMINAL:
            reply["status"] = PENDING_CANCEL
        return {
            "symbol": record.symbol,
            "origClientOrderId": record.client_order_id or "",
            "orderId": order_id,
            "orderListId": -1,
            "clientOrderId": record.client_order_id or "",
            "transactTime": now_ms(),
            **{k: reply[k] for k in _CANCELED_FIELDS},
        }

    async def cancel_open_orders(self, key: ApiKey, params: Params) -> Any:
        """Every open order of the symbol, one CANCEL each (concurrently: they share the
        pipelined client's round trips); those that ended meanwhile are left out."""
        market = self.listing.market
        spec = symbol_of(params, market)
        scale = Scale(spec, market.decimals)
        open_ = await self._open(key.user_id, spec.symbol)
        results = await asyncio.gather(
            *(self.cancel(key.user_id, order_id, scale) for order_id, _ in open_),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, BinanceError):
                raise result
        return [r for r in results if isinstance(r, dict)]


_CANCELED_FIELDS = (
    "price", "origQty", "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type",
    "side",
)  # fmt: skip


def _result(order_id: int, record: OrderRecord, scale: Scale, mode: str) -> dict[str, Any]:
    view = order_view(order_id, record, scale)
    return {
        "symbol": record.symbol,
        "orderId": order_id,
        "orderListId": -1,
        "clientOrderId": record.client_order_id or "",
        "transactTime": now_ms(),
        **{k: view[k] for k in _RESULT_FIELDS},
        # Binance names the stop price in the reply of a stop order only
        **({"stopPrice": view["stopPrice"]} if record.stop_price is not None else {}),
        "selfTradePreventionMode": mode,
    }


_RESULT_FIELDS = (
    "price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
    "timeInForce", "type", "side", "workingTime",
)  # fmt: skip


def _settled(record: OrderRecord) -> bool:
    return record.status is not OrderStatus.NEW


def _ended(record: OrderRecord) -> bool:
    return record.status in TERMINAL


def _by_seq(trade: Trade) -> int:
    return trade.seq


def _by_id(item: tuple[int, OrderRecord]) -> int:
    return item[0]


def _scale(symbol: str, listing: Listing) -> Scale:
    market = listing.market
    return Scale(market.specs.get(symbol), market.decimals)  # None: delisted, plain units
