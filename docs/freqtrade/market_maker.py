"""Market activity for freqtrade to trade against (docs/freqtrade/README.md): one user quotes
three levels a side around a mid that wanders, another takes a little of them now and then,
so every minute has trades (candles) and the price moves (ROI and stop exits). Both speak
to Spot only through the real ccxt `binance` class, configured as the README's "Connect with
CCXT" says.

    .venv/bin/python docs/freqtrade/market_maker.py --url http://127.0.0.1:8000 \\
        --maker KEY:SECRET --taker KEY:SECRET --symbols AAPL/USD,KO/USD --seconds 900
"""

from __future__ import annotations

import argparse
import math
import random
import time
from typing import Any

import ccxt

OPTIONS = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
    "createOrder": {"quoteOrderQty": False},
    "fetchOpenOrders": {"warnWithoutSymbol": False},
}
LEVELS = 3
SPREAD_TICKS = 5  # between the mid and the first level, and between levels
STEP = 0.0015  # the mid's random walk: this fraction, one sigma, per round
DRIFT_LIMIT = 0.05  # the mid stays within 5% of where it started (Spot's band is 10%)


def exchange(url: str, credentials: str) -> Any:
    key, _, secret = credentials.partition(":")
    api = f"{url.rstrip('/')}/api/v3"
    return ccxt.binance(
        {
            "apiKey": key,
            "secret": secret,
            "urls": {"api": {"public": api, "private": api}},
            "options": OPTIONS,
        }
    )


def quote(
    maker: Any, symbol: str, mid: float, tick: float, size: float, refused: dict[str, int]
) -> None:
    """Replace the maker's quotes on `symbol` by LEVELS bids and asks around `mid`; counts
    in `refused` the quotes Spot refused, by reason."""
    maker.cancel_all_orders(symbol)
    for level in range(1, LEVELS + 1):
        offset = level * SPREAD_TICKS * tick
        for side, price in (("buy", mid - offset), ("sell", mid + offset)):
            try:
                maker.create_order(symbol, "limit", side, size * level, maker.price_to_precision(
                    symbol, price), {"postOnly": True})  # fmt: skip
            except ccxt.InvalidOrder as exc:  # e.g. it would take: another rests past the mid
                reason = str(exc).partition(" ")[2]
                refused[reason] = refused.get(reason, 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--maker", required=True, help="API key:secret of the quoting user")
    parser.add_argument("--taker", required=True, help="API key:secret of the taking user")
    parser.add_argument("--symbols", default="AAPL/USD,KO/USD,DOGE/USD")
    parser.add_argument(
        "--prices",
        default="AAPL/USD=190,KO/USD=65,DOGE/USD=20",
        help="where to start a symbol that has no trade yet (spot seed's reference prices)",
    )
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--size", type=float, default=5, help="the first level's quantity")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    maker, taker = exchange(args.url, args.maker), exchange(args.url, args.taker)
    markets = maker.load_markets()
    taker.load_markets()
    listed = dict(pair.split("=") for pair in args.prices.split(","))
    symbols = args.symbols.split(",")
    # the last trade's price, else (no trade yet) the price the symbol was listed at, which
    # Spot's price band is around
    start = {s: float(maker.fetch_ticker(s)["last"] or listed[s]) for s in symbols}
    mid = dict(start)
    rounds = 0
    refused: dict[str, int] = {}
    ends = time.monotonic() + args.seconds
    try:
        while time.monotonic() < ends:
            for symbol in symbols:
                tick = float(markets[symbol]["precision"]["price"])
                walk = mid[symbol] * math.exp(rng.gauss(0, STEP))
                low, high = start[symbol] * (1 - DRIFT_LIMIT), start[symbol] * (1 + DRIFT_LIMIT)
                mid[symbol] = min(max(walk, low), high)
                quote(maker, symbol, mid[symbol], tick, args.size, refused)
                if rng.random() < 0.6:  # a trade most rounds: a candle every minute
                    side = rng.choice(("buy", "sell"))
                    taker.create_order(symbol, "market", side, rng.randint(1, int(args.size)))
            rounds += 1
            if rounds % 30 == 0:
                mids = ", ".join(f"{s} {mid[s]:.2f}" for s in symbols)
                print(f"round {rounds}: {mids}; quotes refused: {refused}", flush=True)
            time.sleep(1.0)
    finally:
        for symbol in symbols:
            maker.cancel_all_orders(symbol)


if __name__ == "__main__":
    main()
