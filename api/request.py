"""What every handler shares of a request: the reply shape, the body (bounded), the query
string, typed JSON decoding (a 400 for what does not decode), and who is asking."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import msgspec

from api.auth import Authenticator, Principal
from api.errors import HTTPError, malformed, too_large
from api.rsgi import HTTPProtocol, Scope
from schema.codes import ApiError
from schema.wire import Error

Reply = tuple[int, bytes, list[tuple[str, str]]]

JSON = [("content-type", "application/json")]
TEXT = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
UNAUTHORIZED = [*JSON, ("www-authenticate", "Bearer")]
SYMBOL_LENGTH = 32  # schema.tables.SYMBOL

encode = msgspec.json.Encoder().encode


def error_reply(error: ApiError, message: str) -> Reply:
    return error.status, encode(Error(error=error.code, message=message)), JSON


def decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise malformed(str(exc)) from None


async def read_body(scope: Scope, proto: HTTPProtocol, limit: int) -> bytes:
    length = scope.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise malformed("bad Content-Length")
        if int(length) > limit:
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


def admin(auth: Authenticator, scope: Scope) -> Principal:
    who = auth.principal(scope.headers.get("authorization"))
    if not who.admin:
        raise HTTPError(ApiError.FORBIDDEN, "an admin token is needed")
    return who


def query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.query_string)


def query_int(query: dict[str, list[str]], name: str, limits: tuple[int, int, int]) -> int:
    low, high, default = limits
    values = query.get(name)
    if not values:
        return default
    value = values[-1]
    if not value.isdigit() or not low <= int(value) <= high:
        raise malformed(f"{name} must be an integer in {low}..{high}")
    return int(value)


def query_text(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def query_symbol(query: dict[str, list[str]]) -> str | None:
    # Not checked against the listed symbols: a delisted symbol still has its history.
    symbol = query_text(query, "symbol")
    if symbol is not None and (len(symbol) > SYMBOL_LENGTH or not symbol.isprintable()):
        raise malformed(f"symbol must be 1..{SYMBOL_LENGTH} printable characters")
    return symbol
