"""A Binance new order's parameters as /v1's PlaceOrder (POST /api/v3/order and the new
half of cancelReplace): the type, side and time in force in Spot's words, prices and
quantities in integer units (off the grid is the filter's failure), the self-trade mode;
what Spot has nothing for is refused, never ignored. The symbol's rules and the funds are
/v1's to check, when the order is queued (api/orders.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from api.binance.errors import Binance, BinanceError
from api.binance.signing import Params
from api.binance.translate import (
    DECIMAL,
    SELF_TRADE,
    SELF_TRADE_DEFAULT,
    SELF_TRADE_NAMES,
    Scale,
    parse,
)
from schema.messages import OrderType, SelfTrade, TimeInForce
from schema.symbols import SymbolSpec
from schema.wire import MAX_INTEGER, ClientOrderId, PlaceOrder

# Binance's types that Spot has, as (Spot type, post_only); TAKE_PROFIT* it has not.
ORDER_TYPES: dict[str, tuple[OrderType, bool]] = {
    "LIMIT": (OrderType.LIMIT, False),
    "LIMIT_MAKER": (OrderType.LIMIT, True),
    "MARKET": (OrderType.MARKET, False),
    "STOP_LOSS": (OrderType.STOP_MARKET, False),
    "STOP_LOSS_LIMIT": (OrderType.STOP_LIMIT, False),
}
UNSERVED_TYPES = frozenset(("TAKE_PROFIT", "TAKE_PROFIT_LIMIT"))
NEEDS_PRICE = frozenset((OrderType.LIMIT, OrderType.STOP_LIMIT))
STOPS = frozenset((OrderType.STOP_LIMIT, OrderType.STOP_MARKET))
TIME_IN_FORCE = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}
RESPONSE_TYPES = frozenset(("ACK", "RESULT", "FULL"))
# Binance parameters Spot has nothing for: refused rather than silently ignored.
UNSERVED_PARAMS = ("quoteOrderQty", "icebergQty", "trailingDelta", "pegPriceType")
# Whether PlaceOrder takes a stop price yet (the stops work adds it to /v1).
STOP_PRICE_SERVED = "stop_price" in PlaceOrder.__struct_fields__


def place_order(
    spec: SymbolSpec, scale: Scale, params: Params, kind: str
) -> tuple[PlaceOrder, str, str]:
    """The /v1 order for Binance's parameters, the reply type and the self-trade mode."""
    if kind not in ORDER_TYPES:
        if kind in UNSERVED_TYPES:
            raise BinanceError(Binance.UNSUPPORTED_ORDER_COMBINATION)
        raise BinanceError(Binance.INVALID_ORDER_TYPE)
    order_type, post_only = ORDER_TYPES[kind]
    side = params.required("side")
    if side not in ("BUY", "SELL"):
        raise BinanceError(Binance.INVALID_SIDE)
    params.refuse(*UNSERVED_PARAMS)
    fields: dict[str, Any] = {
        "symbol": spec.symbol,
        "side": side,
        "type": order_type.value,
        "quantity": _units(params, "quantity", scale.base, spec, "LOT_SIZE"),
        "post_only": post_only,
        "self_trade": _self_trade(params).value,
        "client_order_id": params.get("newClientOrderId"),
    }
    if order_type in NEEDS_PRICE or post_only:
        fields["price"] = _units(params, "price", scale.price, spec, "PRICE_FILTER")
    else:
        params.refuse("price")
    if order_type is OrderType.LIMIT and not post_only or order_type is OrderType.STOP_LIMIT:
        tif = TIME_IN_FORCE.get(params.required("timeInForce"))
        if tif is None:
            raise BinanceError(Binance.INVALID_TIF)
        fields["time_in_force"] = tif.value
    else:
        params.refuse("timeInForce")
    if order_type in STOPS:
        if not STOP_PRICE_SERVED:
            raise BinanceError(Binance.NEW_ORDER_REJECTED, "Stop orders are not served yet.")
        fields["stop_price"] = _units(params, "stopPrice", scale.price, spec, "PRICE_FILTER")
    else:
        params.refuse("stopPrice")
    respond = params.get("newOrderRespType") or ("FULL" if kind in ("LIMIT", "MARKET") else "ACK")
    if respond not in RESPONSE_TYPES:
        raise BinanceError(Binance.INVALID_PARAMETER, "Invalid newOrderRespType.")
    try:
        order = msgspec.convert(fields, PlaceOrder)
    except msgspec.ValidationError:
        raise BinanceError(Binance.ILLEGAL_CHARS, param="newClientOrderId") from None
    return order, respond, SELF_TRADE_NAMES[order.self_trade]


def _units(params: Params, name: str, decimals: int, spec: SymbolSpec, rule: str) -> int:
    """A decimal parameter in Spot's integer units; off the grid is the filter's failure."""
    text = params.required(name)
    if not DECIMAL.fullmatch(text):
        raise BinanceError(
            Binance.ILLEGAL_CHARS,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    units = parse(text, decimals)
    if units is None or units > MAX_INTEGER:
        raise BinanceError(Binance.INVALID_MESSAGE, f"Filter failure: {rule}")
    return units


def _self_trade(params: Params) -> SelfTrade:
    mode = params.get("selfTradePreventionMode") or SELF_TRADE_DEFAULT
    found = SELF_TRADE.get(mode)
    if found is None:
        # NONE too: an order never trades with another of its own user's here.
        raise BinanceError(
            Binance.INVALID_PARAMETER,
            f"selfTradePreventionMode must be one of {', '.join(SELF_TRADE)}.",
        )
    return found


def client_id_valid(text: str) -> bool:
    """Whether PlaceOrder would take it as a client_order_id (schema/wire.py's rule)."""
    try:
        msgspec.convert(text, ClientOrderId)
    except msgspec.ValidationError:
        return False
    return True
