"""The API's errors: `HTTPError`, raised by code (schema.codes gives its status), and one
constructor for each error that carries a message worth building in one place."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import ClusterDownError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schema.codes import HTTP_STATUS, ApiError, RejectReason, ScriptStatus
from schema.symbols import SymbolSpec

if TYPE_CHECKING:
    from control.migration import MigrationError

log = logging.getLogger("spot.api")


class HTTPError(Exception):
    """`{"error": code, "message": ...}` with the code's status. `order_id` goes with a
    repeated client order id (the order it belongs to), `migration_id` with a symbol
    being moved already (the migration moving it), `headers` with a 429 (Retry-After)."""

    def __init__(
        self,
        error: ApiError | RejectReason,
        message: str,
        *,
        order_id: int | None = None,
        migration_id: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        if isinstance(error, RejectReason):
            self.code, self.status = error.value, HTTP_STATUS[error]
        else:
            self.code, self.status = error.code, error.status
        self.message = message
        self.order_id = order_id
        self.migration_id = migration_id
        self.headers = headers  # the reply's, when not the status's usual (a 429's)


class Unavailable:
    """Logs a store that is down once a second at most: while it is, every request would."""

    def __init__(self) -> None:
        self._logged_at = 0.0

    def warn(self, store: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            log.warning("%s unavailable, answering 503: %r", store, exc)


# Replies of a Redis that is not serving for now: loading its AOF after a restart, stuck in
# a script, a replica cut off from its primary or one that is no longer the primary.
# redis-py parses some into classes of their own (and strips the code), BUSY it does not.
_NOT_SERVING = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")
_NOT_SERVING_TYPES = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError)


def redis_not_serving(exc: RedisError) -> bool:
    """Whether `exc` says Redis cannot serve now (503, retry) rather than that a command of
    ours is wrong (a fault of ours: 500). BusyLoadingError is a ConnectionError."""
    if isinstance(exc, _NOT_SERVING_TYPES):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_NOT_SERVING)


def malformed(message: str) -> HTTPError:
    return HTTPError(ApiError.MALFORMED, message)


def too_large(limit: int) -> HTTPError:
    return HTTPError(ApiError.BODY_TOO_LARGE, f"the body exceeds {limit} bytes")


def unavailable(what: str) -> HTTPError:
    return HTTPError(ApiError.UNAVAILABLE, f"{what} is unavailable, retry")


# -- the symbol's rules (schema/symbols.py has them; these say which was broken, and how)


def price_refused(
    reason: RejectReason, spec: SymbolSpec, price: int, band: tuple[int, int] | None
) -> HTTPError:
    if reason is RejectReason.PRICE_NOT_POSITIVE:
        return HTTPError(reason, f"price {price} must be positive")
    if reason is RejectReason.PRICE_OFF_TICK:
        return HTTPError(reason, f"price {price} is not a multiple of the tick {spec.tick}")
    assert band is not None  # PRICE_OUT_OF_BAND: the only other reason, and only with a band
    return HTTPError(reason, f"price {price} is outside the band {band[0]}..{band[1]}")


def quantity_refused(reason: RejectReason, spec: SymbolSpec, quantity: int) -> HTTPError:
    if reason is RejectReason.QUANTITY_OFF_LOT:
        return HTTPError(reason, f"quantity {quantity} is not a multiple of the lot {spec.lot}")
    if reason is RejectReason.QUANTITY_BELOW_MIN:
        return HTTPError(reason, f"quantity {quantity} is below the minimum {spec.min_qty}")
    return HTTPError(reason, f"quantity {quantity} is above the maximum {spec.max_qty}")


def unknown_symbol(symbol: str) -> HTTPError:
    """An order for a symbol not listed: the book's rule, 422."""
    return HTTPError(RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")


def symbol_not_listed(symbol: str) -> HTTPError:
    """A path or an admin request naming a symbol not listed: 404."""
    return HTTPError(ApiError.SYMBOL_NOT_LISTED, f"unknown symbol {symbol!r}")


# -- orders and funds


def unknown_order(order_id: int | str) -> HTTPError:
    shown = repr(order_id) if isinstance(order_id, str) else order_id
    return HTTPError(RejectReason.UNKNOWN_ORDER, f"no order {shown}")


def not_open(order_id: int, status: str | None) -> HTTPError:
    return HTTPError(ApiError.ORDER_NOT_OPEN, f"order {order_id} is {status}")


def insufficient(asset: str, needed: int | None, available: str | None) -> HTTPError:
    what = f"{needed} {asset} needed, {available} available" if needed else f"{available} available"
    return HTTPError(RejectReason.INSUFFICIENT_BALANCE, f"insufficient balance: {what}")


def script_failure(status: ScriptStatus, symbol: str) -> HTTPError:
    """A refusal of an order script that no caller answers on its own."""
    if status is ScriptStatus.TOO_LARGE:
        return HTTPError(ApiError.AMOUNT_TOO_LARGE, "price × quantity is too large")
    if status is ScriptStatus.NO_ROUTE:
        # A listed symbol always has a route (store.symbols.list_symbol): ours to fix.
        log.error("symbol %s is listed but has no route", symbol)
        return HTTPError(ApiError.NO_ROUTE, f"{symbol} cannot take orders right now")
    raise RuntimeError(f"unexpected order script status {status}")


# -- migrations

# control.migration's refusal codes with an answer of their own; any other is refused.
_MIGRATION_REFUSALS = {"NOT_ACTIVE": ApiError.NOT_ACTIVE}


def migration_refused(exc: MigrationError, symbol: str, to_shard: int) -> HTTPError:
    if exc.code == "NO_ROUTE":
        return HTTPError(ApiError.SYMBOL_NOT_LISTED, f"{symbol} has no route")
    if exc.code == "SAME_SHARD":
        return HTTPError(ApiError.ALREADY_ON_SHARD, f"{symbol} is on shard {to_shard} already")
    return HTTPError(_MIGRATION_REFUSALS.get(exc.code, ApiError.MIGRATION_REFUSED), str(exc))


def unknown_migration(migration_id: str) -> HTTPError:
    return HTTPError(ApiError.UNKNOWN_MIGRATION, f"no migration {migration_id!r}")
