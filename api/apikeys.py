"""API keys for the Binance-compatible API (api/binance/): issued, listed and revoked over
`/v1/api-keys` with a bearer token, or by `spot apikey USER` from a shell.

No secret is stored anywhere. A key's secret is HMAC-SHA256(master, key), the master being
SPOT_API_KEY_SECRET (unset: one derived from SPOT_JWT_SECRET), and the server derives it
again to check a signature. A dump of Redis holds key names, their owners and permissions
(the database never sees keys), none of which signs a request. Storing the secret encrypted
would need the same master key kept as carefully, plus a decryption per lookup, and would
gain only rotating that master key by key. What derivation costs: the master is as
precious as the JWT secret, and changing it invalidates every key at once (which is also
how to revoke them all after a leak).

A key's record is cached in each API process for CACHE_S, so a signed order costs no Redis
read of its own; a revoked key keeps working at most that long in another API process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from typing import cast

import msgspec
from redis.asyncio import Redis

from api.auth import Authenticator
from api.errors import HTTPError
from api.request import JSON, Body, Reply, encode, principal, read_body
from api.rsgi import HTTPProtocol, Scope
from schema import keys
from schema.codes import ApiError
from schema.wire import ApiKeyCreated, ApiKeys, ApiKeyView, NewApiKey, Permission
from store.pipeline import PipelinedRedis

KEY_LENGTH = 64  # as Binance's: letters and digits
MAX_KEYS = 30  # per user, as Binance allows
CACHE_S = 2.0
CACHE_MAX = 100_000  # distinct keys cached before the cache starts over
READ: Permission = "read"
TRADE: Permission = "trade"
_ALPHABET = string.ascii_letters + string.digits
_MASTER_INFO = b"spot api-key master v1"
_SECRET_INFO = b"spot api-key secret v1\x00"

_new_key_body = Body(NewApiKey)


def master_key(api_key_secret: str | None, jwt_secret: str) -> bytes:
    """The key every API key's secret is derived from: its own setting, or one derived
    from the JWT secret (domain-separated, so neither secret signs for the other)."""
    if api_key_secret is not None:
        return api_key_secret.encode()
    return hmac.new(jwt_secret.encode(), _MASTER_INFO, hashlib.sha256).digest()


def well_formed(api_key: str) -> bool:
    return len(api_key) == KEY_LENGTH and api_key.isascii() and api_key.isalnum()


class ApiKey(msgspec.Struct, frozen=True, gc=False):
    """A live key: whose it is, what it may do, and its secret (derived, never stored)."""

    api_key: str
    user_id: str
    permissions: frozenset[str]
    created_ms: int
    secret: bytes

    def view(self) -> ApiKeyView:
        return ApiKeyView(
            api_key=self.api_key,
            permissions=sorted(self.permissions),
            created_ms=self.created_ms,
        )


class ApiKeyStore:
    """Keys in Redis: `apikey:{key}` (user_id, permissions, created_ms) and the user's set
    `apikeys:{user}`. `reads` (the request path's pipelined client) serves `lookup`."""

    def __init__(self, redis: Redis, master: bytes, reads: PipelinedRedis | None = None) -> None:
        self.redis = redis
        self.reads = reads
        self._master = master
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    def secret(self, api_key: str) -> str:
        """The key's secret, as its user signs with it (64 hex digits)."""
        mac = hmac.new(self._master, _SECRET_INFO + api_key.encode(), hashlib.sha256)
        return mac.hexdigest()

    async def create(self, user: str, permissions: list[Permission]) -> ApiKeyCreated:
        """A new key for `user`; HTTPError TOO_MANY_API_KEYS past MAX_KEYS. The count is read
        before the write: two creations at once may end one key past it, harmlessly."""
        if await self.redis.scard(keys.user_api_keys(user)) >= MAX_KEYS:
            raise HTTPError(ApiError.TOO_MANY_API_KEYS, f"a user holds at most {MAX_KEYS} API keys")
        api_key = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))
        granted: list[str] = sorted(set(permissions))
        created_ms = time.time_ns() // 1_000_000
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.api_key(api_key),
            mapping={"user_id": user, "permissions": ",".join(granted), "created_ms": created_ms},
        )
        pipe.sadd(keys.user_api_keys(user), api_key)
        await pipe.execute()
        return ApiKeyCreated(
            api_key=api_key,
            permissions=granted,
            created_ms=created_ms,
            secret=self.secret(api_key),
        )

    async def list(self, user: str) -> list[ApiKeyView]:
        members = sorted(_text(m) for m in await self.redis.smembers(keys.user_api_keys(user)))
        pipe = self.redis.pipeline(transaction=False)
        for api_key in members:
            pipe.hgetall(keys.api_key(api_key))
        found = [
            self._parse(api_key, record)
            for api_key, record in zip(members, await pipe.execute(), strict=True)
        ]
        views = [key.view() for key in found if key is not None and key.user_id == user]
        views.sort(key=_by_creation)
        return views

    async def revoke(self, user: str, api_key: str) -> bool:
        """Whether `user` had this key (it is gone now either way)."""
        owner = await self.redis.hget(keys.api_key(api_key), "user_id")
        if owner is None or _text(owner) != user:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.api_key(api_key))
        pipe.srem(keys.user_api_keys(user), api_key)
        await pipe.execute()
        self._cache.pop(api_key, None)
        return True

    async def lookup(self, api_key: str) -> ApiKey | None:
        """The live key, or None (unknown or revoked); well_formed(api_key) first."""
        now = time.monotonic()
        cached = self._cache.get(api_key)
        if cached is not None and now < cached[1]:
            return cached[0]
        if self.reads is not None:
            record = await self.reads.hgetall(keys.api_key(api_key))
        else:
            record = cast(dict[bytes, bytes], await self.redis.hgetall(keys.api_key(api_key)))
        found = self._parse(api_key, record)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[api_key] = (found, now + CACHE_S)
        return found

    def _parse(self, api_key: str, record: dict[bytes, bytes]) -> ApiKey | None:
        user = record.get(b"user_id")
        if user is None:
            return None
        granted = record.get(b"permissions", b"").decode()
        return ApiKey(
            api_key=api_key,
            user_id=user.decode(),
            permissions=frozenset(p for p in granted.split(",") if p),
            created_ms=int(record.get(b"created_ms", b"0")),
            secret=self.secret(api_key).encode(),
        )


def _text(value: bytes | str) -> str:
    # str only from a client made with decode_responses=True, which Spot never makes
    return value.decode() if isinstance(value, bytes) else value


def _by_creation(view: ApiKeyView) -> tuple[int, str]:
    return view.created_ms, view.api_key


class ApiKeyRoutes:
    """POST, GET /v1/api-keys; DELETE /v1/api-keys/{key}: the caller's own keys."""

    def __init__(self, auth: Authenticator, store: ApiKeyStore, max_body: int) -> None:
        self.auth = auth
        self.store = store
        self.max_body = max_body

    async def create(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        body = await read_body(scope, proto, self.max_body)
        wanted = _new_key_body.decode(body) if body.strip() else NewApiKey()
        created = await self.store.create(user, wanted.permissions)
        return 201, encode(created), JSON

    async def list(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        user = principal(self.auth, scope).user_id
        return 200, encode(ApiKeys(api_keys=await self.store.list(user))), JSON

    async def revoke(self, scope: Scope, proto: HTTPProtocol, api_key: str) -> Reply:
        user = principal(self.auth, scope).user_id
        if not well_formed(api_key) or not await self.store.revoke(user, api_key):
            raise HTTPError(ApiError.UNKNOWN_API_KEY, "no such API key of yours")
        return 204, b"", []
