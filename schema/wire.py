"""What travels over HTTP: request bodies and replies of the v1 API (DESIGN.md §2).

Requests forbid unknown fields, so a misspelt `post_onyl` is a 400 rather than an
order placed without it. Prices, quantities and amounts are integers (minor units,
base units); msgspec's strict typing refuses floats, strings and booleans for them.
Replies omit fields left at their default, so an optional field that does not apply
is absent rather than null.
"""

from typing import Annotated, Literal

import msgspec

from schema.messages import OrderType, SelfTrade, Side, TimeInForce
from schema.orders import OrderStatus
from schema.symbols import SymbolSpec

# Amounts cross the order scripts (store/lua/) as doubles: exact up to 2^53.
MAX_INTEGER = 2**53

# `(?!\n)$`: Python's `$` also matches before a final newline, so without it "u1\n"
# would pass as a user distinct from "u1". The lookahead is ECMA regex too (OpenAPI).
_END = r"(?!\n)$"
# A user id is part of Redis key names (`balance:{user}`, `cid:{user}:{client id}`):
# no ':' in it keeps `cid:` keys of different users from ever colliding.
USER_ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}" + _END
UserId = Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)]
# Free text a client may send: no control characters. PostgreSQL's text cannot hold NUL,
# and one such value accepted at the door made every later flush of the batcher fail.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*" + _END
ClientOrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
Asset = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
# Zero and negative prices pass here and are refused by the symbol rules (422), which
# name the rule; only what no rule could ever accept is malformed.
Integer = Annotated[int, msgspec.Meta(le=MAX_INTEGER)]
Amount = Annotated[int, msgspec.Meta(gt=0, le=MAX_INTEGER)]

# What GET /v1/orders?status= may name: NEW until a worker has taken the order, then OPEN,
# PARTIALLY_FILLED, or one of the ends (schema.orders.TERMINAL).
ORDER_STATUSES: tuple[str, ...] = tuple(status.value for status in OrderStatus)
Liquidity = Literal["MAKER", "TAKER"]

_request = {"forbid_unknown_fields": True, "kw_only": True, "frozen": True, "gc": False}
_reply = {"kw_only": True, "omit_defaults": True, "gc": False}


# -- requests -----------------------------------------------------------------------------


class PlaceOrder(msgspec.Struct, **_request):
    """LIMIT (price), MARKET, STOP_LIMIT (stop_price and price) or STOP_MARKET (stop_price).
    A stop waits outside the book until a trade reaches stop_price (at or above it for a
    BUY, at or below for a SELL), then runs as its LIMIT or MARKET order; it is refused if
    the last price reaches it already. time_in_force GTD needs expire_at_ms (ms since the
    epoch, ahead of now and at most 90 days)."""

    symbol: Symbol
    side: Side
    quantity: Integer
    type: OrderType = OrderType.LIMIT
    price: Integer | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    self_trade: SelfTrade = SelfTrade.CANCEL_RESTING
    client_order_id: ClientOrderId | None = None
    stop_price: Integer | None = None
    expire_at_ms: Integer | None = None


class ReplaceOrder(msgspec.Struct, **_request):
    """A new price and/or a new remaining quantity; at least one of them."""

    price: Integer | None = None
    quantity: Integer | None = None


class Deposit(msgspec.Struct, **_request):
    user_id: UserId
    asset: Asset
    amount: Amount
    # Who or what asked for it (a bank transfer id...); kept in the ledger stream.
    reference: Annotated[str, msgspec.Meta(max_length=128, pattern=TEXT_PATTERN)] | None = None


class Withdrawal(Deposit, **_request):
    pass


class FeeRates(msgspec.Struct, **_request):
    """A user's fee tier, in place of every symbol's rates: basis points of what each side
    receives, the maker's negative for a rebate. The rule (schema.symbols.fee_rates_valid:
    0 <= taker <= 10000, -taker <= maker <= 10000) is a 422, not a malformed body."""

    maker_fee_bps: Integer
    taker_fee_bps: Integer


# -- replies ------------------------------------------------------------------------------


class OrderAccepted(msgspec.Struct, **_reply):
    """202: the command is queued; its outcome shows in GET /v1/orders/{id}."""

    order_id: int
    status: str  # NEW, CANCEL_REQUESTED or REPLACE_REQUESTED
    client_order_id: str | None = None


class CancelAllAccepted(msgspec.Struct, **_reply):
    """202: a cancel of every open order and untriggered stop of the caller's is queued for
    each of `symbols` (all listed ones, or the one asked for); each order's CANCELED shows in
    GET /v1/orders and on the private WebSocket channel."""

    status: str  # CANCEL_ALL_REQUESTED
    symbols: list[str]


class OrderView(msgspec.Struct, **_reply):
    order_id: int
    symbol: str
    side: Side
    type: OrderType
    price: int | None
    quantity: int
    remaining: int
    filled: int
    # notional // filled, rounded down; None before the first fill
    average_price: int | None
    time_in_force: TimeInForce
    post_only: bool
    client_order_id: str | None
    status: str
    created_ms: int
    # a replace is queued and not applied yet
    replace_pending: bool = False
    # why it was canceled or rejected (schema.codes), when that is known
    reason: str | None = None
    # STOP_LIMIT and STOP_MARKET: the trade price that triggers it, and whether one has (an
    # UNTRIGGERED stop waits outside the book; once triggered it runs as its LIMIT or
    # MARKET order under the same id)
    stop_price: int | None = None
    triggered: bool | None = None
    # GTD: when it expires (ms since the epoch); it ends CANCELED with reason EXPIRED
    expire_at_ms: int | None = None


class Orders(msgspec.Struct, **_reply):
    """The caller's orders, newest (highest order id) first."""

    orders: list[OrderView]


class Fill(msgspec.Struct, **_reply):
    """One trade as one of its two users sees it: their order, their side."""

    order_id: int
    symbol: str
    side: Side
    price: int
    quantity: int
    liquidity: Liquidity  # MAKER: the order rested in the book; TAKER: it came in and crossed
    seq: int  # the trade's symbol sequence number
    created_ms: int  # when the trade was written to the database
    # What this side paid, in what it received (base for a BUY, quote for a SELL), in that
    # asset's minor units; negative for a maker's rebate. Already taken from the balance.
    fee: int
    fee_asset: str


class Fills(msgspec.Struct, **_reply):
    """The caller's fills, newest first."""

    fills: list[Fill]


LedgerType = Literal["DEPOSIT", "WITHDRAWAL", "TRADE", "FEE", "REBATE"]


class LedgerEntry(msgspec.Struct, **_reply):
    """One change to one of the caller's balances (available + locked: a hold moves nothing
    between them that the ledger counts). A trade is two entries, what the side received
    and what it paid, and a third when it had a fee (FEE, negative) or a rebate (REBATE,
    positive); `id` names the entry for good."""

    id: str
    type: LedgerType
    asset: str
    amount: int  # signed, in the asset's minor units
    created_ms: int  # when the batcher wrote it to the database
    reference: str | None = None  # DEPOSIT, WITHDRAWAL: who or what asked for it
    # TRADE, FEE, REBATE: the trade and the caller's side of it
    symbol: str | None = None
    seq: int | None = None  # the trade's symbol sequence number
    order_id: int | None = None
    side: Side | None = None
    price: int | None = None
    quantity: int | None = None
    liquidity: Liquidity | None = None


class Ledger(msgspec.Struct, **_reply):
    """The caller's ledger, newest first; `next_cursor` (absent on the last page) is passed
    back as ?cursor= for the page after."""

    entries: list[LedgerEntry]
    next_cursor: str | None = None


class Balance(msgspec.Struct, **_reply):
    asset: str
    available: int
    locked: int


class Balances(msgspec.Struct, **_reply):
    user_id: str
    balances: list[Balance]


class Transferred(msgspec.Struct, **_reply):
    """A deposit or withdrawal done: the user's available balance of the asset after it."""

    user_id: str
    asset: str
    available: int


class FeeTierView(msgspec.Struct, **_reply):
    """A user's fee tier, as set (PUT), found (GET) or removed (DELETE)."""

    user_id: str
    maker_fee_bps: int
    taker_fee_bps: int


class Symbols(msgspec.Struct, **_reply):
    symbols: list[SymbolSpec]


class Book(msgspec.Struct, kw_only=True, gc=False):
    """Price levels, best first: [[price, quantity], ...]; `seq` is the symbol's event
    sequence number the snapshot reflects."""

    symbol: str
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    seq: int


class DepthCache(msgspec.Struct, gc=False):
    """The workers' `depth:{symbol}` cache (workers/worker.py writes it as JSON): the top
    50 levels a side, read back by GET /v1/book/{symbol} and the WebSocket depth channel."""

    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    seq: int


NO_DEPTH = DepthCache(bids=[], asks=[], seq=0)  # a symbol with no cache yet: no event yet


class PublicTrade(msgspec.Struct, kw_only=True, gc=False):
    """A trade as anyone may see it: no user ids, no order ids."""

    seq: int
    price: int
    quantity: int
    taker_side: Side


class Trades(msgspec.Struct, kw_only=True, gc=False):
    symbol: str
    trades: list[PublicTrade]


class Candle(msgspec.Struct, kw_only=True, gc=False):
    """One interval's candle, summed from the batcher's one-minute candles (api/candles.py):
    prices in quote minor units, volumes in base units, `quote_volume` in quote minor
    units; `first_seq`..`last_seq` the symbol's trades in it (-1 both for an interval
    without trades: a candle at the last close with no volume, from the first trade on).
    `close_time` is the last millisecond of the interval."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    trades: int
    first_seq: int
    last_seq: int


class Klines(msgspec.Struct, kw_only=True, gc=False):
    """GET /v1/klines: oldest first."""

    symbol: str
    interval: str
    klines: list[Candle]


# forbid_unknown_fields: its schema then forbids other fields, so a MigrationConflict (one
# field more) is not an Error too, as the OpenAPI document's 409 `oneOf` needs.
class Error(msgspec.Struct, forbid_unknown_fields=True, **_reply):
    """`error` is the code (schema/codes.py), `message` says why for people."""

    error: str
    message: str
    # 409 on a repeated client_order_id: the order that id already belongs to
    order_id: int | None = None


REQUESTS = (PlaceOrder, ReplaceOrder, Deposit, Withdrawal, FeeRates)
REPLIES = (
    OrderAccepted,
    CancelAllAccepted,
    OrderView,
    Orders,
    Fills,
    Ledger,
    Balances,
    Transferred,
    FeeTierView,
    Symbols,
    Book,
    Trades,
    Klines,
    Error,
)


# -- hot-shard migration (admin) ------------------------------------------------------------
# Kept apart from REQUESTS / REPLIES above: api/openapi.py adds MIGRATION_TYPES.

# Seconds each step may take before the migration rolls back (control.migration).
StepTimeout = Annotated[float, msgspec.Meta(gt=0, le=300)]


class StartMigration(msgspec.Struct, **_request):
    """Move `symbol` to shard `to_shard`, live (DESIGN.md §4). The shard's range depends on
    the exchange's SPOT_SHARDS: out of it is a 422, not a malformed body."""

    symbol: Symbol
    to_shard: Integer
    timeout_s: StepTimeout = 5.0


class MigrationStep(msgspec.Struct, **_reply):
    """One step's persisted times (ms since the epoch); absent while not begun or ended."""

    step: str  # PAUSE, DRAIN, TRANSFER, SWITCH, ROLLBACK, CLEANUP
    start_ms: int | None = None
    end_ms: int | None = None
    duration_ms: int | None = None


class MigrationView(msgspec.Struct, **_reply):
    id: str
    symbol: str
    from_shard: int
    to_shard: int
    state: str  # RUNNING, ROLLING_BACK, then DONE or ROLLED_BACK
    step: str  # the next step to run; DONE once finished
    created_ms: int
    timeout_ms: int
    steps: list[MigrationStep]
    epoch: int | None = None  # the route's epoch from the pause on
    paused_ms: int | None = None  # when new orders started to wait in pending:{symbol}
    switched_ms: int | None = None  # when the route became ACTIVE again
    paused_for_ms: int | None = None  # switched_ms - paused_ms
    pending: int | None = None  # commands buffered during the pause, replayed at the switch
    pending_waited_ms: int | None = None  # the oldest of them, until the switch
    pending_applied_ms: int | None = None  # the oldest of them, until the shard applied all
    rolled_back_at: str | None = None  # the step that timed out
    rollback_reason: str | None = None
    finished_ms: int | None = None
    expires_ms: int | None = None  # when the finished record is forgotten


class Migrations(msgspec.Struct, **_reply):
    """Running migrations first, then finished ones, each newest first."""

    migrations: list[MigrationView]


class MigrationConflict(msgspec.Struct, **_reply):
    """409: the symbol is being moved already, by `migration_id`."""

    error: str
    message: str
    migration_id: str


MIGRATION_TYPES = (StartMigration, MigrationView, Migrations, MigrationConflict)


# -- API keys (POST, GET /v1/api-keys; DELETE /v1/api-keys/{key}) ----------------------------
# Kept apart like the migration types: api/openapi.py adds API_KEY_TYPES.

# `read`: the account, orders and trades of its user; `trade`: placing and canceling too.
Permission = Literal["read", "trade"]


def _read_only() -> list[Permission]:
    return ["read"]


class NewApiKey(msgspec.Struct, **_request):
    """What the new key may do; read-only unless asked (a leaked read key moves nothing)."""

    permissions: Annotated[list[Permission], msgspec.Meta(min_length=1, max_length=2)] = (
        msgspec.field(default_factory=_read_only)
    )


class ApiKeyView(msgspec.Struct, **_reply):
    api_key: str
    permissions: list[str]
    created_ms: int


class ApiKeyCreated(ApiKeyView, **_reply):
    """201: the secret signs requests (HMAC-SHA256, Binance's way). It is shown this once:
    the server derives it again when it checks a signature and stores it nowhere."""

    secret: str


class ApiKeys(msgspec.Struct, **_reply):
    """The caller's API keys, oldest first; never their secrets."""

    api_keys: list[ApiKeyView]


API_KEY_TYPES = (NewApiKey, ApiKeyView, ApiKeyCreated, ApiKeys)
