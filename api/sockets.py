"""A WebSocket client of the API as the fan-out (api/market_data.py) sees it: its bounded
queue, its limits, and what a second protocol over the same connections (Binance's streams,
api/binance/) is asked to do."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

import msgspec

from api.auth import Principal
from api.rsgi import Scope
from schema.codes import SocketError
from schema.messages import Event
from schema.streams import LedgerEntry
from schema.wire import Balance, Candle, DepthCache

QUEUE_SIZE = 1_000  # messages a connection may fall behind before it is closed
MAX_MESSAGE_BYTES = 4_096  # of a client's message

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SocketLimits:
    """Per API process; schema/settings.py's SPOT_WS_* say what each is for."""

    per_user: int = 10
    per_address: int = 50
    total: int = 10_000
    channels: int = 100
    idle_s: float = 30.0


class Connection:
    """One client: what it listens to and what is waiting to be sent to it."""

    __slots__ = ("queue", "channels", "principal", "closing", "timer", "combined")

    def __init__(self, combined: bool | None = None) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        self.channels: set[str] = set()  # /v1 channels, or Binance stream names
        self.principal: Principal | None = None
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None  # the idle timeout or token expiry
        # None: a /v1/ws client; else Binance's, its messages wrapped {"stream", "data"}
        # (`/stream`) or not (`/ws`)
        self.combined = combined

    def push(self, message: str) -> None:
        """Queue a message; a connection that fell QUEUE_SIZE behind gets an error and is
        closed, so one slow client never holds up the rest."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close_with(wire_error(SocketError.SLOW_CONSUMER, f"more than {QUEUE_SIZE} behind"))

    def close_with(self, message: str) -> None:
        """Drop what waits, send `message` and close (None tells the writer to)."""
        if self.closing:
            return
        self.closing = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(message)
        self.queue.put_nowait(None)


class Streams(Protocol):
    """Another protocol over these connections (api/binance/streams.py): it is handed every
    event the fan-out reads, every depth cache read back, every candle, and the messages of
    its own clients."""

    def listening(self) -> bool: ...

    def publish(self, event: Event) -> None: ...

    def depth_symbols(self) -> list[str]:
        """The symbols whose depth cache it wants read back now."""
        ...

    def on_depth(self, symbol: str, depth: DepthCache) -> None: ...

    def on_candle(self, symbol: str, interval: str, candle: Candle, closed: bool) -> None: ...

    def balance_users(self) -> Collection[str]:
        """The users whose balance changes it wants (`on_balances`)."""
        ...

    def on_balances(
        self, amounts: dict[str, list[Balance]], transfers: list[LedgerEntry], time_ms: int
    ) -> None:
        """One read's moved balances (absolute, by user), and the deposits and withdrawals
        of the users it watches among the read's entries."""
        ...

    async def open(self, conn: Connection, scope: Scope) -> None:
        """A new client: the streams its URL names."""
        ...

    async def handle(self, conn: Connection, data: bytes | str) -> None: ...

    def forget(self, conn: Connection) -> None: ...

    async def close(self) -> None: ...


def wire_error(code: str, message: str, channel: str | None = None) -> str:
    """/v1/ws's error message."""
    body: dict[str, str] = {"type": "error", "error": code, "message": message}
    if channel is not None:
        body["channel"] = channel
    return _encode(body).decode()


def count_down(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
