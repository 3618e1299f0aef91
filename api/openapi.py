"""The OpenAPI 3.1 document: schemas generated from the msgspec types in schema/wire.py,
paths written here (they are few, and their prose is for people)."""

from __future__ import annotations

from typing import Any

import msgspec

from api.binance.routes import ENDPOINTS, PREFIX, USER_STREAM
from api.candles import INTERVALS, MONTH
from schema import console, wire

REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(name=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    what = {
        400: "malformed body or query",
        401: "missing, invalid or expired token",
        403: "admin token needed",
        404: "no such order or symbol (or fee tier)",
        409: "duplicate client_order_id (with the original order_id), or order not open",
        413: "body too large",
        422: "a rule of the symbol or of the order is broken (STOP_WOULD_TRIGGER, "
        "STOP_NOT_REPLACEABLE, EXPIRE_AT_PASSED...), insufficient balance, too many "
        "open orders (or fee rates broken)",
        503: "storage unavailable, or no database for order history",
    }
    return {str(s): _json("Error", what[s]) for s in statuses}


# Every /v1 request may be refused by a rate limit (api/limits.py).
RATE_LIMITED = {
    "429": {
        **_json(
            "Error",
            "RATE_LIMITED: past a rate limit of the user, its order commands or "
            "the client's address",
        ),
        "headers": {
            "Retry-After": {"schema": {"type": "integer", "minimum": 1}},
            "RateLimit": {"schema": {"type": "string"}},
            "RateLimit-Policy": {"schema": {"type": "string"}},
        },
    }
}


def _op(summary: str, ok: tuple[int, str, str], errors: tuple[int, ...], **extra: Any) -> Any:
    status, schema, description = ok
    responses = {str(status): _json(schema, description), **_errors(*errors), **RATE_LIMITED}
    return {"summary": summary, "responses": responses, **extra}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _path_param(name: str, kind: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": kind}}]


def _query_param(name: str, low: int, high: int, default: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": low, "maximum": high, "default": default}
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _query_text(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
ORDER_ID = _path_param("id", "integer")
SYMBOL = _path_param("symbol", "string")
SYMBOL_FILTER = _query_text("symbol", "only this symbol's", maxLength=32, pattern=wire.TEXT_PATTERN)
STATUS_FILTER = _query_text("status", "only orders in this status", enum=list(wire.ORDER_STATUSES))
HISTORY_LIMIT = _query_param("limit", 1, 500, 100)
ASSET_FILTER = _query_text("asset", "only this asset's entries", minLength=1, maxLength=16)
CURSOR = _query_text(
    "cursor",
    "the next_cursor of the page before (opaque)",
    maxLength=256,
    pattern=r"^[A-Za-z0-9_-]+$",
)
MIGRATION_ERRORS = {
    "400": _json("Error", "malformed body or query"),
    "401": _json("Error", "missing, invalid or expired token"),
    "403": _json("Error", "admin token needed"),
    "503": _json("Error", "storage unavailable"),
    **RATE_LIMITED,
}


def _migration_paths() -> dict[str, Any]:
    started = {
        **_json("MigrationView", "started; it runs on, GET the Location to follow it"),
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
    conflict = {
        "description": "MIGRATION_RUNNING: the symbol is being moved already, by "
        "migration_id; ALREADY_ON_SHARD; ROUTE_NOT_ACTIVE",
        "content": {
            "application/json": {"schema": {"oneOf": [_ref("MigrationConflict"), _ref("Error")]}}
        },
    }
    return {
        "/v1/admin/migrations": {
            "post": {
                "summary": "Move a symbol to another matching shard, live (admin)",
                "description": "Pause routing, drain the source shard, hand the book over, "
                "switch and replay what was buffered; a step that outlives timeout_s rolls "
                "back. Poll GET /v1/admin/migrations/{id} for its step and timings.",
                "requestBody": _body("StartMigration"),
                "responses": {
                    "202": started,
                    **MIGRATION_ERRORS,
                    "404": _json("Error", "UNKNOWN_SYMBOL"),
                    "409": conflict,
                    "413": _json("Error", "body too large"),
                    "422": _json("Error", "SHARD_OUT_OF_RANGE"),
                },
                "security": AUTH,
            },
            "get": {
                "summary": "Recent migrations: running first, then finished, newest first "
                "(admin); finished ones are kept SPOT_MIGRATION_TTL_S",
                "parameters": [_query_param("limit", 1, 100, 20)],
                "responses": {"200": _json("Migrations", "migrations"), **MIGRATION_ERRORS},
                "security": AUTH,
            },
        },
        "/v1/admin/migrations/{id}": {
            "get": {
                "summary": "One migration: state, step, epoch, step timings, pause (admin)",
                "parameters": _path_param("id", "string"),
                "responses": {
                    "200": _json("MigrationView", "the migration"),
                    **MIGRATION_ERRORS,
                    "404": _json("Error", "no such migration (or expired)"),
                },
                "security": AUTH,
            }
        },
    }


def _api_key_paths() -> dict[str, Any]:
    return {
        "/v1/api-keys": {
            "post": {
                "summary": "A new API key for /api/v3, read-only unless asked; its secret is "
                "shown this once (derived again by the server, stored nowhere)",
                "requestBody": {"content": {"application/json": {"schema": _ref("NewApiKey")}}},
                "responses": {
                    "201": _json("ApiKeyCreated", "the key and its secret"),
                    **_errors(400, 401, 413, 503),
                    "409": _json("Error", "TOO_MANY_API_KEYS: revoke one first"),
                },
                "security": AUTH,
            },
            "get": _op(
                "The caller's API keys, oldest first, without secrets",
                (200, "ApiKeys", "keys"),
                (401, 503),
                security=AUTH,
            ),
        },
        "/v1/api-keys/{key}": {
            "delete": {
                "summary": "Revoke one of the caller's API keys",
                "parameters": _path_param("key", "string"),
                "responses": {
                    "204": {"description": "revoked"},
                    **_errors(401, 404, 503),
                },
                "security": AUTH,
            }
        },
    }


BINANCE_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}},
    "required": ["code", "msg"],
}


def _binance_paths() -> dict[str, Any]:
    """Binance's spot API v3 subset (api/binance/): parameters and replies are Binance's
    own (its spot API documentation), so they are named, not re-described, here."""
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        signed = endpoint.permission is not None
        errors = {"400": {"description": "Binance's error", "content": _binance_error()}}
        if signed:
            errors["401"] = {"description": "-2014/-2015: API key", "content": _binance_error()}
        errors["503"] = {"description": "-1001: a dependency is down", "content": _binance_error()}
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "description": "Binance's spot API v3: its parameters (query string; a POST's "
            "in an application/x-www-form-urlencoded body) and its reply. "
            + (
                "USER_STREAM: X-MBX-APIKEY only."
                if endpoint.permission == USER_STREAM
                else f"SIGNED: X-MBX-APIKEY, timestamp, recvWindow, signature; the key needs "
                f"permission {endpoint.permission!r}."
                if signed
                else "Public."
            ),
            "responses": {"200": {"description": "Binance's reply"}, **errors},
        }
        if signed:
            operation["security"] = [{"binanceKey": []}]
        paths.setdefault(PREFIX + endpoint.path, {})[endpoint.method.lower()] = operation
    return paths


def _binance_error() -> dict[str, Any]:
    return {"application/json": {"schema": _ref("BinanceError")}}


def _fee_tier_paths() -> dict[str, Any]:
    user = [{**_path_param("user_id", "string")[0], "schema": {"type": "string",
             "pattern": wire.USER_ID_PATTERN}}]  # fmt: skip
    found = (400, 401, 403, 503)
    return {
        "put": _op(
            "Set a user's fee tier: its rates in place of every symbol's, for the orders it "
            "places from now on (every API process within 1 s) (admin)",
            (200, "FeeTierView", "set"),
            (*found, 413, 422),
            parameters=user,
            requestBody=_body("FeeRates"),
            security=AUTH,
        ),
        "get": _op(
            "A user's fee tier (admin); 404 NO_FEE_TIER: the symbols' rates apply",
            (200, "FeeTierView", "the tier"),
            (*found, 404),
            parameters=user,
            security=AUTH,
        ),
        "delete": _op(
            "Remove a user's fee tier: the symbols' rates apply again (admin)",
            (200, "FeeTierView", "the tier removed"),
            (*found, 404),
            parameters=user,
            security=AUTH,
        ),
    }


def _console_paths() -> dict[str, Any]:
    page = {"200": {"description": "the file", "content": {"text/html": {}}}}
    return {
        "/v1/admin/console": {
            "get": {
                "summary": "The operator console's snapshot of the exchange, one a second (admin)",
                "description": "With ?after=<at_ms of the snapshot the caller has> a newer one "
                "comes at once, else the request waits (3 s at most) for the next; the "
                "x-next-snapshot-ms header says when that is made. Made once a second per API "
                "process however many read it (api/console.py).",
                "parameters": [_query_param("after", 0, 2**62, 0)],
                "responses": {"200": _json("ConsoleSnapshot", "the snapshot"), **MIGRATION_ERRORS},
                "security": AUTH,
            }
        },
        "/console": {
            "get": {
                "summary": "The operator console: a page, its data admin-only",
                "responses": page,
            }
        },
        "/console/{file}": {
            "get": {
                "summary": "The console's modules, style and icon",
                "parameters": _path_param("file", "string"),
                "responses": {**page, "404": _json("Error", "no such file")},
            }
        },
    }


def document(shards: int | None = None) -> dict[str, Any]:
    """The document; with `shards` (SPOT_SHARDS), a migration's to_shard is bounded by it."""
    _, components = msgspec.json.schema_components(
        [
            *wire.REQUESTS,
            *wire.REPLIES,
            *wire.MIGRATION_TYPES,
            *wire.API_KEY_TYPES,
            *console.CONSOLE_TYPES,
        ],
        ref_template=REF,
    )
    components = _plain_tuples(components)
    if shards is not None:
        components["StartMigration"]["properties"]["to_shard"]["maximum"] = shards - 1
    components["BinanceError"] = BINANCE_ERROR
    order = (400, 401, 404, 413, 503)
    paths: dict[str, Any] = {
        "/v1/orders": {
            "post": _op(
                "Place an order: LIMIT, MARKET, or a stop (STOP_LIMIT, STOP_MARKET), GTD "
                "with expire_at_ms",
                (202, "OrderAccepted", "queued"),
                (400, 401, 409, 413, 422, 503),
                requestBody=_body("PlaceOrder"),
                security=AUTH,
                description="A stop waits outside the book (status UNTRIGGERED) with its "
                "funds held as the order it becomes, until a trade reaches its stop_price; "
                "then it runs as a LIMIT (STOP_LIMIT) or MARKET (STOP_MARKET) order under "
                "its own id. One that the last price reaches already is refused (422 "
                "STOP_WOULD_TRIGGER). A GTD order ends CANCELED with reason EXPIRED at "
                "expire_at_ms.",
            ),
            "get": _op(
                "The caller's orders, newest first (those just placed included)",
                (200, "Orders", "orders"),
                (400, 401, 503),
                parameters=[SYMBOL_FILTER, STATUS_FILTER, HISTORY_LIMIT],
                security=AUTH,
            ),
            "delete": _op(
                "Cancel all: every open order and untriggered stop of the caller's, in one "
                "symbol (?symbol=) or in all",
                (202, "CancelAllAccepted", "a cancel-all queued for each symbol named"),
                (400, 401, 422, 503),
                parameters=[
                    _query_text(
                        "symbol", "only this symbol's", maxLength=32, pattern=wire.TEXT_PATTERN
                    )
                ],
                security=AUTH,
            ),
        },
        "/v1/orders/{id}": {
            "get": _op(
                "One of the caller's orders",
                (200, "OrderView", "the order"),
                (401, 404, 503),
                parameters=ORDER_ID,
                security=AUTH,
            ),
            "delete": _op(
                "Cancel",
                (202, "OrderAccepted", "cancel queued"),
                (401, 404, 409, 503),
                parameters=ORDER_ID,
                security=AUTH,
            ),
            "patch": _op(
                "Replace price and/or quantity",
                (202, "OrderAccepted", "replace queued"),
                (*order, 409, 422),
                parameters=ORDER_ID,
                requestBody=_body("ReplaceOrder"),
                security=AUTH,
            ),
        },
        "/v1/fills": {
            "get": _op(
                "The caller's fills, newest first, as maker or taker, each with its fee "
                "(in the asset received: base for a BUY, quote for a SELL; negative: a rebate)",
                (200, "Fills", "fills"),
                (400, 401, 503),
                parameters=[SYMBOL_FILTER, HISTORY_LIMIT],
                security=AUTH,
            )
        },
        "/v1/ledger": {
            "get": _op(
                "The caller's ledger, newest first: deposits, withdrawals, and each trade's "
                "TRADE entries (received, paid) and FEE or REBATE, one asset's change each; "
                "per asset they add up to the balance (available + locked)",
                (200, "Ledger", "one page; next_cursor, if any, gives the next"),
                (400, 401, 503),
                parameters=[ASSET_FILTER, HISTORY_LIMIT, CURSOR],
                security=AUTH,
            )
        },
        "/v1/balances": {
            "get": _op(
                "The caller's balances",
                (200, "Balances", "available and locked per asset"),
                (401, 503),
                security=AUTH,
            )
        },
        "/v1/symbols": {"get": _op("Listed symbols", (200, "Symbols", "specs"), (503,))},
        "/v1/book/{symbol}": {
            "get": _op(
                "Order book depth",
                (200, "Book", "best levels first"),
                (400, 404, 503),
                parameters=[*SYMBOL, _query_param("depth", 1, 50, 20)],
            )
        },
        "/v1/trades/{symbol}": {
            "get": _op(
                "Recent trades, newest first",
                (200, "Trades", "trades"),
                (400, 404, 503),
                parameters=[*SYMBOL, _query_param("limit", 1, 100, 50)],
            )
        },
        "/v1/klines": {
            "get": _op(
                "Candles of an interval, oldest first: the batcher's one-minute candles summed, "
                "unbroken from the first trade (an interval without trades at the last close, "
                "no volume); without start_ms the newest `limit`",
                (200, "Klines", "candles"),
                (400, 404, 503),
                parameters=[
                    {
                        "name": "symbol",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 32},
                    },
                    {
                        "name": "interval",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "enum": [*INTERVALS, MONTH]},
                    },
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "description": "ms since the epoch",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10**14},
                        }
                        for name in ("start_ms", "end_ms")
                    ),
                    _query_param("limit", 1, 1000, 500),
                ],
            )
        },
        "/v1/admin/deposits": {
            "post": _op(
                "Credit a user's available balance (admin)",
                (200, "Transferred", "done"),
                (400, 401, 403, 413, 422, 503),
                requestBody=_body("Deposit"),
                security=AUTH,
            )
        },
        "/v1/admin/withdrawals": {
            "post": _op(
                "Debit a user's available balance (admin)",
                (200, "Transferred", "done"),
                (400, 401, 403, 413, 422, 503),
                requestBody=_body("Withdrawal"),
                security=AUTH,
            )
        },
        "/v1/admin/fee-tiers/{user_id}": _fee_tier_paths(),
        "/v1/ws": {
            "get": {
                "summary": "Market data over WebSocket (api/market_data.py has the protocol)",
                "description": (
                    'Upgrade to WebSocket, then send {"op": "subscribe", "channels": [...]}. '
                    "Public channels: trades:{symbol}, depth:{symbol}, "
                    "klines:{symbol}:{interval}. Private: orders (the "
                    "user's own order events and fills, each fill with its fee and fee_asset) "
                    "and balances (a snapshot of the user's balances, then the absolute "
                    "available and locked of each asset that moved, with time_ms), "
                    'after {"op": "auth", "token": ...} or with an Authorization: Bearer '
                    "header on the upgrade."
                ),
                "responses": {
                    "101": {"description": "switching to WebSocket"},
                    "426": {"description": "a plain HTTP request: upgrade required"},
                    "429": {"description": "this address has SPOT_WS_CONNECTIONS_PER_IP open"},
                    "503": {"description": "the process has SPOT_WS_MAX_CONNECTIONS open"},
                },
            }
        },
        **_migration_paths(),
        **_console_paths(),
        **_api_key_paths(),
        **_binance_paths(),
        "/healthz": {
            "get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Redis and PostgreSQL (when configured) reachable, symbols "
                "loaded; a 503 names the dependency that is not",
                "responses": {"200": {"description": "ready"}, **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "text format 0.0.4", "content": {"text/plain": {}}}
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
        },
    }
    _name_operations(paths)
    paths["/v1/orders"]["post"]["responses"]["202"]["links"] = ORDER_LINKS
    return {
        "openapi": "3.1.0",
        "info": {"title": "Spot", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "binanceKey": {"type": "apiKey", "in": "header", "name": "X-MBX-APIKEY"},
            },
        },
    }


# What the order id a place returns leads to (OpenAPI links: a client, or a fuzzer's
# stateful phase, follows them).
ORDER_LINKS = {
    name: {"operationId": operation, "parameters": {"id": "$response.body#/order_id"}}
    for name, operation in (
        ("GetOrder", "getV1OrdersId"),
        ("CancelOrder", "deleteV1OrdersId"),
        ("ReplaceOrder", "patchV1OrdersId"),
    )
}


def _name_operations(paths: dict[str, Any]) -> None:
    """operationId from method and path: GET /v1/orders/{id} -> getV1OrdersId."""
    for path, operations in paths.items():
        words = [w.strip("{}") for w in path.replace(".", "/").split("/") if w]
        suffix = "".join(w[:1].upper() + w[1:] for w in words)
        for method, operation in operations.items():
            operation["operationId"] = method + suffix


def _plain_tuples(schema: Any) -> Any:
    """msgspec gives a tuple[int, int] as prefixItems; one whose items are all alike is the
    same as an array of that item, of that length, which every OpenAPI tool reads (a
    fuzzer once took the prefixItems of a response for a malformed schema)."""
    if isinstance(schema, list):
        return [_plain_tuples(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _plain_tuples(value) for key, value in schema.items()}
    prefix = out.get("prefixItems")
    if prefix and all(item == prefix[0] for item in prefix) and out.get("items") is False:
        del out["prefixItems"]
        out["items"] = prefix[0]
    return out
