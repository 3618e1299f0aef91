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


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class SelfTrade(StrEnum):
    """What happens when an order meets a resting order of its own user."""

    CANCEL_RESTING = "CANCEL_RESTING"
    CANCEL_INCOMING = "CANCEL_INCOMING"
    CANCEL_BOTH = "CANCEL_BOTH"


class Action(StrEnum):
    PLACE = "PLACE"
    CANCEL = "CANCEL"
    REPLACE = "REPLACE"


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
    # MARKET only: never trade beyond this price. The router sets it to the price the
    # order's funds were held at, so a market buy can never spend more than it locked.
    protection_price: int | None = None


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


Command = Place | Cancel | Replace


# -- events -----------------------------------------------------------------------------
# Every event carries its symbol and the symbol's gap-free sequence number, so a
# consumer that sees an event twice (a replay after a crash) can drop the repeat.

_event = {"tag_field": "type", "frozen": True, "gc": False}


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


class Rejected(msgspec.Struct, tag="REJECTED", **_event):
    symbol: str
    seq: int
    order_id: int
    user_id: str
    action: Action
    reason: RejectReason


class Trade(msgspec.Struct, tag="TRADE", **_event):
    """The price is always the resting (maker) order's price."""

    symbol: str
    seq: int
    price: int
    quantity: int
    maker_order_id: int
    taker_order_id: int
    maker_user_id: str
    taker_user_id: str
    taker_side: Side


class Canceled(msgspec.Struct, tag="CANCELED", **_event):
    """`remaining` is what was left unfilled; `price` is None for a MARKET order."""

    symbol: str
    seq: int
    order_id: int
    user_id: str
    side: Side
    price: int | None
    remaining: int
    reason: CancelReason


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


Event = Accepted | Rejected | Trade | Canceled | Replaced | Done
