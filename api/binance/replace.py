"""POST /api/v3/order/cancelReplace (ccxt's edit_order on spot): cancel an order, then
place a new one, as Binance does it: two orders, two ids, translated onto the same
cancel and placement as DELETE and POST /api/v3/order (api/binance/trading.py), in that
order. Spot's own replace (PATCH /v1/orders/{id}) keeps the order's id; Binance's does not.

`cancelReplaceMode` STOP_ON_FAILURE places nothing when the cancel fails; ALLOW_FAILURE
places anyway. The new order's parameters are read before anything is canceled; the
symbol's rules and the funds are checked when it is queued, after the cancel (a new order
that needs the old one's hold could not be funded otherwise). What each part did is in the
reply: 200 when both succeeded, else Binance's -2021 (409: one of them did) or -2022 (400:
neither), with `data` saying which.
"""

from __future__ import annotations

from typing import Any

from api.apikeys import ApiKey
from api.binance.errors import Binance, BinanceError
from api.binance.market import symbol_of
from api.binance.new_order import place_order
from api.binance.signing import Params
from api.binance.trading import TradingRoutes
from api.binance.translate import Scale
from schema.orders import TERMINAL

MODES = frozenset(("STOP_ON_FAILURE", "ALLOW_FAILURE"))
_CANCEL_NAMES = ("cancelOrderId", "cancelOrigClientOrderId")


class ReplaceRoutes:
    def __init__(self, trading: TradingRoutes) -> None:
        self.trading = trading

    async def cancel_replace(self, key: ApiKey, params: Params) -> Any:
        trading = self.trading
        market = trading.listing.market
        spec = symbol_of(params, market)
        scale = Scale(spec, market.decimals)
        mode = params.required("cancelReplaceMode")
        if mode not in MODES:
            raise BinanceError(Binance.INVALID_PARAMETER, "Invalid cancelReplaceMode.")
        placing = place_order(spec, scale, params, params.required("type"))
        canceled: dict[str, Any] | None = None
        cancel_error: BinanceError | None = None
        found = await trading.find(key.user_id, spec.symbol, params, _CANCEL_NAMES)
        if found is None or found[1].status in TERMINAL:
            cancel_error = BinanceError(Binance.CANCEL_REJECTED)
        else:
            try:
                canceled = await trading.cancel(key.user_id, found[0], scale)
            except BinanceError as exc:
                cancel_error = exc
        if cancel_error is not None and mode == "STOP_ON_FAILURE":
            raise _failed(Binance.REPLACE_FAILED, cancel_error.body(), "NOT_ATTEMPTED", None)
        try:
            placed = await trading.place(key, spec, scale, placing)
        except BinanceError as exc:
            if cancel_error is not None:
                raise _failed(
                    Binance.REPLACE_FAILED, cancel_error.body(), "FAILURE", exc.body()
                ) from None
            raise _failed(
                Binance.REPLACE_PARTIALLY_FAILED, canceled, "FAILURE", exc.body()
            ) from None
        if cancel_error is not None:
            raise _failed(Binance.REPLACE_PARTIALLY_FAILED, cancel_error.body(), "SUCCESS", placed)
        return {
            "cancelResult": "SUCCESS",
            "newOrderResult": "SUCCESS",
            "cancelResponse": canceled,
            "newOrderResponse": placed,
        }


def _failed(
    error: Binance, cancel: dict[str, Any] | None, new_result: str, new: dict[str, Any] | None
) -> BinanceError:
    canceled = cancel is not None and "code" not in cancel
    return BinanceError(
        error,
        data={
            "cancelResult": "SUCCESS" if canceled else "FAILURE",
            "newOrderResult": new_result,
            "cancelResponse": cancel,
            "newOrderResponse": new,
        },
    )
