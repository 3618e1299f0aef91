"""`spot replay`: commands (JSON lines) through the matching core alone, events out.

The same input always gives byte-identical output: no clock, no randomness, and
events encoded with a fixed field order.
"""

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from schema.messages import Command, Event
from schema.symbols import SymbolSpec, default_spec
from workers.engine import MatchingEngine


class ReplayError(Exception):
    pass


_command_decoder = msgspec.json.Decoder(Command)
_event_encoder = msgspec.json.Encoder()


def load_specs(path: Path) -> list[SymbolSpec]:
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[SymbolSpec])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        raise ReplayError(f"{path}: bad symbol specs: {e}") from None


def replay(lines: Iterable[bytes], engine: MatchingEngine, where: str) -> Iterator[Event]:
    """Events of every command, in order; a bad line raises ReplayError naming it."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            command = _command_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ReplayError(f"{where}:{number}: {e}") from None
        yield from engine.apply(command)


def run(path: str, symbols: str | None, out: BinaryIO) -> int:
    try:
        if symbols is None:
            engine = MatchingEngine(default=default_spec)
        else:
            engine = MatchingEngine(load_specs(Path(symbols)))
        with open(path, "rb") as lines:
            for event in replay(lines, engine, path):
                out.write(_event_encoder.encode(event))
                out.write(b"\n")
    except (ReplayError, OSError) as e:
        print(f"spot replay: {e}", file=sys.stderr)
        return 1
    return 0
