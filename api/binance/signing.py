"""A v3 request's parameters, and the proof that a signed one comes from its key's owner.

Binance's rules (its spot API's "SIGNED endpoint security"): parameters come in the query
string and, for POST/PUT/DELETE, in an `application/x-www-form-urlencoded` body; the
signature is HMAC-SHA256, hex, keyed by the API key's secret, over the query string
followed by the body (nothing between them), each exactly as sent, the `signature`
parameter taken out; `timestamp` (ms since the epoch; microseconds too, as Binance takes
them) must be less than 1 s ahead of the server's clock and at most `recvWindow` ms
(default 5000, at most 60000) behind it. The key comes in the X-MBX-APIKEY header.
"""

from __future__ import annotations

import hmac
import time
from hashlib import sha256
from urllib.parse import parse_qsl

from api.apikeys import ApiKey, ApiKeyStore, well_formed
from api.binance.errors import Binance, BinanceError
from api.request import read_body
from api.rsgi import HTTPProtocol, Scope

RECV_WINDOW_MS = 5_000  # Binance's default
MAX_RECV_WINDOW_MS = 60_000
AHEAD_MS = 1_000  # how far ahead of the server's clock a timestamp may be
MICROSECONDS = 10**15  # a timestamp past this is in microseconds (year 2001 in µs)
MAX_PARAM_CHARS = 512  # no parameter of ours is anywhere near this long
_BODY_METHODS = frozenset(("POST", "PUT", "DELETE"))
_SIGNATURE = "signature="


class Params:
    """The parameters, each given once (a repeated one is Binance's -1101)."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    @classmethod
    def parse(cls, *parts: str) -> Params:
        values: dict[str, str] = {}
        for part in parts:
            for name, value in _pairs(part):
                if name in values:
                    raise BinanceError(Binance.TOO_MANY_PARAMETERS)
                if len(value) > MAX_PARAM_CHARS:
                    raise BinanceError(Binance.ILLEGAL_CHARS, param=name)
                values[name] = value
        return cls(values)

    def get(self, name: str) -> str | None:
        """The value, or None when absent or empty (Binance reads both as not sent)."""
        value = self.values.get(name)
        return value if value else None

    def required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise BinanceError(Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, param=name)
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int | None:
        """An integer of ASCII digits within low..high, or `default` when not sent."""
        value = self.get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise BinanceError(
                Binance.ILLEGAL_CHARS,
                f"Illegal characters found in parameter '{name}'; legal range is {low}..{high}.",
            )
        return int(value)

    def refuse(self, *names: str) -> None:
        """Parameters Binance takes that this order type (or this server) does not."""
        if self.values.keys().isdisjoint(names):  # the usual case, in one look
            return
        for name in names:
            if self.get(name) is not None:
                raise BinanceError(Binance.PARAM_NOT_REQUIRED, param=name)


def _pairs(part: str) -> list[tuple[str, str]]:
    """parse_qsl(part, keep_blank_values=True) as it reads a part with nothing escaped
    (what a client sends: ccxt escapes nothing in an order), at a fifth of its cost."""
    if "%" in part or "+" in part:
        try:
            return parse_qsl(part, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            illegal = "Illegal characters found in a parameter."
            raise BinanceError(Binance.ILLEGAL_CHARS, illegal) from None
    pairs = []
    for piece in part.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((name, value))
    return pairs


def payload(query: str, body: str) -> tuple[str, str | None]:
    """What was signed (the query string, then the body, the signature taken out of
    whichever holds it) and the signature, or None. Params.parse has refused a second
    `signature` by then, so there is one at most."""
    signature = None
    kept: list[str] = []
    for part in (query, body):
        at = part.find(_SIGNATURE)
        while at > 0 and part[at - 1] != "&":  # inside another piece: not the parameter
            at = part.find(_SIGNATURE, at + 1)
        if at < 0:
            kept.append(part)
            continue
        end = part.find("&", at)
        signature = part[at + len(_SIGNATURE) : None if end < 0 else end]
        if at == 0:
            kept.append("" if end < 0 else part[end + 1 :])
        else:
            kept.append(part[: at - 1] + ("" if end < 0 else part[end:]))
    return "".join(kept), signature


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), sha256).hexdigest()


class Signer:
    """Reads and checks a v3 request: its parameters, and for a signed one its key."""

    def __init__(self, keys: ApiKeyStore, max_body: int) -> None:
        self.keys = keys
        self.max_body = max_body

    async def signed(
        self, scope: Scope, proto: HTTPProtocol, permission: str
    ) -> tuple[ApiKey, Params]:
        """The key and the parameters of a signed request, or BinanceError."""
        query, body = scope.query_string, await self._body(scope, proto)
        params = Params.parse(query, body)
        key = await self.key(scope.headers.get("x-mbx-apikey"))
        signed, signature = payload(query, body)
        verify(key, signed, signature, params, permission)
        return key, params

    async def keyed(self, scope: Scope, proto: HTTPProtocol) -> tuple[ApiKey, Params]:
        """The key and the parameters of a request Binance asks only an API key of (its
        USER_STREAM endpoints: no signature, no timestamp)."""
        params = Params.parse(scope.query_string, await self._body(scope, proto))
        return await self.key(scope.headers.get("x-mbx-apikey")), params

    async def _body(self, scope: Scope, proto: HTTPProtocol) -> str:
        if scope.method not in _BODY_METHODS:
            return ""
        raw = await read_body(scope, proto, self.max_body)
        try:
            return raw.decode("ascii")  # form encoding is ASCII: anything else is %-escaped
        except UnicodeDecodeError:
            illegal = "Illegal characters found in the body."
            raise BinanceError(Binance.ILLEGAL_CHARS, illegal) from None

    async def key(self, header: str | None) -> ApiKey:
        """The live key an X-MBX-APIKEY header (or a WebSocket request's apiKey) names."""
        if header is None or not well_formed(header):
            raise BinanceError(Binance.BAD_API_KEY_FMT)
        key = await self.keys.lookup(header)
        if key is None:
            raise BinanceError(Binance.REJECTED_MBX_KEY)
        return key


def verify(
    key: ApiKey, signed: str, signature: str | None, params: Params, permission: str
) -> None:
    """That `signature` is `key`'s over `signed`, in time, and the key may do `permission`;
    else BinanceError. (A WebSocket API request signs its params sorted by name, joined as
    a query string: the caller makes `signed` so.)"""
    timestamp = _timestamp(params)
    if signature is None:
        raise BinanceError(Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, param="signature")
    # HMAC signatures are not case-sensitive (Binance's docs): hex digits either way.
    # hmac.digest is OpenSSL's one-shot HMAC: half of hmac.new(...).hexdigest()'s cost.
    expected = hmac.digest(key.secret, signed.encode(), "sha256").hex()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceError(Binance.INVALID_SIGNATURE)
    window = _recv_window(params)
    if window > MAX_RECV_WINDOW_MS:
        raise BinanceError(Binance.BAD_RECV_WINDOW)
    now = time.time_ns() // 1_000_000
    if not (timestamp < now + AHEAD_MS and now - timestamp <= window):
        raise BinanceError(Binance.INVALID_TIMESTAMP)
    if permission not in key.permissions:
        raise BinanceError(Binance.REJECTED_MBX_KEY)


def public(scope: Scope) -> Params:
    """A public request's parameters: the query string's."""
    return Params.parse(scope.query_string)


def _recv_window(params: Params) -> float:
    """recvWindow in ms, up to three decimals (microseconds), as Binance takes it."""
    value = params.get("recvWindow")
    if value is None:
        return RECV_WINDOW_MS
    whole, _, fraction = value.partition(".")
    if not (whole.isascii() and whole.isdigit() and len(whole) <= 9) or not (
        fraction == "" or (fraction.isascii() and fraction.isdigit() and len(fraction) <= 3)
    ):
        raise BinanceError(Binance.ILLEGAL_CHARS, param="recvWindow")
    return float(value)


def _timestamp(params: Params) -> int:
    """The request's timestamp in ms (one in microseconds converted)."""
    value = params.get("timestamp")
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise BinanceError(Binance.MANDATORY_PARAM_EMPTY_OR_MALFORMED, param="timestamp")
    timestamp = int(value)
    return timestamp // 1000 if timestamp >= MICROSECONDS else timestamp
