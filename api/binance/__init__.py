"""Binance's spot REST API v3, the subset CCXT's `binance` class uses, at /api/v3.

It translates, and decides nothing of its own: orders go through /v1's checks, scripts and
records (api/orders.py), reads through /v1's caches and tables. Modules: signing (API keys,
HMAC signatures, timestamps), translate (decimal strings and Binance's names for Spot's
types and statuses), errors (Binance's codes, and the one table from Spot's), market
(public data), new_order (a new order's parameters as /v1's PlaceOrder), trading (orders),
replace (cancelReplace), account (balances, trades), routes (dispatch).
What CCXT sends and reads: docs/ccxt-binance.md.
"""
