"""The entries of Spot's Redis Streams: one struct each, one encode and one decode.

The writers are Lua scripts (store/lua/) and a few Python callers; the readers are the
worker, the batcher, the market-data fan-out, the migration orchestrator, benchmarks and
the load test. Field names are short because they are stored once per entry; they live
here and nowhere else (the scripts' contract tests check the scripts write these).

- `orders:{shard}` and `pending:{symbol}`: a `CommandEntry` per order command, or a
  `ControlEntry` (a hot-shard migration's DRAIN or ADOPT marker) ordered among them.
- `events:{shard}`: an `EventsEntry` per settled worker batch.
- `ledger`: a `LedgerEntry` per deposit or withdrawal.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from schema.messages import Command, Event, Side

Fields = dict[bytes, bytes]

_commands: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)
_events = msgspec.msgpack.Decoder(list[Event])
_balances = msgspec.msgpack.Decoder(list[tuple[str, str, int, int]])
_SIDES = {b"BUY": Side.BUY, b"SELL": Side.SELL, b"": None}


class CommandEntry(msgspec.Struct, frozen=True, gc=False):
    """One command as the router queued it. `hold` is what it locked, in the asset `side`
    pays with (None for a cancel); `epoch` the route's epoch when it was queued."""

    epoch: int
    command: bytes  # msgpack of a schema.messages Command
    hold: int
    side: Side | None

    # field names in the stream, in the order the scripts write them
    EPOCH = b"e"
    COMMAND = b"c"
    HOLD = b"h"
    SIDE = b"s"

    @classmethod
    def from_fields(cls, fields: Fields) -> CommandEntry:
        return cls(
            int(fields.get(cls.EPOCH, b"0")),
            fields[cls.COMMAND],
            int(fields[cls.HOLD]),
            _SIDES[fields[cls.SIDE]],
        )

    def decode_command(self) -> Command:
        return decode_command(self.command)

    def to_fields(self) -> dict[bytes, bytes | int | str]:
        """As XADD takes them (the scripts write the same fields)."""
        side = b"" if self.side is None else self.side.value
        return {self.EPOCH: self.epoch, self.COMMAND: self.command, self.HOLD: self.hold,
                self.SIDE: side}  # fmt: skip


def decode_command(payload: bytes) -> Command:
    return _commands.decode(payload)


class Control(StrEnum):
    DRAIN = "DRAIN"  # the source worker hands the symbol's book over and drops it
    ADOPT = "ADOPT"  # the target worker takes the handed-over book


class ControlEntry(msgspec.Struct, frozen=True, gc=False):
    """A hot-shard migration's marker in a shard's stream (control/migration.py)."""

    control: Control
    symbol: str
    migration: str
    epoch: int

    CONTROL = b"ctl"

    @classmethod
    def from_fields(cls, fields: Fields) -> ControlEntry:
        return cls(
            Control(fields[cls.CONTROL].decode()),
            fields[b"symbol"].decode(),
            fields[b"migration"].decode(),
            int(fields[b"epoch"]),
        )

    def to_fields(self) -> list[str | int]:
        """Field, value, field, value... as XADD takes them."""
        return ["ctl", self.control.value, "symbol", self.symbol, "migration", self.migration,
                "epoch", self.epoch]  # fmt: skip


def is_control(fields: Fields) -> bool:
    return ControlEntry.CONTROL in fields


class EventsEntry(msgspec.Struct, frozen=True, gc=False):
    """One settled worker batch. `orders_id` is the last orders-stream id it settled,
    `first_id` its first (how old the batch's oldest order is, for the batcher's window);
    `events` and `balances` stay encoded until a reader needs them."""

    orders_id: bytes
    first_id: bytes
    events: bytes  # msgpack list of schema.messages Event; b"" in no entry (not written)
    balances: bytes  # msgpack [[user, asset, available delta, locked delta], ...]

    # field names in the stream
    ORDERS_ID = b"id"
    FIRST = b"first"
    EVENTS = b"events"
    BALANCES = b"balances"

    @classmethod
    def from_fields(cls, fields: Fields) -> EventsEntry:
        return cls(
            fields[cls.ORDERS_ID], fields[cls.FIRST], fields[cls.EVENTS], fields[cls.BALANCES]
        )

    def decode_events(self) -> list[Event]:
        return _events.decode(self.events)

    def decode_balances(self) -> list[tuple[str, str, int, int]]:
        return _balances.decode(self.balances)


def decode_events(payload: bytes) -> list[Event]:
    return _events.decode(payload)


def decode_balances(payload: bytes) -> list[tuple[str, str, int, int]]:
    """An EventsEntry's `balances` without the rest of the entry (the balance fan-out)."""
    return _balances.decode(payload)


class LedgerEntry(msgspec.Struct, frozen=True, gc=False):
    """A deposit (amount > 0) or withdrawal (amount < 0) of available funds."""

    user: str
    asset: str
    amount: int
    reference: str

    @classmethod
    def from_fields(cls, fields: Fields) -> LedgerEntry:
        return cls(
            fields[b"user"].decode(),
            fields[b"asset"].decode(),
            int(fields[b"amount"]),
            fields[b"ref"].decode(),
        )
