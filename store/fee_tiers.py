"""Users' fee tiers in Redis: `fee_tiers` (user -> FeeTier JSON) and a version counter
bumped with every change, in the same transaction, so that a reader polls one small key
and loads the whole hash only when it changed (api/fee_tiers.py). Written by the admin
API and by `spot fee-tier`; the API puts a user's rates into each Place it queues."""

from __future__ import annotations

from typing import Any

import msgspec

from schema import keys
from schema.fees import FeeTier

_tier = msgspec.json.Decoder(FeeTier)
_encode = msgspec.json.Encoder().encode


async def set_tier(redis: Any, user: str, tier: FeeTier) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.FEE_TIERS, user, _encode(tier))
    pipe.incr(keys.FEE_TIERS_VERSION)
    await pipe.execute()


async def delete_tier(redis: Any, user: str) -> FeeTier | None:
    """Remove `user`'s tier; the tier it had, or None if it had none."""
    pipe = redis.pipeline(transaction=True)
    pipe.hget(keys.FEE_TIERS, user)
    pipe.hdel(keys.FEE_TIERS, user)
    pipe.incr(keys.FEE_TIERS_VERSION)
    raw, _, _ = await pipe.execute()
    return None if raw is None else _tier.decode(raw)


async def get_tier(redis: Any, user: str) -> FeeTier | None:
    raw = await redis.hget(keys.FEE_TIERS, user)
    return None if raw is None else _tier.decode(raw)


async def version(redis: Any) -> int:
    return int(await redis.get(keys.FEE_TIERS_VERSION) or 0)


async def load_tiers(redis: Any) -> tuple[int, dict[str, FeeTier], list[str]]:
    """Every tier and the version they are at, read atomically; and the users whose stored
    tier does not decode (written by hand past the rules), left out."""
    pipe = redis.pipeline(transaction=True)
    pipe.get(keys.FEE_TIERS_VERSION)
    pipe.hgetall(keys.FEE_TIERS)
    at, raw = await pipe.execute()
    tiers, bad = {}, []
    for key, value in raw.items():
        user = key.decode() if isinstance(key, bytes) else key
        try:
            tiers[user] = _tier.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad.append(user)
    return int(at or 0), tiers, bad
