"""The fee account is out of every user's reach, and a fee tier follows the rates' rule."""

import re

import msgspec
import pytest

from api.auth import make_token
from schema.fees import FEE_ACCOUNT, FeeTier, fee_asset
from schema.messages import Side
from schema.symbols import SymbolSpec
from schema.wire import USER_ID_PATTERN


def test_no_user_id_names_the_fee_account():
    assert re.match(USER_ID_PATTERN, FEE_ACCOUNT) is None
    with pytest.raises(ValueError):
        make_token(FEE_ACCOUNT, secret="x" * 32)


def test_each_side_pays_in_what_it_receives():
    spec = SymbolSpec(symbol="BTC-USD", base="BTC", quote="USD")
    assert (fee_asset(spec, Side.BUY), fee_asset(spec, Side.SELL)) == ("BTC", "USD")


@pytest.mark.parametrize(
    ("maker", "taker", "ok"),
    [(0, 0, True), (-5, 5, True), (-6, 5, False), (10_000, 10_000, True), (0, 10_001, False),
     (10_001, 0, False), (0, -1, False)],
)  # fmt: skip
def test_a_tier_is_valid_as_a_symbols_rates_are(maker, taker, ok):
    if ok:
        tier = FeeTier(maker, taker)
        assert msgspec.json.decode(msgspec.json.encode(tier), type=FeeTier) == tier
        assert msgspec.json.encode(tier) == f"[{maker},{taker}]".encode()
    else:
        with pytest.raises(ValueError):
            FeeTier(maker, taker)
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(f"[{maker},{taker}]", type=FeeTier)
