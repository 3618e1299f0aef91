"""Binance's account endpoints: balances (the same Redis hash as GET /v1/balances), the
user's trades (the trades table, as GET /v1/fills reads it, with each side's fee) and
commission rates: the user's fee tier where it has one (the API's copy, api/fee_tiers.py),
else each symbol's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from api.apikeys import TRADE, ApiKey
from api.binance.market import symbol_of
from api.binance.signing import Params
from api.binance.translate import MAX_TIME_MS, Scale, fee_text, moment, show
from api.fee_tiers import FeeTiers
from api.history import History, ms
from api.market import Listing, Market
from api.request import now_ms
from schema import keys
from schema.fees import fee_asset
from schema.messages import Side
from schema.symbols import SymbolSpec
from store.balances import by_asset
from store.pipeline import PipelinedRedis

TRADES_LIMIT = (1, 1000, 500)


def _my_trades_query(
    user: str, symbol: str, params: Params, limit: int
) -> tuple[str, list[Any], bool]:
    """The user's trades in `symbol` as maker and as taker, merged; whether oldest first
    (from fromId or startTime) or the newest `limit`, newest first."""
    order_id = params.integer("orderId", 0, 2**63 - 1)
    from_id = params.integer("fromId", 0, 2**63 - 1)
    start = params.integer("startTime", 0, MAX_TIME_MS)
    end = params.integer("endTime", 0, MAX_TIME_MS)
    args: list[Any] = [user, symbol, limit]
    shared = ""
    for condition, value in (
        ("seq >=", from_id),
        ("created_at >=", moment(start)),
        ("created_at <=", moment(end)),
    ):
        if value is not None:
            args.append(value)
            shared += f" AND {condition} ${len(args)}"
    if order_id is not None:
        args.append(order_id)
    ascending = from_id is not None or start is not None
    order = "ASC" if ascending else "DESC"

    def role(name: str, maker: bool) -> str:
        own = f" AND {name}_order_id = ${len(args)}" if order_id is not None else ""
        return (
            f"(SELECT seq, price, quantity, taker_side, {name}_order_id AS order_id, "
            f"{'true' if maker else 'false'} AS is_maker, created_at, {name}_fee AS fee "
            "FROM trades "
            f"WHERE {name}_user_id = $1 AND symbol = $2{shared}{own} "
            f"ORDER BY created_at {order}, seq {order} LIMIT $3)"
        )

    query = (
        f"{role('maker', True)} UNION ALL {role('taker', False)} "
        f"ORDER BY created_at {order}, seq {order} LIMIT $3"
    )
    return query, args, ascending


class AccountRoutes:
    """account, account/commission, myTrades."""

    def __init__(
        self, listing: Listing, reads: PipelinedRedis, history: History, tiers: FeeTiers
    ) -> None:
        self.listing = listing
        self.reads = reads
        self.history = history
        self.tiers = tiers

    async def account(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        fields = await self.reads.hgetall(keys.balance(key.user_id))
        amounts = {asset: [0, 0] for asset in market.assets} | by_asset(fields)
        maker, taker = self.tiers.rates.get(key.user_id) or _rates(market)
        trading = TRADE in key.permissions
        return {
            "makerCommission": maker,
            "takerCommission": taker,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": _fraction(maker),
                "taker": _fraction(taker),
                "buyer": _fraction(0),
                "seller": _fraction(0),
            },
            "canTrade": trading,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": now_ms(),
            "accountType": "SPOT",
            "balances": [
                {
                    "asset": asset,
                    "free": _asset(market, asset, free),
                    "locked": _asset(market, asset, locked),
                }
                for asset, (free, locked) in sorted(amounts.items())
            ],
            "permissions": ["SPOT"],
        }

    async def commission(self, key: ApiKey, params: Params) -> Any:
        spec = symbol_of(params, self.listing.market)
        tier = self.tiers.rates.get(key.user_id)
        maker, taker = tier or (spec.maker_fee_bps, spec.taker_fee_bps)
        zero = {"maker": _fraction(0), "taker": _fraction(0), "buyer": _fraction(0)}
        return {
            "symbol": spec.symbol,
            "standardCommission": {
                "maker": _fraction(maker),
                "taker": _fraction(taker),
                "buyer": _fraction(0),
                "seller": _fraction(0),
            },
            "specialCommission": {**zero, "seller": _fraction(0)},
            "taxCommission": {**zero, "seller": _fraction(0)},
            "discount": {
                "enabledForAccount": False,
                "enabledForSymbol": False,
                "discountAsset": None,
                "discount": _fraction(0),
            },
        }

    async def my_trades(self, key: ApiKey, params: Params) -> Any:
        market = self.listing.market
        spec = symbol_of(params, market)
        limit = params.integer("limit", *TRADES_LIMIT)
        assert limit is not None
        query, args, ascending = _my_trades_query(key.user_id, spec.symbol, params, limit)
        rows = await self.history.fetch(query, *args)
        if not ascending:
            rows = rows[::-1]
        scale = Scale(spec, market.decimals)
        return [_my_trade(spec, scale, row) for row in rows]


def _my_trade(spec: SymbolSpec, scale: Scale, row: Any) -> dict[str, Any]:
    # isBuyer and isMaker only: ccxt takes `m`/`isBuyerMaker` before them (it would read the
    # taker's side as the user's), so they are not sent (docs/ccxt-binance.md 3.16).
    maker = row["is_maker"]
    buyer = (row["taker_side"] == "BUY") != maker
    return {
        "symbol": spec.symbol,
        "id": row["seq"],
        "orderId": row["order_id"],
        "orderListId": -1,
        "price": scale.px(row["price"]),
        "qty": scale.qty(row["quantity"]),
        "quoteQty": scale.amount(row["price"] * row["quantity"]),
        "commission": fee_text(scale, buyer, row["fee"]),
        "commissionAsset": fee_asset(spec, Side.BUY if buyer else Side.SELL),
        "time": ms(row["created_at"]),
        "isBuyer": buyer,
        "isMaker": maker,
        "isBestMatch": True,
    }


def _rates(market: Market) -> tuple[int, int]:
    """The account's rates in basis points without a tier: the highest of the listed
    symbols' (a symbol's own are GET /api/v3/account/commission's)."""
    specs = market.specs.values()
    return (
        max((s.maker_fee_bps for s in specs), default=0),
        max((s.taker_fee_bps for s in specs), default=0),
    )


def _fraction(bps: int) -> str:
    return f"{Decimal(bps) / 10_000:.8f}"


def _asset(market: Market, asset: str, units: int) -> str:
    return show(units, market.decimals.get(asset, 0))
