"""The symbol spec and the rules every order is checked against.

Prices are integers in the quote asset's minor units per one unit of base;
quantities are integers in base units. `band_bps` limits how far (in basis points)
a price may be from the reference price: the last trade, or `reference_price`
before the first trade. No band means any price is allowed and a MARKET order may
sweep the book. A stop's `stop_price` follows the rules of a limit price (positive, on
tick, inside the band at arrival): the band is the range of prices a client may name
at all, and it bounds how far the market must run before a stop fires.

Fees are integer basis points of what each side of a trade receives; a negative maker
rate is a rebate, never larger than the taker rate, so the exchange never pays out more
on a trade than it takes.
"""

import re

import msgspec

from schema.codes import RejectReason

MAX_QUANTITY = 10**15
# How many decimals an asset may have (keys.ASSETS): an amount in its minor units, shown
# as a decimal, divides by 10**decimals. 18 is Ethereum's wei.
MAX_DECIMALS = 18
MAX_FEE_BPS = 10_000  # a fee of all that a side receives
# Upper-case letters, digits and . _ - (BTC-USD, BRK.B), as schema.tables.SYMBOL holds:
# a symbol names URL path segments (/v1/book/{symbol}, migration ids) and Redis keys.
SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    base: str
    quote: str
    tick: int = 1
    lot: int = 1
    min_qty: int = 1
    max_qty: int = MAX_QUANTITY
    band_bps: int | None = None
    reference_price: int | None = None
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0

    def __post_init__(self) -> None:
        if not SYMBOL.fullmatch(self.symbol):
            raise ValueError(f"{self.symbol!r}: a symbol is A-Z, 0-9, '.', '_', '-' (32 at most)")
        if self.tick <= 0 or self.lot <= 0:
            raise ValueError(f"{self.symbol}: tick and lot must be positive")
        if not 0 < self.min_qty <= self.max_qty:
            raise ValueError(f"{self.symbol}: need 0 < min_qty <= max_qty")
        if self.band_bps is not None:
            if self.band_bps <= 0:
                raise ValueError(f"{self.symbol}: band_bps must be positive")
            if not self.reference_price or self.reference_price <= 0:
                raise ValueError(f"{self.symbol}: a price band needs a positive reference_price")
        if not fee_rates_valid(self.maker_fee_bps, self.taker_fee_bps):
            raise ValueError(
                f"{self.symbol}: need 0 <= taker_fee_bps <= {MAX_FEE_BPS} and "
                f"-taker_fee_bps <= maker_fee_bps <= {MAX_FEE_BPS}"
            )

    def band(self, reference: int | None) -> tuple[int, int] | None:
        """The lowest and highest allowed price around `reference`, or None without a band."""
        if self.band_bps is None or reference is None:
            return None
        width = reference * self.band_bps // 10_000
        return reference - width, reference + width

    def check_price(self, price: int, band: tuple[int, int] | None) -> RejectReason | None:
        if price <= 0:
            return RejectReason.PRICE_NOT_POSITIVE
        if price % self.tick:
            return RejectReason.PRICE_OFF_TICK
        if band is not None and not band[0] <= price <= band[1]:
            return RejectReason.PRICE_OUT_OF_BAND
        return None

    def check_stop_price(self, stop: int, band: tuple[int, int] | None) -> RejectReason | None:
        """A stop price follows the rules of a limit price, under its own reasons."""
        reason = self.check_price(stop, band)
        return None if reason is None else _STOP_PRICE_REASONS[reason]

    def check_quantity(self, quantity: int, *, replace: bool = False) -> RejectReason | None:
        """A replace sets the remaining quantity, which may legitimately be under min_qty."""
        if quantity <= 0:
            return RejectReason.QUANTITY_BELOW_MIN
        if quantity % self.lot:
            return RejectReason.QUANTITY_OFF_LOT
        if quantity < self.min_qty and not replace:
            return RejectReason.QUANTITY_BELOW_MIN
        if quantity > self.max_qty:
            return RejectReason.QUANTITY_ABOVE_MAX
        return None


_STOP_PRICE_REASONS = {
    RejectReason.PRICE_NOT_POSITIVE: RejectReason.STOP_PRICE_NOT_POSITIVE,
    RejectReason.PRICE_OFF_TICK: RejectReason.STOP_PRICE_OFF_TICK,
    RejectReason.PRICE_OUT_OF_BAND: RejectReason.STOP_PRICE_OUT_OF_BAND,
}


def fee_rates_valid(maker_bps: int, taker_bps: int) -> bool:
    """The rule for a symbol's rates and for an order's own (its fee tier's)."""
    return 0 <= taker_bps <= MAX_FEE_BPS and -taker_bps <= maker_bps <= MAX_FEE_BPS


def default_spec(symbol: str) -> SymbolSpec:
    """What `spot replay` uses for a symbol it has no spec for: tick 1, lot 1, no band."""
    base, _, quote = symbol.partition("-")
    return SymbolSpec(symbol=symbol, base=base or symbol, quote=quote or "USD")
