"""How a worker stores books: the shard's snapshot (`snapshot:{shard}`, field `books`) and a
migration's handoff (`handoff:{id}`), both versioned.

A book's own bytes (workers/book.py `BookSnapshot`, array-like msgpack) gained untriggered
stops and the book's clock as trailing fields, and msgspec drops trailing fields it does not
know: a worker from before stops would restore such a book without its stops and never say
so. So both carry a version in front, `[VERSION, payload]`, which such a worker cannot read
at all (it wants a map of books, or a book, and finds an array that starts with a number):
it fails at recovery or adoption rather than lose stops. A version newer than this code is
refused the same way, by name.

Version 1 is what came before: the books map (or the book's bytes) bare.
"""

from __future__ import annotations

import msgspec

VERSION = 2  # 2: books with untriggered stops, GTD expiries and the book's clock

_encode = msgspec.msgpack.encode
Books = dict[str, bytes]  # symbol -> the book's bytes (OrderBook.snapshot)
_books: msgspec.msgpack.Decoder[tuple[int, Books] | Books] = msgspec.msgpack.Decoder(
    tuple[int, Books] | Books
)
_handoff = msgspec.msgpack.Decoder(tuple[int, bytes])


class SnapshotVersionError(Exception):
    """A snapshot or handoff of a newer Spot: restoring it might drop what it holds."""


def encode_books(books: dict[str, bytes]) -> bytes:
    return _encode((VERSION, books))


def decode_books(data: bytes) -> dict[str, bytes]:
    decoded = _books.decode(data)
    if isinstance(decoded, dict):  # version 1
        return decoded
    version, books = decoded
    _check(version, "snapshot")
    return books


def encode_handoff(book: bytes) -> bytes:
    return _encode((VERSION, book))


def decode_handoff(data: bytes) -> bytes:
    """The book's bytes; a version-1 handoff is the book's bytes themselves."""
    try:
        version, book = _handoff.decode(data)
    except msgspec.ValidationError:  # version 1: a BookSnapshot, an array led by its symbol
        return data
    _check(version, "handoff")
    return book


def _check(version: int, what: str) -> None:
    if version > VERSION:
        raise SnapshotVersionError(
            f"a {what} of version {version}, newer than this worker's {VERSION}: refusing to "
            "restore it rather than drop what it holds; upgrade this worker"
        )
