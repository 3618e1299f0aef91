# ruff: noqa: F811  (the exchange and api fixtures are test_api_ws.py's, imported)
"""Binance's market streams (api/binance/streams.py) on /ws and /stream: the API in a
subprocess on real Redis, a real WebSocket client, a matching worker stepped in-process (as
tests/integration/test_api_ws.py does, whose exchange this module shares), orders over HTTP.

The shapes are Binance's (web-socket-streams.md of binance/binance-spot-api-docs): the
exact keys of each payload, the combined wrapper, the methods' replies and errors.
"""

from __future__ import annotations

import json
import time
from typing import Any

import websocket

from api.binance.signing import sign
from tests.integration.http import Server, admin
from tests.integration.test_api_ws import WAIT_S, Exchange, api, exchange  # noqa: F401

TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
DIFF_KEYS = {"e", "E", "s", "U", "u", "b", "a"}


def connect(exchange: Exchange, path: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{exchange.api.port}{path}", timeout=WAIT_S)


def call(ws: websocket.WebSocket, request: Any) -> dict[str, Any]:
    """Send one request (a dict as JSON, or raw text) and return the first reply to it."""
    ws.send(request if isinstance(request, str) else json.dumps(request))
    while True:
        message: dict[str, Any] = json.loads(ws.recv())
        if "result" in message or "error" in message:
            return message


def until(exchange: Exchange, ws: websocket.WebSocket, done: Any) -> list[Any]:
    """The messages up to and including the first that is `done` (stepping the worker)."""
    seen: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    ws.settimeout(0.1)
    try:
        while time.monotonic() < deadline:
            try:
                message = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                exchange.aio.run(exchange.worker.step())
                continue
            seen.append(message)
            if done(message):
                return seen
    finally:
        ws.settimeout(WAIT_S)
    raise AssertionError(f"timed out; received {seen}")


def trade(exchange: Exchange, price: int = 10_000, quantity: int = 10) -> None:
    _, seller = exchange.user(AAPL=100)
    _, buyer = exchange.user(USD=10_000_000)
    exchange.place(seller, "SELL", price, quantity)
    exchange.place(buyer, "BUY", price, quantity)
    exchange.match()


def test_a_raw_trade_stream_sends_binances_trade_payload(exchange: Exchange) -> None:
    ws = connect(exchange, "/ws/aapl@trade")
    try:
        trade(exchange)
        [message] = until(exchange, ws, lambda m: m.get("e") == "trade")
        assert set(message) == TRADE_KEYS
        assert (message["s"], message["p"], message["q"]) == ("AAPL", "10000", "10")
        assert message["m"] is False and message["M"] is True  # the buyer took
        assert message["t"] > 0 and abs(message["E"] - time.time() * 1000) < 10_000
    finally:
        ws.close()


def test_a_combined_stream_wraps_each_payload_with_its_stream_name(exchange: Exchange) -> None:
    ws = connect(exchange, "/stream?streams=aapl@aggTrade/aapl@trade")
    try:
        trade(exchange)
        seen = until(exchange, ws, lambda m: m["stream"] == "aapl@aggTrade")
        wrapped = {m["stream"]: m for m in seen}
        assert set(wrapped["aapl@aggTrade"]) == {"stream", "data"}
        data = wrapped["aapl@aggTrade"]["data"]
        assert set(data) == AGG_KEYS and data["a"] == data["f"] == data["l"]
        more = until(exchange, ws, lambda m: m["stream"] == "aapl@trade") if len(seen) < 2 else seen
        assert any(m["stream"] == "aapl@trade" and m["data"]["e"] == "trade" for m in more)
    finally:
        ws.close()


def test_subscribe_unsubscribe_and_list_reply_with_their_ids(exchange: Exchange) -> None:
    ws = connect(exchange, "/ws/0")  # what ccxt opens: no stream, then SUBSCRIBE
    try:
        assert call(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}
        subscribe = {"method": "SUBSCRIBE", "params": ["aapl@trade", "aapl@bookTicker"], "id": 2}
        assert call(ws, subscribe) == {"result": None, "id": 2}
        listed = call(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "x-3"})
        assert listed == {"result": ["aapl@bookTicker", "aapl@trade"], "id": "x-3"}
        unsubscribe = {"method": "UNSUBSCRIBE", "params": ["aapl@bookTicker"], "id": 4}
        assert call(ws, unsubscribe) == {"result": None, "id": 4}
        assert call(ws, {"method": "LIST_SUBSCRIPTIONS", "id": None})["result"] == ["aapl@trade"]
        assert (
            call(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 5})["result"] is False
        )
        assert call(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 6}) == {
            "result": None,
            "id": 6,
        }
        trade(exchange)
        [message] = until(exchange, ws, lambda m: "stream" in m)
        assert (message["stream"], message["data"]["e"]) == ("aapl@trade", "trade")
    finally:
        ws.close()


def test_bad_requests_get_binances_errors_and_the_connection_stays(exchange: Exchange) -> None:
    ws = connect(exchange, "/ws")
    try:
        bad_json = call(ws, "{not json")
        assert bad_json["error"]["code"] == 3 and bad_json["error"]["msg"].startswith(
            "Invalid JSON"
        )
        assert bad_json["id"] is None
        cases: list[tuple[Any, Any]] = [
            ({"method": "SUBSCRIBE", "params": ["aapl@nothing"], "id": 1}, 1),
            ({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 2}, 2),
            ({"method": "SUBSCRIBE", "params": ["AAPL@trade"], "id": 3}, 3),  # lower case only
            ({"method": "SUBSCRIBE", "params": ["aapl@kline_7m"], "id": 4}, 4),
            ({"method": "SUBSCRIBE", "params": "aapl@trade", "id": 5}, 5),
            ({"method": "SUBSCRIBE", "params": [], "id": 6}, 6),
            ({"method": "SUBSCRIBE", "params": [7], "id": 7}, 7),
            ({"method": "PUBLISH", "params": [], "id": 8}, 8),
            ({"params": ["aapl@trade"], "id": 9}, 9),
            ({"method": "SUBSCRIBE", "params": ["aapl@trade"], "id": True}, None),
            ({"method": "SUBSCRIBE", "params": ["aapl@trade"], "id": {"a": 1}}, None),
            ({"method": "SUBSCRIBE", "params": ["aapl@trade"], "id": "x" * 37}, None),
            ({"method": "GET_PROPERTY", "params": ["colour"], "id": 10}, 10),
            ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 11}, 11),
            ([1, 2], None),
            ({"method": "SUBSCRIBE", "params": ["aapl@trade" * 500], "id": 12}, None),  # too large
        ]
        for request, rid in cases:
            answer = call(ws, request)
            assert set(answer) == {"error", "id"}, (request, answer)
            assert answer["id"] == rid and isinstance(answer["error"]["msg"], str), request
            assert answer["error"]["code"] in (0, 1, 2), (request, answer)
        # nothing of a refused SUBSCRIBE was taken, one bad name refuses its list
        mixed = {"method": "SUBSCRIBE", "params": ["aapl@trade", "aapl@bogus"], "id": 13}
        assert call(ws, mixed)["error"]["code"] == 2
        assert call(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 14}) == {"result": [], "id": 14}
        # a stream name unknown in the URL is no stream; the connection works
        assert (
            call(ws, {"method": "SUBSCRIBE", "params": ["aapl@trade"], "id": 15})["result"] is None
        )
    finally:
        ws.close()


def test_klines_without_a_database_are_refused_not_a_crash(exchange: Exchange) -> None:
    ws = connect(exchange, "/ws")
    try:
        for stream in ("aapl@kline_1m", "aapl@ticker", "aapl@miniTicker"):
            answer = call(ws, {"method": "SUBSCRIBE", "params": [stream], "id": 1})
            assert answer["error"]["code"] == 2 and "database" in answer["error"]["msg"]
    finally:
        ws.close()
    ws = connect(exchange, "/stream?streams=aapl@kline_1m/aapl@trade")  # the kline left out
    try:
        listed = call(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert listed == {"result": ["aapl@trade"], "id": 2}
    finally:
        ws.close()
    v1 = exchange.connect()
    try:
        v1.send(json.dumps({"op": "subscribe", "channels": ["klines:AAPL:1m", "klines:AAPL:7m"]}))
        errors = [json.loads(v1.recv()), json.loads(v1.recv())]
        assert {(e["error"], e["channel"]) for e in errors} == {
            ("UNAVAILABLE", "klines:AAPL:1m"),
            ("UNKNOWN_CHANNEL", "klines:AAPL:7m"),
        }
    finally:
        v1.close()


def settled_seq(exchange: Exchange) -> int:
    """The depth cache's seq once the worker has published all it applied (its throttle
    holds a change back 50 ms; an idle step publishes it)."""
    for _ in range(3):
        time.sleep(0.06)
        exchange.aio.run(exchange.worker.step())
    status, depth = exchange.api.request("GET", "/api/v3/depth?symbol=AAPL&limit=5")
    assert status == 200
    return int(depth["lastUpdateId"])


def _book(depth: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {side: dict(depth[side]) for side in ("bids", "asks")}


def _apply(book: dict[str, dict[str, str]], diff: dict[str, Any]) -> None:
    for side, levels in (("bids", diff["b"]), ("asks", diff["a"])):
        for price, quantity in levels:
            if float(quantity) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = quantity


def test_depth_diffs_carry_a_snapshot_to_the_rest_depth(exchange: Exchange) -> None:
    """Binance's procedure, by hand: the snapshot's lastUpdateId, diffs U..u chained."""
    _, seller = exchange.user(AAPL=1_000)
    _, buyer = exchange.user(USD=100_000_000)
    exchange.place(seller, "SELL", 10_100, 5)
    exchange.match()
    ws = connect(exchange, "/stream?streams=aapl@depth@100ms/aapl@depth5/aapl@bookTicker")
    try:
        status, snapshot = exchange.api.request("GET", "/api/v3/depth?symbol=AAPL&limit=50")
        assert status == 200
        book, last = _book(snapshot), snapshot["lastUpdateId"]
        for price in (10_200, 10_300, 10_100):
            exchange.place(seller, "SELL", price, 3)
        exchange.place(buyer, "BUY", 9_900, 4)
        exchange.place(buyer, "BUY", 10_100, 6)  # takes the 10_100s: 5 then 1 of the 3
        exchange.match()
        target = settled_seq(exchange)
        seen = until(
            exchange, ws, lambda m: m["stream"] == "aapl@depth@100ms" and m["data"]["u"] >= target
        )
        diffs = [m["data"] for m in seen if m["stream"] == "aapl@depth@100ms"]
        kept = [d for d in diffs if d["u"] > last]
        assert kept and kept[0]["U"] <= last + 1 <= kept[0]["u"]
        for before, after in zip(kept, kept[1:], strict=False):
            assert after["U"] == before["u"] + 1
        for diff in kept:
            assert set(diff) == DIFF_KEYS and diff["e"] == "depthUpdate" and diff["s"] == "AAPL"
            _apply(book, diff)
        status, now = exchange.api.request("GET", "/api/v3/depth?symbol=AAPL&limit=50")
        assert now["lastUpdateId"] == kept[-1]["u"]
        assert book == _book(now)
        assert book["asks"]["10100"] == "2" and book["bids"]["9900"] == "4"

        seen += until(  # sent after the diff of the same read (and the first partial's)
            exchange, ws, lambda m: m["stream"] == "aapl@bookTicker" and m["data"]["u"] >= target
        )
        if not any(m["stream"] == "aapl@depth5" for m in seen):  # at the latest in a second
            seen += until(exchange, ws, lambda m: m["stream"] == "aapl@depth5")
        partial = [m["data"] for m in seen if m["stream"] == "aapl@depth5"]
        assert set(partial[0]) == {"lastUpdateId", "bids", "asks"}
        tickers = [m["data"] for m in seen if m["stream"] == "aapl@bookTicker"]
        assert tickers and set(tickers[-1]) == {"u", "s", "b", "B", "a", "A"}
        assert (tickers[-1]["a"], tickers[-1]["A"], tickers[-1]["b"]) == ("10100", "2", "9900")
    finally:
        ws.close()


def test_an_unknown_websocket_path_is_refused(api: Server) -> None:  # noqa: F811
    try:
        websocket.create_connection(f"ws://127.0.0.1:{api.port}/wsx", timeout=WAIT_S)
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 404
    else:
        raise AssertionError("the upgrade was accepted")


# -- the user data stream -------------------------------------------------------------------

REPORT_KEYS = {
    "e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X", "r", "i", "l",
    "z", "L", "n", "N", "T", "t", "I", "w", "m", "M", "O", "Z", "Y", "Q", "W",
}  # fmt: skip


def api_key(exchange: Exchange, token: str) -> dict[str, str]:
    body = {"permissions": ["read", "trade"]}
    status, created = exchange.api.request("POST", "/v1/api-keys", body, token=token)
    assert status == 201, created
    return dict(created)


def user_stream(exchange: Exchange, method: str, key: str, query: str = "") -> tuple[int, Any]:
    path = "/api/v3/userDataStream" + (f"?{query}" if query else "")
    return exchange.api.request(method, path, headers={"X-MBX-APIKEY": key})


def test_a_listen_key_streams_execution_reports_until_closed(exchange: Exchange) -> None:
    _, seller = exchange.user(AAPL=100)
    buyer_id, buyer = exchange.user(USD=10_000_000)
    key = api_key(exchange, buyer)["api_key"]
    status, opened = user_stream(exchange, "POST", key)
    assert status == 200 and set(opened) == {"listenKey"}
    listen = opened["listenKey"]
    assert user_stream(exchange, "POST", key) == (200, opened)  # the live one again
    assert user_stream(exchange, "PUT", key, f"listenKey={listen}") == (200, {})
    status, missing = user_stream(exchange, "PUT", key, "listenKey=" + "0" * 60)
    assert (status, missing["code"]) == (400, -1125)
    assert user_stream(exchange, "POST", "nokey")[1]["code"] == -2014

    ws = connect(exchange, f"/ws/{listen}")
    try:
        order_id = exchange.place(buyer, "BUY", 10_000, 10)
        exchange.place(seller, "SELL", 10_000, 4)
        exchange.match()
        seen = until(exchange, ws, lambda m: m.get("x") == "TRADE")
        new, trade = seen[0], seen[-1]
        assert set(new) == REPORT_KEYS and set(trade) == REPORT_KEYS
        assert (new["e"], new["x"], new["X"], new["i"], new["S"]) == (
            "executionReport", "NEW", "NEW", order_id, "BUY",
        )  # fmt: skip
        assert (new["q"], new["p"], new["z"], new["t"], new["w"]) == ("10", "10000", "0", -1, True)
        assert (trade["X"], trade["l"], trade["z"], trade["L"], trade["m"]) == (
            "PARTIALLY_FILLED", "4", "4", "10000", True,
        )  # fmt: skip
        assert trade["t"] > 0 and trade["N"] == "AAPL" and trade["Z"] == "40000"
        status, _ = exchange.api.request("DELETE", f"/v1/orders/{order_id}", token=buyer)
        assert status == 202
        exchange.match()
        canceled = until(exchange, ws, lambda m: m.get("x") == "CANCELED")[-1]
        assert (canceled["X"], canceled["z"], canceled["w"]) == ("CANCELED", "4", False)
        transfer = {"user_id": buyer_id, "asset": "USD", "amount": 500}
        status, _ = exchange.api.request("POST", "/v1/admin/deposits", transfer, token=admin())
        assert status == 200
        update = until(exchange, ws, lambda m: m.get("e") == "balanceUpdate")[-1]
        assert set(update) == {"e", "E", "a", "d", "T"}
        assert (update["a"], update["d"]) == ("USD", "500")
        position = until(exchange, ws, lambda m: m.get("e") == "outboundAccountPosition")[-1]
        assert set(position) == {"e", "E", "u", "B"}
        # 10_000_000 deposited, 4 x 10_000 paid, the rest released by the cancel, 500 more
        assert position["B"] == [{"a": "USD", "f": "9960500", "l": "0"}]
    finally:
        ws.close()
    assert user_stream(exchange, "DELETE", key, f"listenKey={listen}") == (200, {})
    assert user_stream(exchange, "DELETE", key, f"listenKey={listen}")[1]["code"] == -1125


def test_the_websocket_api_subscribes_a_signed_user_data_stream(exchange: Exchange) -> None:
    _, token = exchange.user(USD=10_000_000)
    key = api_key(exchange, token)
    ws = connect(exchange, "/ws-api/v3")
    try:

        def request(method: str, params: dict[str, Any], rid: Any) -> dict[str, Any]:
            ws.send(json.dumps({"id": rid, "method": method, "params": params}))
            answer: dict[str, Any] = json.loads(ws.recv())
            return answer

        assert request("ping", {}, "p") == {"id": "p", "status": 200, "result": {}}
        unknown = request("order.place", {}, 7)
        assert (unknown["id"], unknown["status"], unknown["error"]["code"]) == (7, 400, -1020)
        params: dict[str, Any] = {"apiKey": key["api_key"], "timestamp": int(time.time() * 1000)}
        bad = request("userDataStream.subscribe.signature", {**params, "signature": "0" * 64}, 8)
        assert (bad["status"], bad["error"]["code"]) == (400, -1022)
        signed = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["signature"] = sign(key["secret"], signed)
        ok = request("userDataStream.subscribe.signature", params, 9)
        assert ok == {"id": 9, "status": 200, "result": {"subscriptionId": 0}}
        order_id = exchange.place(token, "BUY", 9_000, 1)
        exchange.match()
        [event] = until(exchange, ws, lambda m: "event" in m)
        assert event["subscriptionId"] == 0
        assert (event["event"]["e"], event["event"]["i"]) == ("executionReport", order_id)
    finally:
        ws.close()
