"""Fees: the account they are paid to, the asset each side pays in, and a user's tier.

Rates are integer basis points (schema/symbols.py `fee_rates_valid` is their one rule);
the matching core turns them into amounts on each Trade (`maker_fee`, `taker_fee`), charged
on what each side receives: the buyer pays in base, the seller in quote, so no fee needs a
hold. Settlement (workers/settlement.py) moves each fee from the user to FEE_ACCOUNT, and a
rebate (a negative maker fee) from FEE_ACCOUNT to the maker.

FEE_ACCOUNT's balance in an asset is therefore the fees taken in that asset less the
rebates paid in it. It can be negative: a taker buying pays its fee in base while the
maker's rebate on that trade is paid in quote, so a market whose takers all buy leaves the
fee account short of quote and long of base. Each trade takes at least as much value as it
pays out (a rebate rate is never above the taker's), but per asset nothing bounds it;
`spot audit` checks users for non-negative balances, and the fee account against the fees
the trades recorded.
"""

import msgspec

from schema.messages import Side
from schema.symbols import SymbolSpec, fee_rates_valid

# Not a user id (schema.wire.USER_ID_PATTERN has no '~'): no token can name it, so nobody
# can log in as it, trade from it, nor deposit to or withdraw from it over the API.
FEE_ACCOUNT = "~fees"


def fee_asset(spec: SymbolSpec, side: Side) -> str:
    """What the side of a trade receives, and so pays its fee in."""
    return spec.base if side is Side.BUY else spec.quote


class FeeTier(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A user's own rates, in place of every symbol's. Stored in Redis (store/fee_tiers.py)
    as the JSON array [maker_bps, taker_bps]."""

    maker_bps: int
    taker_bps: int

    def __post_init__(self) -> None:
        if not fee_rates_valid(self.maker_bps, self.taker_bps):
            raise ValueError(
                f"fee rates maker {self.maker_bps}, taker {self.taker_bps}: need "
                "0 <= taker <= 10000 and -taker <= maker <= 10000"
            )
