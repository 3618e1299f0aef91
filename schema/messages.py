"""Commands into the matching core and the events it emits.

Commands and events are tagged msgspec Structs: the tag (`action` for commands,
`type` for events) names the message on the wire. They are never mutated once made.
New fields go last, with defaults, so old payloads still decode.
"""

from enum import StrEnum

import msgspec

from schema.codes import CancelReason, RejectReason


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    # Stops wait outside the book until a trade reaches `stop_price`, then run as a LIMIT
    # (STOP_LIMIT) or a MARKET (STOP_MARKET) order under their own id.
    STOP_LIMIT = "STOP_LIMIT"
    STOP_MARKET = "STOP_MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    # GTC until `expire_at_ms`: an EXPIRE command at or past it cancels the order.
    GTD = "GTD"


class SelfTrade(StrEnum):
    """What happens when an order meets a resting order of its own user."""

    CANCEL_RESTING = "CANCEL_RESTING"
    CANCEL_INCOMING = "CANCEL_INCOMING"
    CANCEL_BOTH = "CANCEL_BOTH"


class Action(StrEnum):
    PLACE = "PLACE"
    CANCEL = "CANCEL"
    REPLACE = "REPLACE"
    EXPIRE = "EXPIRE"
    CANCEL_ALL = "CANCEL_ALL"


# -- commands ---------------------------------------------------------------------------

_command = {"tag_field": "action", "frozen": True, "kw_only": True, "gc": False}


class Place(msgspec.Struct, tag="PLACE", **_command):
    order_id: int
    user_id: str
    symbol: str
    side: Side
    quantity: int
    type: OrderType = OrderType.LIMIT
    price: int | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    self_trade: SelfTrade = SelfTrade.CANCEL_RESTING
    client_order_id: str | None = None
    # MARKET and STOP_MARKET: never trade beyond this price. The router sets it to the
    # price the order's funds were held at, so a market buy can never spend more than it
    # locked.
    protection_price: int | None = None
    # STOP_LIMIT and STOP_MARKET only (required there, refused elsewhere): a BUY stop
    # triggers on a trade at or above it, a SELL stop on a trade at or below it.
    stop_price: int | None = None
    # This order's fee rates in basis points; None takes the symbol's. The router fills
    # them from the user's fee tier. A resting order keeps the maker rate it came with.
    maker_fee_bps: int | None = None
    taker_fee_bps: int | None = None
    # GTD only (required there, refused elsewhere): milliseconds since the epoch, compared
    # with the `now_ms` of EXPIRE commands, never with a clock of the book's own.
    expire_at_ms: int | None = None


class Cancel(msgspec.Struct, tag="CANCEL", **_command):
    order_id: int
    user_id: str
    symbol: str


class Replace(msgspec.Struct, tag="REPLACE", **_command):
    """New price and/or new remaining quantity; None keeps the current one."""

    order_id: int
    user_id: str
    symbol: str
    price: int | None = None
    quantity: int | None = None


class Expire(msgspec.Struct, tag="EXPIRE", **_command):
    """The symbol's clock: cancels (reason EXPIRED) every resting GTD order and untriggered
    GTD stop with expire_at_ms <= now_ms, in order-id order. Time reaches the book only
    through this command, so replaying a stream replays the expiries too. A now_ms older
    than the book's clock changes nothing. order_id and user_id only name the command in a
    Rejected (an unknown symbol)."""

    symbol: str
    now_ms: int
    order_id: int = 0
    user_id: str = ""


class CancelAll(msgspec.Struct, tag="CANCEL_ALL", **_command):
    """Cancels (reason USER) every resting order and untriggered stop of `user_id` in
    `symbol`, in order-id order; nothing at all when there is none. `order_id` is the
    request's id: no order's, so that a settlement reading it as the incoming order finds
    none."""

    user_id: str
    symbol: str
    order_id: int = 0


Command = Place | Cancel | Replace | Expire | CancelAll


# -- events -----------------------------------------------------------------------------
# Every event carries its symbol and the symbol's gap-free sequence number, so a
# consumer that sees an event twice (a replay after a crash) can drop the repeat.

# omit_defaults: the fields added later (with defaults) are left out while they hold their
# default, so an event that does not use them encodes exactly as it did before they existed.
_event = {"tag_field": "type", "frozen": True, "gc": False, "omit_defaults": True}


class Accepted(msgspec.Struct, tag="ACCEPTED", **_event):
    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side
    order_type: OrderType
    price: int | None
    quantity: int
    time_in_force: TimeInForce
    post_only: bool
    client_order_id: str | None
    stop_price: int | None = None  # set for a stop: it waits outside the book, untriggered
    expire_at_ms: int | None = None  # set for GTD


class Rejected(msgspec.Struct, tag="REJECTED", **_event):
    symbol: str
    seq: int
    order_id: int
    user_id: str
    action: Action
    reason: RejectReason


class Trade(msgspec.Struct, tag="TRADE", **_event):
    """The price is always the resting (maker) order's price.

    Fees are charged on what each side receives, in that asset's minor units: the buyer
    pays in base (rate × quantity / 10_000), the seller in quote (rate × price × quantity /
    10_000). Rounded in the exchange's favour: a fee up, a rebate (a negative maker fee)
    down in magnitude."""

    symbol: str
    seq: int
    price: int
    quantity: int
    maker_order_id: int
    taker_order_id: int
    maker_user_id: str
    taker_user_id: str
    taker_side: Side
    maker_fee: int = 0
    taker_fee: int = 0


class Canceled(msgspec.Struct, tag="CANCELED", **_event):
    """`remaining` is what was left unfilled; `price` is None for a MARKET or STOP_MARKET
    order. `protection_price` is set only when an untriggered STOP_MARKET leaves (cancel,
    cancel-all, expiry): its Place's protection_price, the price its hold was taken at."""

    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side
    price: int | None
    remaining: int
    reason: CancelReason
    protection_price: int | None = None


class Replaced(msgspec.Struct, tag="REPLACED", **_event):
    """`quantity` is the new remaining quantity; `priority_kept` is False on re-entry."""

    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side
    price: int
    quantity: int
    old_price: int
    old_quantity: int
    priority_kept: bool


class Done(msgspec.Struct, tag="DONE", **_event):
    """The order is completely filled."""

    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side


class Triggered(msgspec.Struct, tag="TRIGGERED", **_event):
    """A stop was reached: from here on it is an incoming order under its own id, a LIMIT
    at `price` (STOP_LIMIT) or a MARKET (STOP_MARKET) with `time_in_force`; its trades,
    DONE or CANCELED follow, as for a placed order (no second ACCEPTED). `last_price` is
    the symbol's last trade price when it starts to run."""

    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side
    order_type: OrderType
    stop_price: int
    price: int | None
    quantity: int
    time_in_force: TimeInForce
    last_price: int
    protection_price: int | None


Event = Accepted | Rejected | Trade | Canceled | Replaced | Done | Triggered
