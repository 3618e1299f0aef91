"""LeanHttpUser: a Locust user whose HTTP client costs a fraction of FastHttpUser's.

FastHttpUser (geventhttpclient) spends 285–380 µs of CPU per order command on this
machine (a header dict and a parser object per request and response, a select() before
each send): at 5,000 orders/s 1.5–1.9 of the 2 cores, before the exchange gets any. This
client costs ~85 µs, a third of it in send() (loopback TCP and waking the API), and does
what Spot's API needs and nothing more:
HTTP/1.1 keep-alive over plain TCP, one request at a time per connection, a body sized by
Content-Length or chunked; no TLS, redirects, cookies or compression.

Its requests reach Locust's statistics the way FastHttpUser's do (the same request event,
the same `catch_response` context manager with `success()` / `failure()`), so the
scenarios, the CSVs and the HTML report do not change with the client.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

from gevent import socket as gsocket  # type: ignore[import-untyped]  # gevent ships no stubs
from locust import User
from locust.exception import LocustError

NETWORK_TIMEOUT_S = 60.0  # as FastHttpUser's network_timeout
RECV_BYTES = 65_536


class HttpError(Exception):
    """A 4xx/5xx the scenario did not take for success."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


class ClosedWhileIdle(ConnectionError):
    """A kept-alive connection the server had closed: nothing of the answer came back."""


class LeanResponse:
    """One answer; a context manager when asked with catch_response=True."""

    __slots__ = ("status_code", "content", "request_meta", "_fire", "_result", "_entered")

    def __init__(self, status_code: int, content: bytes, request_meta: dict[str, Any], fire: Any):
        self.status_code = status_code
        self.content = content
        self.request_meta = request_meta
        self._fire = fire
        self._result: bool | BaseException | None = None
        self._entered = False

    def __enter__(self) -> LeanResponse:
        self._entered = True
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        if kind is not None and self._result is None:
            return False  # the scenario's own bug: let it show
        if self._result is None:
            self._result = self.default_exception() or True
        self.request_meta["exception"] = None if self._result is True else self._result
        self._fire(**self.request_meta)
        return kind is None

    def success(self) -> None:
        self._must_be_entered()
        self._result = True

    def failure(self, exc: str | BaseException) -> None:
        self._must_be_entered()
        self._result = exc if isinstance(exc, BaseException) else HttpError(exc)

    def default_exception(self) -> BaseException | None:
        if self.request_meta["exception"] is not None:
            return self.request_meta["exception"]  # type: ignore[no-any-return]
        if self.status_code >= 400:
            return HttpError(f"{self.status_code} {self.request_meta['name']}")
        return None

    def _must_be_entered(self) -> None:
        if not self._entered:
            raise LocustError("success() and failure() need `with ...(catch_response=True)`")


class Connection:
    """One keep-alive connection; a request and its whole answer at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = gsocket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""  # bytes past the last answer (none, with one request at a time)
        self.reusable = True
        self.answers = 0

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        data = self.pending
        try:
            # send(), not sendall(): gevent's sendall asks the kernel for SO_SNDBUF on every
            # call (4% of this process); a request this small goes out in one send.
            sent = self.sock.send(request)
            if sent < len(request):
                self.sock.sendall(request[sent:])
            while (head_end := data.find(b"\r\n\r\n")) < 0:
                data += self._recv()
        except OSError as error:
            if self.answers and not data:
                raise ClosedWhileIdle from error
            raise
        head = data[:head_end].lower()
        if not head.startswith(b"http/1.1 "):
            raise ProtocolError(f"not an HTTP/1.1 answer: {bytes(head[:40])!r}")
        status = int(head[9:12])
        self.reusable = b"\r\nconnection: close" not in head
        self.answers += 1
        start = head_end + 4
        if status in (204, 304):  # no body, whatever the headers say
            self.pending = data[start:]
            return status, b""
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
            while len(data) < start + length:
                data += self._recv()
            self.pending = data[start + length :]
            return status, data[start : start + length]
        if b"\r\ntransfer-encoding: chunked" in head:
            return status, self._chunked(data[start:])
        # Neither: the body runs to the end of the connection.
        self.reusable = False
        body = data[start:]
        while chunk := self.sock.recv(RECV_BYTES):
            body += chunk
        return status, body

    def _chunked(self, data: bytes) -> bytes:
        body = b""
        while True:
            while (size_end := data.find(b"\r\n")) < 0:
                data += self._recv()
            size = int(data[:size_end].split(b";", 1)[0], 16)
            chunk_end = size_end + 2 + size
            while len(data) < chunk_end + 2:
                data += self._recv()
            body += data[size_end + 2 : chunk_end]
            data = data[chunk_end + 2 :]
            if size == 0:  # no trailers from Spot's API; the blank line was just consumed
                self.pending = data
                return body

    def _recv(self) -> bytes:
        # Wait until readable, then read: gevent's recv() reads first, and right after a
        # request that read fails (EAGAIN raised and caught) before it waits. _wait on the
        # socket's own watcher is gevent's internal API (pinned in requirements.lock).
        self.sock._wait(self.sock._read_event)
        chunk = self.sock.recv(RECV_BYTES)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        return chunk  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


class LeanSession:
    """The requests-like surface the scenarios use: get/post/patch/delete(path, ...)."""

    def __init__(self, base_url: str, request_event: Any) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise LocustError(f"LeanHttpUser speaks plain http only, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.address = (url.hostname, url.port or 80)
        self.host_header = f"Host: {url.netloc}\r\n"
        self.fire = request_event.fire
        self.idle: list[Connection] = []  # concurrent greenlets of one user each take one

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        name: str | None = None,
        catch_response: bool = False,
    ) -> LeanResponse:
        head = f"{method} {path} HTTP/1.1\r\n{self.host_header}"
        for field, value in (headers or {}).items():
            head += f"{field}: {value}\r\n"
        if data is not None:
            head += f"Content-Length: {len(data)}\r\n"
        request = (head + "\r\n").encode() + (data or b"")
        start_time = time.time()
        started = time.perf_counter()
        status, content, exception = 0, b"", None
        connection = None
        try:
            if self.idle:
                connection = self.idle.pop()
                try:
                    status, content = connection.exchange(request)
                except ClosedWhileIdle:
                    # Servers close idle connections; browsers and requests send again
                    # once on a new one. No byte of an answer came, so nothing was lost;
                    # a repeated order would meet its client_order_id.
                    connection.close()
                    connection = Connection(*self.address)
                    status, content = connection.exchange(request)
            else:
                connection = Connection(*self.address)
                status, content = connection.exchange(request)
        except (OSError, ValueError, ProtocolError) as error:
            exception = error
        if connection is not None:
            if exception is None and connection.reusable:
                self.idle.append(connection)
            else:
                connection.close()
        meta = {
            "request_type": method,
            "name": name or path,
            "response_time": (time.perf_counter() - started) * 1000,
            "response_length": len(content),
            "response": None,
            "context": {},
            "exception": exception,
            "start_time": start_time,
            "url": self.base_url + path,
        }
        response = LeanResponse(status, content, meta, self.fire)
        if not catch_response:
            meta["exception"] = response.default_exception()
            self.fire(**meta)
        return response

    def get(self, path: str, **kwargs: Any) -> LeanResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> LeanResponse:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> LeanResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> LeanResponse:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class LeanHttpUser(User):
    """A Locust User with a LeanSession as `client`."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if self.host is None:
            raise LocustError("LeanHttpUser needs a host (--host)")
        self.client = LeanSession(self.host, environment.events.request)

    def on_stop(self) -> None:
        self.client.close()
