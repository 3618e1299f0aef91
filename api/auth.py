"""JWT bearer auth: HS256 tokens signed with `SPOT_JWT_SECRET`, `sub` = user id,
`role: "admin"` for admins, `exp` required.

PyJWT takes ~22 µs to verify a token on this machine, a cache hit ~0.1 µs; a client
sends the same token with every order, so verified tokens are kept until they expire
or for CACHE_TTL_S, whichever comes first. The cache is keyed by the token, not the
header: one token padded with 60 KB of spaces, sent 10,000 times, once held 576 MB.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

import jwt

from schema.codes import ApiError
from schema.wire import USER_ID_PATTERN

ALGORITHM = "HS256"
ADMIN_ROLE = "admin"
DEFAULT_TTL_S = 24 * 3600
CACHE_TTL_S = 60.0
# Past this many distinct live tokens, or this many characters of them, the cache starts
# over, so a flood of one-off tokens cannot grow it without bound (base64 decoding skips
# stray characters, so one token can be spelt many ways that all verify).
CACHE_MAX = 100_000
CACHE_MAX_CHARS = 16 * 1024 * 1024
# A JWT of ours is ~200 bytes; a header far past that is no token of ours, and is refused
# before anything else is done with it.
MAX_AUTHORIZATION = 4096
# RFC 7518 §3.2: an HS256 key at least as long as the hash. PyJWT only warns.
MIN_SECRET_BYTES = 32

_user_id = re.compile(USER_ID_PATTERN)


class AuthError(Exception):
    """Why a request is not authenticated (401); `code` goes into the error body."""

    def __init__(self, error: ApiError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.code = error.code
        self.message = message


class Principal:
    """Who a token proves. `valid_until` (epoch seconds) is how long the cache may answer
    for it; `expires` is the token's own `exp` (a WebSocket closes then)."""

    __slots__ = ("user_id", "admin", "valid_until", "expires")

    def __init__(self, user_id: str, admin: bool, valid_until: float, expires: float) -> None:
        self.user_id = user_id
        self.admin = admin
        self.valid_until = valid_until
        self.expires = expires


def make_token(
    user_id: str, *, secret: str, admin: bool = False, ttl_s: int = DEFAULT_TTL_S
) -> str:
    """A signed token for `user_id`, valid for `ttl_s` seconds."""
    _check_secret(secret)
    if not _user_id.match(user_id):
        raise ValueError(f"user id {user_id!r} must match {USER_ID_PATTERN}")
    claims: dict[str, object] = {"sub": user_id, "exp": int(time.time()) + ttl_s}
    if admin:
        claims["role"] = ADMIN_ROLE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class Budget(Protocol):
    """What a proven user's request is charged to (api/limits.py): raises to refuse it."""

    def charge(self, user_id: str, order_command: bool) -> None: ...


class Authenticator:
    def __init__(self, secret: str, budget: Budget | None = None) -> None:
        _check_secret(secret)
        self._secret = secret
        self._cache: dict[str, Principal] = {}
        self._cached_chars = 0
        # Charged here, where every authenticated request proves its user anyway: a
        # limiter of its own would look the token up a second time.
        self.budget = budget

    def principal(self, authorization: str | None, order_command: bool = False) -> Principal:
        """The user an `Authorization` header value proves, or AuthError; the request is
        charged to the user's budget (an order command to its order budget too)."""
        found = self._principal(authorization)
        if self.budget is not None:
            self.budget.charge(found.user_id, order_command)
        return found

    def _principal(self, authorization: str | None) -> Principal:
        if authorization is None:
            raise AuthError(
                ApiError.UNAUTHENTICATED, "an Authorization: Bearer <token> header is needed"
            )
        if len(authorization) > MAX_AUTHORIZATION:
            raise AuthError(
                ApiError.INVALID_TOKEN,
                f"the Authorization header exceeds {MAX_AUTHORIZATION} characters",
            )
        # The usual header is "Bearer <token>", the cache's own spelling of the token: one
        # lookup, as cheap as before. Any other spelling (padded, "bearer") finds the same
        # entry under that spelling and adds none.
        now = time.time()
        cached = self._cache.get(authorization)
        if cached is not None and now < cached.valid_until:
            return cached
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(
                ApiError.UNAUTHENTICATED, "the Authorization header must be Bearer <token>"
            )
        key = "Bearer " + token
        cached = self._cache.get(key)
        if cached is not None and now < cached.valid_until:
            return cached
        principal = self._verify(token, now)
        if len(self._cache) >= CACHE_MAX or self._cached_chars >= CACHE_MAX_CHARS:
            self._cache.clear()
            self._cached_chars = 0
        self._cache[key] = principal
        self._cached_chars += len(key)
        return principal

    def _verify(self, token: str, now: float) -> Principal:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(ApiError.TOKEN_EXPIRED, "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(ApiError.INVALID_TOKEN, f"invalid token: {exc}") from None
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not _user_id.match(user_id):
            raise AuthError(
                ApiError.INVALID_TOKEN, f"invalid token: sub must match {USER_ID_PATTERN}"
            )
        expires = claims["exp"]
        # PyJWT takes int(exp): "9999999999" as a string would pass. RFC 7519 NumericDate
        # is a JSON number; ours are integers (make_token).
        if type(expires) is not int:
            raise AuthError(ApiError.INVALID_TOKEN, "invalid token: exp must be an integer")
        admin = claims.get("role") == ADMIN_ROLE
        return Principal(user_id, admin, min(float(expires), now + CACHE_TTL_S), float(expires))


def _check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"SPOT_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
