"""Binance's user data stream: a user's own order events and balances, on Binance's terms.

Two ways in, as Binance has them:

- a listen key: `POST /api/v3/userDataStream` (X-MBX-APIKEY, no signature) -> `{"listenKey"}`
  (the user's live one again, its hour renewed, if it has one), `PUT ...?listenKey=` keeps
  it alive another 60 minutes, `DELETE ...?listenKey=` closes it (-1125 for a key that is
  not live). Then `/ws/<listenKey>` streams the payloads as they are, and ends with a
  `listenKeyExpired` event once the key is gone.
- the WebSocket API (`/ws-api/v3`, what ccxt 4.5's spot watch_orders, watch_my_trades and
  watch_balance use): `{"id", "method": "userDataStream.subscribe.signature", "params":
  {"apiKey", "timestamp", "signature", "recvWindow"?}}`, HMAC-SHA256 over the params but
  the signature sorted by name and joined as a query string (api/binance/signing.py
  verify) -> `{"id", "status": 200, "result": {"subscriptionId"}}`; each payload then comes
  as `{"subscriptionId", "event": payload}`. Also `ping`, `time` and
  `userDataStream.unsubscribe`; anything else is a -1020 error reply, the connection kept.

Payloads: `executionReport` for every order event (x: NEW, TRADE with l/z/L/Y/Z, n/N its
commission and asset, t the trade id = the event seq, m maker; CANCELED; EXPIRED for an IOC,
FOK or market remainder and a GTD expiry; TRADE_PREVENTION (X EXPIRED_IN_MATCH) for a
self-trade; REJECTED with r the reason; REPLACED for an in-place replace; DONE makes none,
its last TRADE says FILLED), then the balances: `balanceUpdate` for each deposit or
withdrawal (d, the signed amount) and `outboundAccountPosition` with the absolute free and
locked of each asset the read moved, from the fan-out's one balance step (store/balances.py
Moves, as /v1/ws `balances`), queued behind the same read's reports. An order placed before
the stream was opened (and a refused placement, which has no ACCEPTED) is read back from its
Redis record on its first event: its cumulative quantities are then the record's at that
read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.apikeys import READ, ApiKey, ApiKeyStore, well_formed
from api.binance.errors import Binance, BinanceError
from api.binance.signing import Params, verify
from api.binance.translate import TYPES, Scale, canceled_status, fee_text, show
from api.market import Listing
from api.request import now_ms
from api.sockets import MAX_MESSAGE_BYTES, Connection
from schema import keys
from schema.codes import CancelReason
from schema.fees import fee_asset
from schema.messages import (
    Accepted,
    Canceled,
    Done,
    Event,
    OrderType,
    Rejected,
    Replaced,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)
from schema.orders import OrderRecord
from schema.streams import LedgerEntry
from schema.symbols import SymbolSpec
from schema.wire import Balance

log = logging.getLogger("spot.api.binance.user")
_encode = msgspec.json.Encoder().encode

LISTEN_KEY_TTL_S = 3_600  # Binance's: 60 minutes from creation or the last keepalive
LISTEN_KEY_CHARS = 60


class ListenKeys:
    """`listenkey:{key}` -> user and `listenkeys:{user}` -> key, both expiring together."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def open(self, user: str) -> str:
        """The user's live key (its hour renewed), or a new one."""
        current = cast(bytes | None, await self.redis.get(keys.user_listen_key(user)))
        key = current.decode() if current else secrets.token_hex(LISTEN_KEY_CHARS // 2)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.listen_key(key), user, ex=LISTEN_KEY_TTL_S)
        pipe.set(keys.user_listen_key(user), key, ex=LISTEN_KEY_TTL_S)
        await pipe.execute()
        return key

    async def keep_alive(self, user: str, key: str) -> bool:
        if await self.user_of(key) != user:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.expire(keys.listen_key(key), LISTEN_KEY_TTL_S)
        pipe.expire(keys.user_listen_key(user), LISTEN_KEY_TTL_S)
        await pipe.execute()
        return True

    async def close(self, user: str, key: str) -> bool:
        if await self.user_of(key) != user:
            return False
        await self.redis.delete(keys.listen_key(key), keys.user_listen_key(user))
        return True

    async def user_of(self, key: str) -> str | None:
        if not (len(key) == LISTEN_KEY_CHARS and key.isascii() and key.isalnum()):
            return None
        user = cast(bytes | None, await self.redis.get(keys.listen_key(key)))
        return user.decode() if user else None


class UserStreamRoutes:
    """POST, PUT and DELETE /api/v3/userDataStream: a listen key opened, kept, closed."""

    def __init__(self, listen_keys: ListenKeys) -> None:
        self.listen_keys = listen_keys

    async def open(self, key: ApiKey, params: Params) -> Any:
        return {"listenKey": await self.listen_keys.open(key.user_id)}

    async def keep_alive(self, key: ApiKey, params: Params) -> Any:
        if not await self.listen_keys.keep_alive(key.user_id, params.required("listenKey")):
            raise BinanceError(Binance.NO_LISTEN_KEY)
        return {}

    async def close(self, key: ApiKey, params: Params) -> Any:
        if not await self.listen_keys.close(key.user_id, params.required("listenKey")):
            raise BinanceError(Binance.NO_LISTEN_KEY)
        return {}


# -- executionReport ------------------------------------------------------------------------


@dataclass
class OrderState:
    """What an executionReport repeats of its order, kept from its ACCEPTED on."""

    symbol: str
    side: Side
    type: str  # Binance's
    time_in_force: TimeInForce
    quantity: int  # what was asked (after a replace: filled + the new remaining)
    price: int | None
    stop_price: int | None
    client_order_id: str
    created_ms: int
    filled: int = 0
    notional: int = 0
    working: bool = True  # in the book (a stop waits outside it until triggered)

    @classmethod
    def accepted(cls, event: Accepted, at: int) -> OrderState:
        kind = TYPES[event.order_type]
        if event.order_type is OrderType.LIMIT and event.post_only:
            kind = "LIMIT_MAKER"
        return cls(
            symbol=event.symbol,
            side=event.side,
            type=kind,
            time_in_force=event.time_in_force,
            quantity=event.quantity,
            price=event.price,
            stop_price=event.stop_price,
            client_order_id=event.client_order_id or "",
            created_ms=at,
            working=event.stop_price is None,
        )

    @classmethod
    def recorded(cls, record: OrderRecord) -> OrderState:
        kind = TYPES[record.type]
        if record.type is OrderType.LIMIT and record.post_only:
            kind = "LIMIT_MAKER"
        waiting = record.stop_price is not None and not record.triggered
        return cls(
            symbol=record.symbol,
            side=record.side,
            type=kind,
            time_in_force=record.time_in_force,
            quantity=record.quantity,
            price=record.price,
            stop_price=record.stop_price,
            client_order_id=record.client_order_id or "",
            created_ms=record.created_ms,
            filled=record.filled,
            notional=record.notional,
            working=not waiting,
        )

    def order_status(self) -> str:
        if self.filled >= self.quantity:
            return "FILLED"
        return "PARTIALLY_FILLED" if self.filled else "NEW"


def _expiry(reason: CancelReason) -> tuple[str, str]:
    """(x, X) of a cancel: Binance expires what Spot canceled on its own."""
    shown = canceled_status(reason)
    if shown == "EXPIRED_IN_MATCH":
        return "TRADE_PREVENTION", shown
    return ("EXPIRED", shown) if shown == "EXPIRED" else ("CANCELED", shown)


@dataclass(frozen=True)
class Fill:
    """One side's part in a trade."""

    order_id: int
    quantity: int
    price: int
    trade_id: int
    maker: bool
    fee: int


def execution_report(
    order_id: int,
    state: OrderState,
    x: str,
    scale: Scale,
    spec: SymbolSpec | None,
    at: int,
    *,
    fill: Fill | None = None,
    order_status: str | None = None,
    reject_reason: str = "NONE",
) -> dict[str, Any]:
    """Binance's executionReport of `order_id` as `state` now has it."""
    buyer = state.side is Side.BUY
    last_qty = 0 if fill is None else fill.quantity
    last_price = 0 if fill is None else fill.price
    return {
        "e": "executionReport",
        "E": at,
        "s": state.symbol,
        "c": state.client_order_id,
        "S": state.side.value,
        "o": state.type,
        "f": state.time_in_force.value,
        "q": scale.qty(state.quantity),
        "p": scale.px(state.price),
        "P": scale.px(state.stop_price),
        "F": scale.qty(0),
        "g": -1,
        "C": "",
        "x": x,
        "X": order_status or state.order_status(),
        "r": reject_reason,
        "i": order_id,
        "l": scale.qty(last_qty),
        "z": scale.qty(state.filled),
        "L": scale.px(last_price),
        "n": "0" if fill is None else fee_text(scale, buyer, fill.fee),
        "N": None if fill is None or spec is None else fee_asset(spec, state.side),
        "T": at,
        "t": -1 if fill is None else fill.trade_id,
        "I": 0,
        "w": state.working and x not in ("CANCELED", "EXPIRED", "TRADE_PREVENTION", "REJECTED"),
        "m": fill is not None and fill.maker,
        "M": False,
        "O": state.created_ms,
        "Z": scale.amount(state.notional),
        "Y": scale.amount(last_qty * last_price),
        "Q": scale.amount(0),
        "W": state.created_ms,
    }


def order_ids(event: Event) -> list[tuple[str, int]]:
    """The (user, order id) an event is about: a trade's two, any other's one; none for a
    refused cancel or replace (Binance answers those on the request alone)."""
    if type(event) is Trade:
        assert isinstance(event, Trade)
        return [(event.maker_user_id, event.maker_order_id), (event.taker_user_id,
                event.taker_order_id)]  # fmt: skip
    if type(event) is Rejected:
        assert isinstance(event, Rejected)
        return [(event.user_id, event.order_id)] if event.action.value == "PLACE" else []
    assert isinstance(event, Accepted | Canceled | Replaced | Done | Triggered)
    return [(event.user_id, event.order_id)]


def reports(
    event: Event,
    user: str,
    order_id: int,
    state: OrderState | None,
    scale: Scale,
    spec: SymbolSpec | None,
    at: int,
) -> tuple[OrderState | None, list[dict[str, Any]]]:
    """The executionReports `event` makes for `user`'s order `order_id`, and the order's
    state after it (None: the order is over, or unknown and not made known by the event)."""
    kind = type(event)
    if kind is Accepted:
        assert isinstance(event, Accepted)
        state = OrderState.accepted(event, at)
        return state, [execution_report(order_id, state, "NEW", scale, spec, at)]
    if kind is Rejected:
        assert isinstance(event, Rejected)
        if state is None:
            return None, []
        report = execution_report(
            order_id, state, "REJECTED", scale, spec, at, order_status="REJECTED",
            reject_reason=event.reason.value,
        )  # fmt: skip
        return None, [report]
    if state is None:
        return None, []
    if kind is Trade:
        assert isinstance(event, Trade)
        maker = event.maker_order_id == order_id and event.maker_user_id == user
        fee = event.maker_fee if maker else event.taker_fee
        state.filled += event.quantity
        state.notional += event.quantity * event.price
        fill = Fill(order_id, event.quantity, event.price, event.seq, maker, fee)
        return state, [execution_report(order_id, state, "TRADE", scale, spec, at, fill=fill)]
    if kind is Canceled:
        assert isinstance(event, Canceled)
        x, shown = _expiry(event.reason)
        return None, [execution_report(order_id, state, x, scale, spec, at, order_status=shown)]
    if kind is Replaced:
        assert isinstance(event, Replaced)
        state.price = event.price
        state.quantity = state.filled + event.quantity
        return state, [execution_report(order_id, state, "REPLACED", scale, spec, at)]
    if kind is Triggered:
        assert isinstance(event, Triggered)
        state.working = True
        state.price = event.price
        return state, [execution_report(order_id, state, "NEW", scale, spec, at)]
    return None, []  # DONE: its last TRADE said FILLED already


# -- the connections ------------------------------------------------------------------------

Queued = tuple[Event | None, str, int | list[Balance] | LedgerEntry, int]
WS_API_PATH = "/ws-api/v3"
KEY_CHECK_S = 30.0  # how often the listen keys of open streams are looked at
QUEUE_LIMIT = 100_000  # order events waiting for their reports, past which the oldest go
ORDERS_KEPT = 100_000  # order states kept (the open orders of the users listening)


class UserStreams:
    """The private connections of Binance's streams (api/binance/streams.py hands them
    over): who listens to which user, and each user's order events as executionReports,
    made in order by one task (an order first seen without its ACCEPTED needs its record
    read from Redis)."""

    def __init__(
        self, redis: Redis, listing: Listing, listen_keys: ListenKeys, api_keys: ApiKeyStore
    ) -> None:
        self._redis = redis
        self._listing = listing
        self.listen_keys = listen_keys
        self._api_keys = api_keys
        self._users: dict[str, set[Connection]] = {}  # user -> its streams' connections
        # a WebSocket API connection -> its subscriptions: id -> user
        self._api: dict[Connection, dict[int, str]] = {}
        self._keyed: dict[Connection, tuple[str, str]] = {}  # /ws/<key>: (user, key)
        self._orders: dict[int, OrderState] = {}
        # in the fan-out's order: (event, user, order id, ms) for the reports; (None, user,
        # its balances, ms) for an outboundAccountPosition; (None, user, a deposit or
        # withdrawal, ms) for a balanceUpdate
        self._queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._checked_at = 0.0
        # the fan-out's start (MarketData.ensure_reading, set by api/binance/streams.py):
        # a subscription is answered once every event from then on will be read
        self.start_reading: Callable[[], Awaitable[None]] | None = None

    def listening(self) -> bool:
        return bool(self._users)

    def is_api(self, conn: Connection) -> bool:
        return conn in self._api

    # -- opening and closing --------------------------------------------------------------

    def open_api(self, conn: Connection) -> None:
        self._api[conn] = {}

    def open_key(self, conn: Connection, user: str, key: str) -> None:
        self._keyed[conn] = (user, key)
        conn.channels.add(key)  # a subscription: no idle timeout
        self._listen(conn, user)

    def _listen(self, conn: Connection, user: str) -> None:
        self._users.setdefault(user, set()).add(conn)
        if self._task is None:
            self._task = asyncio.create_task(self._reports_forever())

    def forget(self, conn: Connection) -> None:
        users = set(self._api.pop(conn, {}).values())
        keyed = self._keyed.pop(conn, None)
        if keyed is not None:
            users.add(keyed[0])
        for user in users:
            self._drop(conn, user)

    def _drop(self, conn: Connection, user: str) -> None:
        listeners = self._users.get(user)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del self._users[user]

    async def check_keys(self, now: float) -> None:
        """End the streams whose listen key is gone (expired or closed), as Binance does:
        a listenKeyExpired event, then the close."""
        if now - self._checked_at < KEY_CHECK_S or not self._keyed:
            return
        self._checked_at = now
        for conn, (user, key) in list(self._keyed.items()):
            if await self.listen_keys.user_of(key) != user:
                expired = {"e": "listenKeyExpired", "E": now_ms(), "listenKey": key}
                conn.close_with(_encode(expired).decode())
                self.forget(conn)

    # -- the WebSocket API ----------------------------------------------------------------

    async def handle(self, conn: Connection, data: bytes | str) -> None:
        """One request of the WebSocket API: its reply (an error one too) carries its id."""
        if len(data if isinstance(data, bytes) else data.encode()) > MAX_MESSAGE_BYTES:
            return self._error(conn, None, 400, -1020, "The request is too large.")
        try:
            request = json.loads(data)
        except ValueError:
            return self._error(conn, None, 400, -1000, "Malformed request: not JSON.")
        if not isinstance(request, dict):
            return self._error(conn, None, 400, -1000, "Malformed request: not an object.")
        rid, method, params = request.get("id"), request.get("method"), request.get("params", {})
        if not isinstance(params, dict):
            return self._error(conn, rid, 400, -1104, "Params must be an object.")
        if method == "ping":
            return self._result(conn, rid, {})
        if method == "time":
            return self._result(conn, rid, {"serverTime": now_ms()})
        if method == "userDataStream.subscribe.signature":
            return await self._subscribe(conn, rid, params)
        if method == "userDataStream.unsubscribe":
            return self._unsubscribe(conn, rid, params)
        error = Binance.UNSUPPORTED_OPERATION
        self._error(conn, rid, error.status, error.code, f"{error.text} ({method!r})")

    async def _subscribe(self, conn: Connection, rid: Any, params: dict[str, Any]) -> None:
        try:
            values = {name: _text(value) for name, value in params.items()}
            key = await self._api_keys_lookup(values.get("apiKey"))
            signature = values.pop("signature", None)
            signed = "&".join(f"{n}={v}" for n, v in sorted(values.items()))
            verify(key, signed, signature, Params(values), READ)
        except BinanceError as exc:
            return self._error(conn, rid, exc.error.status, exc.error.code, exc.msg)
        subscriptions = self._api.setdefault(conn, {})
        number = max(subscriptions, default=-1) + 1
        subscriptions[number] = key.user_id
        conn.channels.add(f"userDataStream:{number}")
        self._listen(conn, key.user_id)
        if self.start_reading is not None:
            await self.start_reading()
        self._result(conn, rid, {"subscriptionId": number})

    async def _api_keys_lookup(self, api_key: str | None) -> ApiKey:
        if api_key is None or not well_formed(api_key):
            raise BinanceError(Binance.BAD_API_KEY_FMT)
        key = await self._api_keys.lookup(api_key)
        if key is None:
            raise BinanceError(Binance.REJECTED_MBX_KEY)
        return key

    def _unsubscribe(self, conn: Connection, rid: Any, params: dict[str, Any]) -> None:
        subscriptions = self._api.get(conn, {})
        wanted = params.get("subscriptionId")
        for number in [n for n in subscriptions if wanted is None or n == wanted]:
            user = subscriptions.pop(number)
            conn.channels.discard(f"userDataStream:{number}")
            if user not in subscriptions.values():
                self._drop(conn, user)
        self._result(conn, rid, {})

    def _result(self, conn: Connection, rid: Any, result: Any) -> None:
        conn.push(_encode({"id": rid, "status": 200, "result": result}).decode())

    def _error(self, conn: Connection, rid: Any, status: int, code: int, msg: str) -> None:
        body = {"id": rid, "status": status, "error": {"code": code, "msg": msg}}
        conn.push(_encode(body).decode())

    # -- the reports ----------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """An event of the fan-out; its reports are made in order, by `_reports_forever`."""
        for user, order_id in order_ids(event):
            if user in self._users:
                self._put((event, user, order_id, now_ms()))

    def balance_users(self) -> Collection[str]:
        return self._users.keys()

    def on_balances(
        self, amounts: dict[str, list[Balance]], transfers: list[LedgerEntry], time_ms: int
    ) -> None:
        """A read's balances, sent after the reports of its events (the same queue)."""
        for transfer in transfers:
            if transfer.user in self._users:
                self._put((None, transfer.user, transfer, time_ms))
        for user, balances in amounts.items():
            if user in self._users:
                self._put((None, user, balances, time_ms))

    def _put(self, item: Queued) -> None:
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    async def _reports_forever(self) -> None:
        try:
            while self._users:
                try:
                    item = await asyncio.wait_for(self._queue.get(), KEY_CHECK_S)
                except TimeoutError:
                    continue
                try:
                    await self._deliver(*item)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("user data: Redis unavailable, a report lost: %r", exc)
                except Exception:
                    log.exception("user data: a report failed")
        finally:
            self._task = None

    async def _deliver(
        self, event: Event | None, user: str, what: int | list[Balance] | LedgerEntry, at: int
    ) -> None:
        listeners = self._users.get(user)
        if not listeners:
            return
        if event is None:
            assert not isinstance(what, int)
            payload = self._balances(what, at)
            for conn in list(listeners):
                self._send(conn, user, payload)
            return
        assert isinstance(what, int)
        await self._report(event, user, what, at, listeners)

    def _balances(self, what: list[Balance] | LedgerEntry, at: int) -> dict[str, Any]:
        decimals = self._listing.market.decimals
        if isinstance(what, LedgerEntry):
            amount = show(what.amount, decimals.get(what.asset, 0))
            return {"e": "balanceUpdate", "E": at, "a": what.asset, "d": amount, "T": at}
        held = [
            {"a": b.asset, "f": show(b.available, decimals.get(b.asset, 0)),
             "l": show(b.locked, decimals.get(b.asset, 0))}
            for b in what
        ]  # fmt: skip
        return {"e": "outboundAccountPosition", "E": at, "u": at, "B": held}

    async def _report(
        self, event: Event, user: str, order_id: int, at: int, listeners: set[Connection]
    ) -> None:
        state = self._orders.get(order_id)
        if state is None and type(event) is not Accepted:
            state = await self._recorded(order_id, event)
        spec = self._listing.spec(event.symbol)
        scale = Scale(spec, self._listing.market.decimals)
        after, payloads = reports(event, user, order_id, state, scale, spec, at)
        if after is None:
            self._orders.pop(order_id, None)
        else:
            if len(self._orders) >= ORDERS_KEPT:  # of users gone: read back when seen again
                self._orders.clear()
            self._orders[order_id] = after
        for payload in payloads:
            for conn in list(listeners):
                self._send(conn, user, payload)

    async def _recorded(self, order_id: int, event: Event) -> OrderState | None:
        """An order placed before its user's stream opened, from its record; the record has
        this event's fill in it already (settled before the event was written)."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(keys.order(order_id)))
        if not raw:
            return None
        state = OrderState.recorded(OrderRecord.from_hash(raw))
        if isinstance(event, Trade):
            state.filled -= event.quantity
            state.notional -= event.quantity * event.price
        return state

    def _send(self, conn: Connection, user: str | None, payload: dict[str, Any]) -> None:
        subscriptions = self._api.get(conn)
        if subscriptions is None:
            conn.push(_encode(payload).decode())
            return
        for number, whose in subscriptions.items():
            if user is None or whose == user:
                conn.push(_encode({"subscriptionId": number, "event": payload}).decode())


def _text(value: Any) -> str:
    """A WebSocket API parameter as it is signed: a JSON number or string as written."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BinanceError(Binance.ILLEGAL_CHARS, "Illegal characters found in a parameter.")
    return str(value)
