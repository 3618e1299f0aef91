"""Spot's records in Binance's words: integer minor units as decimal strings (exactly, both
ways, never through a float), order types, statuses and self-trade modes.

Numbers. An asset with d decimals (keys.ASSETS) counts its amounts in 10**-d units: a
quantity of q base units is q / 10**base_decimals; a notional (price x quantity) of n quote
units is n / 10**quote_decimals. A price of p quote units per base unit is then
p * 10**base_decimals / 10**quote_decimals per whole base asset: the price's decimals are
quote_decimals - base_decimals (negative, its ticks are tens, hundreds...). A value that
is not a whole number of those units is off the grid, and refused, never rounded.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from api.history import EPOCH, MILLISECOND, ms
from schema.codes import CancelReason
from schema.messages import OrderType, SelfTrade, Side, TimeInForce
from schema.orders import OrderRecord, OrderStatus
from schema.symbols import SymbolSpec

# The latest startTime/endTime taken (ms, the year 5138): a moment past datetime's (the
# year 9999), or a month after it, would be no moment at all.
MAX_TIME_MS = 10**14
# Binance's own legal range for a decimal parameter.
DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")


class Scale:
    """One symbol's decimals: base quantity, quote amount, and the price between them."""

    __slots__ = ("base", "quote", "price")

    def __init__(self, spec: SymbolSpec | None, decimals: dict[str, int]) -> None:
        """None: a symbol no longer listed, its amounts shown as plain minor units."""
        self.base = 0 if spec is None else decimals.get(spec.base, 0)
        self.quote = 0 if spec is None else decimals.get(spec.quote, 0)
        self.price = self.quote - self.base

    def qty(self, units: int) -> str:
        return show(units, self.base)

    def amount(self, units: int) -> str:
        """A quote amount (a notional, a fee in quote)."""
        return show(units, self.quote)

    def px(self, units: int | None) -> str:
        return show(units or 0, self.price)


def show(units: int, decimals: int) -> str:
    """`units` of 10**-decimals as a decimal string, all its decimals written out."""
    if decimals <= 0:
        return str(units * 10**-decimals)
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}"


def parse(text: str, decimals: int) -> int | None:
    """A decimal string as a whole number of 10**-decimals units, or None when it is not
    one (more decimals than the asset has, or a price finer than the quote's unit). The
    caller checks the text against DECIMAL first."""
    if decimals >= 0 and text[:1] != "-":
        # digits[.digits]: the digits with the point moved, by hand (Decimal costs twice
        # as much, on each price and quantity of every order)
        whole, _, fraction = text.partition(".")
        if len(fraction) > decimals:
            if fraction[decimals:].strip("0"):
                return None
            fraction = fraction[:decimals]
        return int(whole + fraction.ljust(decimals, "0"))
    try:
        value = Decimal(text).scaleb(decimals)
    except InvalidOperation:
        return None
    if value != value.to_integral_value():
        return None
    return int(value)


# -- orders ---------------------------------------------------------------------------------

# What Binance calls Spot's order types (LIMIT with post_only is LIMIT_MAKER).
TYPES = {
    OrderType.LIMIT: "LIMIT",
    OrderType.MARKET: "MARKET",
    OrderType.STOP_LIMIT: "STOP_LOSS_LIMIT",
    OrderType.STOP_MARKET: "STOP_LOSS",
}
# Binance's self-trade prevention modes: which order of the two the match expires.
SELF_TRADE = {
    "EXPIRE_TAKER": SelfTrade.CANCEL_INCOMING,
    "EXPIRE_MAKER": SelfTrade.CANCEL_RESTING,
    "EXPIRE_BOTH": SelfTrade.CANCEL_BOTH,
}
SELF_TRADE_DEFAULT = "EXPIRE_MAKER"  # Spot's default, CANCEL_RESTING
SELF_TRADE_NAMES = {mode: name for name, mode in SELF_TRADE.items()}
# A cancel Spot did on its own: Binance says the order EXPIRED (its time in force ran out,
# or a market order found no more liquidity), or EXPIRED_IN_MATCH (self-trade prevention).
_EXPIRED: dict[str | None, str] = {
    CancelReason.IOC_REMAINDER: "EXPIRED",
    CancelReason.FOK_UNFILLABLE: "EXPIRED",
    CancelReason.MARKET_REMAINDER: "EXPIRED",
    CancelReason.EXPIRED: "EXPIRED",
    CancelReason.SELF_TRADE: "EXPIRED_IN_MATCH",
}
_STATUSES = {
    OrderStatus.NEW: "NEW",  # queued, no worker has taken it yet
    OrderStatus.OPEN: "NEW",  # resting, nothing filled
    OrderStatus.UNTRIGGERED: "NEW",  # a stop waiting for its price: Binance says NEW
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.REJECTED: "REJECTED",
}
PENDING_CANCEL = "PENDING_CANCEL"  # canceled, the worker has not applied it yet
_STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)


def status(order: OrderRecord) -> str:
    if order.status is OrderStatus.CANCELED:
        return canceled_status(order.reason)
    return _STATUSES[order.status]


def canceled_status(reason: str | None) -> str:
    """A canceled order's Binance status by why it was canceled."""
    return _EXPIRED.get(reason, "CANCELED")


def order_type(order: OrderRecord) -> str:
    if order.type is OrderType.LIMIT and order.post_only:
        return "LIMIT_MAKER"
    return TYPES[order.type]


def record_from_row(row: Any) -> OrderRecord:
    """An order row of the database (api/history.py's ORDER_COLUMNS) as the Redis record."""
    return OrderRecord(
        stop_price=row["stop_price"],
        expire_at_ms=row["expire_at_ms"],
        triggered=bool(row["triggered"]),
        user_id=row["user_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        price=row["price"],
        quantity=row["quantity"],
        remaining=row["remaining"],
        filled=row["filled"],
        notional=row["notional"],
        time_in_force=TimeInForce(row["time_in_force"]),
        post_only=bool(row["post_only"]),  # MySQL's BOOLEAN is a TINYINT
        client_order_id=row["client_order_id"],
        status=OrderStatus(row["status"]),
        pays_with="",
        created_ms=ms(row["created_at"]),
        reason=row["reason"],
    )


def moment(at_ms: int | None) -> datetime | None:
    """ms since the epoch as the database's timestamp; None stays None."""
    return None if at_ms is None else EPOCH + at_ms * MILLISECOND


def order_view(order_id: int, order: OrderRecord, scale: Scale) -> dict[str, Any]:
    """The order as GET /api/v3/order answers it (and openOrders, allOrders)."""
    stop = order.stop_price
    waiting = order.type in _STOPS and not order.triggered
    return {
        "symbol": order.symbol,
        "orderId": order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id or "",
        "price": scale.px(order.price),
        "origQty": scale.qty(order.quantity),
        "executedQty": scale.qty(order.filled),
        "cummulativeQuoteQty": scale.amount(order.notional),
        "status": status(order),
        "timeInForce": order.time_in_force.value,
        "type": order_type(order),
        "side": order.side.value,
        "stopPrice": scale.px(stop),
        "icebergQty": scale.qty(0),
        "time": order.created_ms,
        "updateTime": order.created_ms,
        "isWorking": not waiting,
        "workingTime": order.created_ms,
        "origQuoteOrderQty": scale.amount(0),
    }


def fee_text(scale: Scale, buyer: bool, fee: int) -> str:
    """A fee in what its side received (schema/fees.py): the buyer's base, the seller's
    quote; negative, a maker's rebate."""
    return scale.qty(fee) if buyer else scale.amount(fee)
