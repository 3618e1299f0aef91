"""Checks of loadtest/lean_http.py against a real socket server, under gevent.

Importing locust monkeypatches the process with gevent, so this runs as its own process
(`python -m tests.e2e.lean_http_check`, from tests/e2e/test_lean_http.py), never inside
pytest. The server is a gevent StreamServer in this process that answers each request with
the next canned reply, byte for byte and in as many TCP segments as the check asks for.
Exits 1, naming the failed checks, if any fails.
"""

from __future__ import annotations

import sys
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.server import StreamServer
from locust.env import Environment
from locust.exception import LocustError

from loadtest.lean_http import HttpError, LeanSession, ProtocolError

SEGMENT_GAP_S = 0.01  # long enough for each send() to reach the client as its own read
CHECK_TIMEOUT_S = 4.0  # a client waiting for bytes that never come fails its check, not the run

Reply = Callable[[Any], bool]  # sends an answer on the socket; False closes the connection


def answer(*segments: bytes, keep_open: bool = True) -> Reply:
    def send(sock: Any) -> bool:
        for i, segment in enumerate(segments):
            if i:
                gevent.sleep(SEGMENT_GAP_S)
            sock.sendall(segment)
        return keep_open

    return send


def hang_up(sock: Any) -> bool:
    return False


def ok(body: bytes, status: str = "200 OK") -> Reply:
    return answer(
        b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)
    )


class Server:
    """Answers the requests it receives, across all connections, with `replies` in order."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = deque(replies)
        self.requests: list[bytes] = []
        self.accepted = 0
        self.server = StreamServer(("127.0.0.1", 0), self.serve)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def serve(self, sock: Any, _address: Any) -> None:
        self.accepted += 1
        with sock:
            while (request := read_request(sock)) is not None:
                self.requests.append(request)
                if not self.replies.popleft()(sock):
                    return

    def stop(self) -> None:
        self.server.stop(timeout=1)


def read_request(sock: Any) -> bytes | None:
    """One whole request (head and Content-Length body), or None at the end of the stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := sock.recv(65_536)):
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(headers_of(head).get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65_536)
    return data


def headers_of(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


class Client:
    """A LeanSession reporting to a Locust Environment, and the request events it fired."""

    def __init__(self, server: Server) -> None:
        self.fired: list[dict[str, Any]] = []
        environment = Environment()
        environment.events.request.add_listener(lambda **meta: self.fired.append(meta))
        self.session = LeanSession(server.url, environment.events.request)

    def last(self) -> dict[str, Any]:
        assert self.fired, "no request event fired"
        return self.fired[-1]


CHECKS: list[Callable[[], None]] = []


Check = Callable[[Server, Client], None]


def check(*replies: Reply) -> Callable[[Check], Check]:
    """Registers a check run against a fresh server that has exactly `replies` to give."""

    def register(body: Check) -> Check:
        def run() -> None:
            server = Server(*replies)
            client = Client(server)
            try:
                with gevent.Timeout(CHECK_TIMEOUT_S, AssertionError("the client hung")):
                    body(server, client)
                assert not server.replies, f"{len(server.replies)} replies never asked for"
            finally:
                client.session.close()
                server.stop()

        run.__name__ = body.__name__
        CHECKS.append(run)
        return body

    return register


@check(
    answer(
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"ngth: 26\r\n\r",
        b"\nabcdefgh",
        b"ijklmnop",
        b"qrstuvwxyz",
    ),
    answer(b"HTTP/1.1 201 Created\r\nCONTENT-LENGTH: 3\r\nX-A: b\r\n\r\n", b"one"),
    ok(b"two"),
)
def content_length_body_in_segments_on_one_connection(server: Server, client: Client) -> None:
    first = client.session.get("/a")
    assert (first.status_code, first.content) == (200, b"abcdefghijklmnopqrstuvwxyz"), first.content
    second = client.session.get("/b")
    assert (second.status_code, second.content) == (201, b"one"), second.content
    assert client.session.get("/c").content == b"two"
    assert server.accepted == 1, f"{server.accepted} connections for 3 keep-alive requests"


@check(
    answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r",
        b"\nhel",
        b"lo\r\n1;ext=x\r\n,\r\n",
        b"C\r\n world",
        b", and",
        b" \r\n0\r",
        b"\n\r\n",
    ),
    ok(b"after"),
)
def chunked_body_decoded_and_connection_reused(server: Server, client: Client) -> None:
    resp = client.session.get("/chunked")
    assert resp.content == b"hello, world, and ", resp.content
    assert client.last()["response_length"] == len(b"hello, world, and ")
    # Reads exactly to the terminating blank line, or this answer comes out wrong.
    assert client.session.get("/next").content == b"after"
    assert server.accepted == 1, f"{server.accepted} connections after a chunked answer"


@check(
    answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast", keep_open=False
    ),
    ok(b"fresh"),
)
def connection_close_is_not_reused(server: Server, client: Client) -> None:
    assert client.session.get("/a").content == b"last"
    resp = client.session.get("/b")
    assert client.last()["exception"] is None, client.last()["exception"]
    assert resp.content == b"fresh", resp.content
    assert server.accepted == 2, f"{server.accepted} connections: the closed one was reused"


@check(
    answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the", b" end", keep_open=False),
    ok(b"fresh"),
)
def body_without_length_runs_to_end_of_connection(server: Server, client: Client) -> None:
    assert client.session.get("/a").content == b"to the end"
    assert client.last()["exception"] is None, client.last()["exception"]
    assert client.session.get("/b").content == b"fresh"
    assert server.accepted == 2, server.accepted


@check(ok(b"{}", "202 Accepted"), ok(b"[]"))
def request_bytes_on_the_wire(server: Server, client: Client) -> None:
    data = b'{"side":"BUY","qty":3}'
    client.session.post(
        "/v1/orders", data=data, headers={"Authorization": "Bearer t", "Content-Type": "json"}
    )
    client.session.get("/v1/balances?x=1")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /v1/orders HTTP/1.1", head
    headers = headers_of(head)
    assert headers["host"] == server.url.removeprefix("http://"), headers
    assert headers["authorization"] == "Bearer t", headers
    assert headers["content-type"] == "json", headers
    assert headers["content-length"] == str(len(data)), headers
    assert body == data, body
    head, _, body = server.requests[1].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"GET /v1/balances?x=1 HTTP/1.1", head
    assert "content-length" not in headers_of(head) and body == b"", server.requests[1]


@check(ok(b'{"order_id":1}', "202 Accepted"), ok(b"[1,2]"))
def request_event_as_locust_reports_it(server: Server, client: Client) -> None:
    client.session.post("/v1/orders", data=b"{}", name="POST /v1/orders [limit]")
    meta = client.last()
    assert meta["request_type"] == "POST", meta
    assert meta["name"] == "POST /v1/orders [limit]", meta
    assert meta["response_time"] > 0, meta
    assert meta["response_length"] == len(b'{"order_id":1}'), meta
    assert meta["exception"] is None, meta
    assert meta["url"] == server.url + "/v1/orders", meta
    client.session.get("/v1/trades/BTC-USD")
    assert client.last()["name"] == "/v1/trades/BTC-USD", "the name defaults to the path"
    assert len(client.fired) == 2, client.fired


@check(ok(b"gone", "404 Not Found"), ok(b"oops", "500 Internal Server Error"), ok(b"fine"))
def without_catch_response_the_status_decides(server: Server, client: Client) -> None:
    client.session.get("/missing")
    assert isinstance(client.last()["exception"], HttpError), client.last()
    client.session.delete("/v1/orders/1")
    assert isinstance(client.last()["exception"], HttpError), client.last()
    client.session.get("/fine")
    assert client.last()["exception"] is None, client.last()


@check(
    ok(b'{"error":"ORDER_NOT_OPEN"}', "409 Conflict"),
    ok(b"{}", "202 Accepted"),
    ok(b"{}", "202 Accepted"),
    ok(b"{}", "400 Bad Request"),
    ok(b"{}"),
)
def with_catch_response_the_scenario_decides(server: Server, client: Client) -> None:
    with client.session.delete("/v1/orders/1", name="DELETE", catch_response=True) as resp:
        assert not client.fired, "fired before the with-block ended"
        resp.request_meta["name"] += " [409 ORDER_NOT_OPEN]"
        resp.success()
    assert client.last()["exception"] is None, client.last()
    assert client.last()["name"] == "DELETE [409 ORDER_NOT_OPEN]", client.last()
    with client.session.patch("/v1/orders/1", data=b"{}", catch_response=True) as resp:
        resp.failure("202 but no order_id")
    assert "202 but no order_id" in str(client.last()["exception"]), client.last()
    with client.session.post("/v1/orders", data=b"{}", catch_response=True):
        pass
    assert client.last()["exception"] is None, "a 2xx left alone is a success"
    with client.session.post("/v1/orders", data=b"{}", catch_response=True):
        pass
    assert client.last()["exception"] is not None, "a 4xx left alone is a failure"
    assert len(client.fired) == 4, client.fired
    resp = client.session.get("/x", catch_response=True)
    try:
        resp.success()
    except LocustError:
        pass
    else:
        raise AssertionError("success() outside a with-block did not raise LocustError")


@check(ok(b"first"), hang_up, ok(b"again"))
def a_kept_alive_connection_the_server_closed_is_sent_again(server: Server, client: Client) -> None:
    assert client.session.get("/a").content == b"first"
    # The server drops the kept-alive connection without a byte of answer: as requests and
    # browsers do, the client sends once more on a new connection.
    assert client.session.get("/b").content == b"again"
    assert client.last()["exception"] is None, client.last()
    assert len(client.fired) == 2, client.fired
    assert server.accepted == 2, server.accepted


@check(hang_up, ok(b"after"), ok(b"first"), answer(b"HTTP/1.1 200 OK\r\nContent-Le"))
def a_server_hanging_up_otherwise_is_a_failed_request(server: Server, client: Client) -> None:
    resp = client.session.get("/a")  # on a new connection: not sent again
    assert isinstance(client.last()["exception"], OSError), client.last()
    assert resp.content == b"", resp.content
    assert client.session.get("/b").content == b"after"
    assert client.session.get("/c").content == b"first"
    # Part of an answer, then the connection ends: the request may have been acted on.
    server.replies[0] = answer(b"HTTP/1.1 200 OK\r\nContent-Le", keep_open=False)
    client.session.get("/d")
    assert isinstance(client.last()["exception"], OSError), client.last()
    assert server.accepted == 2, server.accepted


@check(answer(b"HTTP/1.1 204 No Content\r\n\r\n"), ok(b"next"))
def a_204_has_no_body_and_keeps_the_connection(server: Server, client: Client) -> None:
    resp = client.session.get("/a")
    assert (resp.status_code, resp.content) == (204, b""), (resp.status_code, resp.content)
    assert client.session.get("/b").content == b"next"
    assert server.accepted == 1, server.accepted


@check(answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), ok(b"sane"))
def garbage_answer_is_a_protocol_error(server: Server, client: Client) -> None:
    client.session.get("/a")
    assert isinstance(client.last()["exception"], ProtocolError), client.last()
    assert client.session.get("/b").content == b"sane"
    assert server.accepted == 2, "the connection that answered garbage was reused"


@check()
def nobody_listening_is_a_failed_request(server: Server, client: Client) -> None:
    server.stop()  # its port now refuses connections
    client.session.get("/a")
    assert isinstance(client.last()["exception"], OSError), client.last()


@check()
def https_is_refused(server: Server, client: Client) -> None:
    try:
        LeanSession("https://127.0.0.1:8443", Environment().events.request)
    except LocustError:
        return
    raise AssertionError("LeanSession accepted an https:// base URL")


def main() -> int:
    failed = []
    for run in CHECKS:
        try:
            run()
        except Exception:
            failed.append(run.__name__)
            print(f"FAIL {run.__name__}\n{traceback.format_exc()}")
        else:
            print(f"ok   {run.__name__}")
    if failed:
        print(f"{len(failed)} of {len(CHECKS)} checks failed: {', '.join(failed)}")
        return 1
    print(f"all {len(CHECKS)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
