"""`spot bench pipeline --api v3` sends what `--api v1` sends: request n of each is the same
user's same order, as the server reads it (signature checked as api/binance/signing.py
checks it, parameters translated as api/binance/new_order.py translates them)."""

from __future__ import annotations

import msgspec

from api.binance.new_order import place_order
from api.binance.signing import MAX_RECV_WINDOW_MS, Params, payload, sign
from api.binance.translate import Scale
from schema.wire import PlaceOrder
from spot.bench.pipeline import _bodies, signed_requests
from spot.seed import DEMO_DECIMALS, DEMO_SYMBOLS

NOW_MS = 1_700_000_000_000
KEYS = [(f"{n:064d}", f"secret{n}") for n in range(6)]  # 6 users: lcm with the orders


def test_v3_requests_are_v1s_orders_user_for_user_signed() -> None:
    specs = {spec.symbol: spec for spec in DEMO_SYMBOLS}
    secrets = dict(KEYS)
    bodies = [msgspec.json.decode(b, type=PlaceOrder) for b in _bodies()]
    lines = signed_requests(KEYS, NOW_MS)
    assert len(lines) % len(bodies) == 0 and len(lines) % len(KEYS) == 0
    for n in range(3 * len(lines)):  # wrk's rotation: request n takes line n % len(lines)
        api_key, body = lines[n % len(lines)].split(" ")
        assert api_key == KEYS[n % len(KEYS)][0]
        signed, signature = payload("", body)
        assert signature == sign(secrets[api_key], signed)
        params = Params.parse(body)
        assert params.integer("timestamp", 0, 2**63) == NOW_MS
        assert params.integer("recvWindow", 0, 2**63) == MAX_RECV_WINDOW_MS
        spec = specs[params.required("symbol")]
        order, respond, _ = place_order(spec, Scale(spec, DEMO_DECIMALS), params, "LIMIT")
        assert (order, respond) == (bodies[n % len(bodies)], "ACK")
