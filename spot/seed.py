"""`spot seed`: demo symbols across the shards and funded demo users.

Funds go through the router's one audited transfer path, like any deposit, so the
ledger the batcher persists agrees with the balances in Redis.
"""

from redis.asyncio import Redis

from api.order_gateway import OrderGateway
from schema.symbols import SymbolSpec
from store.symbols import list_asset, list_symbol

# Prices in cents, quantities in whole units (shares or coins): tick 1 cent, band ±10%.
DEMO_SYMBOLS = [
    SymbolSpec(
        symbol=symbol,
        base=symbol.partition("-")[0],
        quote="USD",
        tick=1,
        lot=1,
        min_qty=1,
        max_qty=1_000_000,
        band_bps=1_000,
        reference_price=price,
    )
    for symbol, price in [
        ("AAPL", 19_000),
        ("MSFT", 42_000),
        ("NVDA", 12_000),
        ("AMZN", 18_500),
        ("GOOG", 17_000),
        ("META", 50_000),
        ("TSLA", 25_000),
        ("BTC-USD", 6_500_000),
        ("ETH-USD", 340_000),
        ("SOL-USD", 15_000),
        ("DOGE-USD", 2_000),
        ("XRP-USD", 6_000),
        # so that every one of the ten home shards has a symbol
        ("ORCL", 17_000),
        ("KO", 6_500),
        ("JPM", 24_000),
        ("ADA-USD", 4_500),
    ]
]
# Amounts are minor units: USD in cents (2 decimals); the demo's shares and coins whole.
DEMO_DECIMALS = {"USD": 2} | {spec.base: 0 for spec in DEMO_SYMBOLS}
QUOTE_FUNDS = 1_000_000_000  # $10 million in cents
BASE_FUNDS = 1_000_000


def demo_user(n: int) -> str:
    return f"u{n}"


async def seed(redis: Redis, shards: int, users: int) -> dict[str, int]:
    """List the demo symbols and fund users u1..uN; returns symbol -> shard."""
    for asset, decimals in DEMO_DECIMALS.items():
        await list_asset(redis, asset, decimals)
    placement = {spec.symbol: await list_symbol(redis, spec, shards) for spec in DEMO_SYMBOLS}
    router = OrderGateway(redis)
    assets = {"USD"} | {spec.base for spec in DEMO_SYMBOLS}
    for n in range(1, users + 1):
        user = demo_user(n)
        for asset in sorted(assets):
            amount = QUOTE_FUNDS if asset == "USD" else BASE_FUNDS
            result = await router.transfer(user, asset, amount, f"seed:{user}:{asset}")
            if result.status != "OK":
                raise RuntimeError(f"funding {user} with {asset}: {result.status}")
    return placement
