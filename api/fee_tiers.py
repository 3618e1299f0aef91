"""The API's copy of the users' fee tiers, so that placing an order costs no Redis read.

Every REFRESH_S a background task reads the tiers' version (one GET) and, only when it
moved, the whole `fee_tiers` hash (store/fee_tiers.py), swapped in at once. A tier set or
removed through this API process is in its copy at once (a refresh already reading may put
the old one back until the next); in the others within REFRESH_S (plus the load). An order
keeps the rates it was queued with: a resting order is hit at the maker rate it came with,
whatever its user's tier becomes.

Per order it is one dict lookup, and for a user with a tier a copy of the Place with its
rates (`OrderGateway.place`): the API's CPU per order bounds the order rate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schema.fees import FeeTier
from store import fee_tiers

log = logging.getLogger("spot.api")

REFRESH_S = 1.0  # how long a tier set through another API process takes to apply here


class FeeTiers:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        # user -> (maker bps, taker bps); replaced whole, never changed in place
        self.rates: dict[str, tuple[int, int]] = {}
        self.version: int | None = None

    def changed(self, user: str, tier: FeeTier | None) -> None:
        """A tier this process set (or removed, None): in its copy now, not a refresh later."""
        rates = dict(self.rates)
        if tier is None:
            rates.pop(user, None)
        else:
            rates[user] = (tier.maker_bps, tier.taker_bps)
        self.rates = rates

    async def refresh(self) -> None:
        if self.version is not None and await fee_tiers.version(self.redis) == self.version:
            return
        version, tiers, bad = await fee_tiers.load_tiers(self.redis)
        for user in bad:
            log.error("user %r: a fee tier that breaks the rules; the symbols' rates apply", user)
        self.rates = {user: (t.maker_bps, t.taker_bps) for user, t in tiers.items()}
        self.version = version

    async def first_refresh(self) -> None:
        """At start, before serving. A Redis down then leaves the symbols' rates for every
        user until the background refresh reaches it (orders need Redis too)."""
        try:
            await self.refresh()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("fee tiers not loaded at start (%s); the refresh retries", exc)

    async def refresh_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if not failing:
                    log.warning("fee tier refresh failed, keeping the last known: %s", exc)
                failing = True
            except Exception:
                log.exception("fee tier refresh failed, keeping the last known")
            else:
                failing = False
            await asyncio.sleep(REFRESH_S)
