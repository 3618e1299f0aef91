"""Request rate limits: token buckets per user, per user for order commands, and per
client address (DESIGN.md §2: 429 with Retry-After).

Each API process counts on its own, in memory. A shared count in Redis would cost a round
trip (or a script) per request on the order path, whose Redis is the pipeline's bottleneck
(issue #17); what the limits are for is that one user or address cannot take a process's
CPU or flood the queues, and a per-process bucket does that exactly for the process it
protects. With N API processes behind a balancer a user gets at most N times the rate,
a known bound: set the rates per process.

Where they are checked: the address by the dispatch, before anything else (api/app.py);
the user where the token is looked up anyway (api/auth.py's `Authenticator.principal`
charges its `budget`), so no request pays for a second lookup. Both are a dict lookup
and a little arithmetic per request: an order command on a kept-alive connection costs
~5k instructions more with all three limits on (cachegrind): a small part of what the
API spends on an order.

A bucket holds BURST_S seconds of its rate and refills continuously; a request takes one
token. Buckets live in a dict bounded by MAX_BUCKETS: past it, the full ones (idle for a
whole burst, so indistinguishable from new) are dropped, and if that is not enough, all.
"""

from __future__ import annotations

import ipaddress
import math
import time

from api.errors import HTTPError
from api.request import JSON
from api.rsgi import Scope
from schema.codes import ApiError
from schema.settings import Settings

BURST_S = 2.0
MAX_BUCKETS = 100_000
MAX_CLIENTS = 100_000  # client "address:port" strings whose address is known, kept

_monotonic = time.monotonic


class Buckets:
    """Token buckets of one rate, by key."""

    __slots__ = ("rate", "burst", "what", "_buckets")

    def __init__(self, rate: float, what: str) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * BURST_S)
        self.what = what  # for the 429's message: "requests of this user"
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, monotonic time]

    def take(self, key: str, now: float) -> None:
        """One token of `key`'s bucket, or HTTPError 429 saying when one will be there."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        raise self._limited((1.0 - tokens) / self.rate)

    def _prune(self, now: float) -> None:
        full = now - BURST_S
        self._buckets = {k: b for k, b in self._buckets.items() if b[1] > full}
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()

    def _limited(self, wait_s: float) -> HTTPError:
        retry = max(1, math.ceil(wait_s))
        return HTTPError(
            ApiError.RATE_LIMITED,
            f"more than {self.rate:g} {self.what} per second: retry in {retry} s",
            headers=[
                *JSON,
                ("retry-after", str(retry)),
                # draft-ietf-httpapi-ratelimit-headers: the policy, what is left, when
                ("ratelimit-policy", f"{math.floor(self.burst)};w={BURST_S:g}"),
                ("ratelimit", f"limit={math.floor(self.burst)}, remaining=0, reset={retry}"),
            ],
        )


class Trusted:
    """Whether a client address is in the networks that have no per-address limit."""

    def __init__(self, networks: str) -> None:
        """`networks`: comma-separated, e.g. "127.0.0.0/8,::1/128"; "none" or "" for none."""
        names = [] if networks.strip() == "none" else networks.split(",")
        self._networks = [ipaddress.ip_network(n.strip(), strict=False) for n in names if n.strip()]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:  # not an IP address (a Unix socket): nobody to limit by
            return True
        return any(ip in network for network in self._networks)


def client_address(scope: Scope) -> str:
    """The peer's address without its port: "1.2.3.4:5678" -> "1.2.3.4", "[::1]:5" -> "[::1]"."""
    return scope.client.rpartition(":")[0]


class RateLimits:
    """Who may send another request now. `admit` (the address) raises the 429 before a
    handler runs; `charge` (the user) raises it from the token's lookup."""

    def __init__(
        self, *, user_per_s: float, orders_per_s: float, ip_per_s: float, trusted: str
    ) -> None:
        self.users = Buckets(user_per_s, "requests of this user") if user_per_s else None
        self.orders = Buckets(orders_per_s, "order commands of this user") if orders_per_s else None
        self.addresses = Buckets(ip_per_s, "requests from this address") if ip_per_s else None
        self.trusted = Trusted(trusted)
        # scope.client ("address:port", one per connection) -> its address, or None when
        # trusted: a request on a kept-alive connection costs one lookup.
        self._clients: dict[str, str | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            user_per_s=settings.rate_limit_user,
            orders_per_s=settings.rate_limit_orders,
            ip_per_s=settings.rate_limit_ip,
            trusted=settings.rate_limit_trusted,
        )

    def admit(self, scope: Scope, limited: bool) -> None:
        """Take the client address's token; `limited` False: a route without limits
        (probes, metrics)."""
        if not limited or self.addresses is None:
            return
        client = scope.client
        try:
            address = self._clients[client]
        except KeyError:
            address = self._learn(client)
        if address is not None:
            self.addresses.take(address, _monotonic())

    def _learn(self, client: str) -> str | None:
        if len(self._clients) >= MAX_CLIENTS:
            self._clients.clear()
        address = client.rpartition(":")[0]
        known = None if address in self.trusted else address
        self._clients[client] = known
        return known

    def charge(self, user_id: str, order_command: bool) -> None:
        """Take the user's token (and its order token for an order command)."""
        now = _monotonic()
        if self.users is not None:
            self.users.take(user_id, now)
        if order_command and self.orders is not None:
            self.orders.take(user_id, now)
