"""What every handler shares of a request: the reply shape, the body (bounded), the query
string, typed JSON decoding (a 400 for what does not decode), and who is asking."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

import msgspec

from api.auth import Authenticator, Principal
from api.errors import HTTPError, malformed, too_large
from api.rsgi import HTTPProtocol, Scope
from schema.codes import ApiError
from schema.wire import TEXT_PATTERN, Error

Reply = tuple[int, bytes, list[tuple[str, str]]]

JSON = [("content-type", "application/json")]
TEXT = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
UNAUTHORIZED = [*JSON, ("www-authenticate", "Bearer")]
SYMBOL_LENGTH = 32  # schema.tables.SYMBOL
_text = re.compile(TEXT_PATTERN)  # the OpenAPI document's pattern of the symbol filter

# 503: a dependency that is down. A second is about what Redis takes to load its AOF.
RETRY_AFTER_S = "1"
UNAVAILABLE = [*JSON, ("retry-after", RETRY_AFTER_S)]

encode = msgspec.json.Encoder().encode

T = TypeVar("T", covariant=True)  # a Body[Withdrawal] is a Body[Deposit]


def error_reply(error: ApiError, message: str) -> Reply:
    headers = UNAVAILABLE if error.status == 503 else JSON
    return error.status, encode(Error(error=error.code, message=message)), headers


def ascii_int(text: str) -> int | None:
    """`text` as a non-negative integer of ASCII digits, else None: str.isdigit() alone
    passes "¹" (int() then fails) and "٣" (int() reads it as 3)."""
    return int(text) if text.isascii() and text.isdigit() else None


class Body(Generic[T]):
    """A JSON request body of one Struct type: a 400 for what does not decode, is not
    UTF-8, or names a key twice (msgspec keeps the last; a client meant one of them).

    The duplicate check is cheap for the usual body: a flat object has at least one ':'
    per key, so when the colons are as many as its distinct keys (msgspec.Raw leaves the
    values unparsed) no key can be there twice; only otherwise (a ':' inside a string, or
    a key repeated) does the exact check run. It costs ~0.5 µs a body."""

    def __init__(self, kind: type[T]) -> None:
        self._kind = kind
        self._typed = msgspec.json.Decoder(kind)
        self._keys = msgspec.json.Decoder(dict[str, msgspec.Raw])

    def decode(self, body: bytes) -> T:
        try:
            try:
                value = self._typed.decode(body)
            except msgspec.ValidationError as exc:
                if "got `float`" not in str(exc):
                    raise
                value = self._integral(body)
            if body.count(b":") != len(self._keys.decode(body)):
                json.loads(body, object_pairs_hook=_no_repeated_keys)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise malformed(str(exc)) from None
        except UnicodeDecodeError:  # invalid UTF-8 inside a string: msgspec's own error
            raise malformed("the body is not valid UTF-8") from None
        except _RepeatedKey as exc:
            raise malformed(f"key {exc} appears more than once") from None
        return value

    def _integral(self, body: bytes) -> T:
        """`1.0` is the integer 1 to JSON Schema, so to the OpenAPI document; msgspec wants
        `1`. Off the usual path: only a body that failed on a float gets here."""
        value: T = msgspec.convert(_integers(msgspec.json.decode(body)), self._kind)
        return value


def _integers(value: Any) -> Any:
    """Integral floats as ints (within 2^53, where a float holds every integer)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(repr(key))
            seen.add(key)
    return found


async def read_body(scope: Scope, proto: HTTPProtocol, limit: int) -> bytes:
    length = scope.headers.get("content-length")
    if length is not None:
        size = ascii_int(length)
        if size is None:
            raise malformed("bad Content-Length")
        if size > limit:
            raise too_large(limit)
        return await proto()
    # Chunked: stop reading as soon as it is too much.
    chunks, size = [], 0
    async for chunk in proto:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def principal(auth: Authenticator, scope: Scope) -> Principal:
    return auth.principal(scope.headers.get("authorization"))


def order_principal(auth: Authenticator, scope: Scope) -> Principal:
    """principal() for an order command (place, cancel, replace): its own, smaller budget."""
    return auth.principal(scope.headers.get("authorization"), order_command=True)


def admin(auth: Authenticator, scope: Scope) -> Principal:
    who = auth.principal(scope.headers.get("authorization"))
    if not who.admin:
        raise HTTPError(ApiError.FORBIDDEN, "an admin token is needed")
    return who


def query(scope: Scope) -> dict[str, list[str]]:
    # Blank values kept: `?status=` is an empty status (400, as the OpenAPI document says),
    # not a missing one.
    return parse_qs(scope.query_string, keep_blank_values=True)


def query_int(query: dict[str, list[str]], name: str, limits: tuple[int, int, int]) -> int:
    low, high, default = limits
    values = query.get(name)
    if not values:
        return default
    value = ascii_int(values[-1])
    if value is None or not low <= value <= high:
        raise malformed(f"{name} must be an integer in {low}..{high}")
    return value


def query_text(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def query_symbol(query: dict[str, list[str]]) -> str | None:
    # Not checked against the listed symbols: a delisted symbol still has its history.
    symbol = query_text(query, "symbol")
    if symbol is not None and (len(symbol) > SYMBOL_LENGTH or not _text.match(symbol)):
        raise malformed(f"symbol must be up to {SYMBOL_LENGTH} characters, no control ones")
    return symbol


def now_ms() -> int:
    """The wall clock in ms since the epoch, as the API's replies and checks read it."""
    return time.time_ns() // 1_000_000
