"""The worker's stored books (workers/snapshots.py): versioned so that a worker from before
stops refuses them instead of restoring books without their stops, and a worker refuses
a version newer than its own."""

from __future__ import annotations

import msgspec
import pytest

from schema.messages import OrderType, Place, Side
from schema.symbols import SymbolSpec
from workers import snapshots
from workers.book import BookSnapshot, OrderBook
from workers.snapshots import SnapshotVersionError

SPEC = SymbolSpec(symbol="AAPL", base="AAPL", quote="USD", reference_price=100)


def _book_with_a_stop() -> OrderBook:
    book = OrderBook(SPEC)
    book.apply(Place(order_id=1, user_id="u", symbol="AAPL", side=Side.BUY,
                     type=OrderType.STOP_LIMIT, stop_price=110, price=111, quantity=2))  # fmt: skip
    assert book.stops()
    return book


def test_books_and_handoffs_round_trip_with_their_stops():
    book = _book_with_a_stop()
    books = snapshots.decode_books(snapshots.encode_books({"AAPL": book.snapshot()}))
    restored = OrderBook(SPEC)
    restored.restore(books["AAPL"])
    assert restored.stops() == book.stops()
    restored.restore(snapshots.decode_handoff(snapshots.encode_handoff(book.snapshot())))
    assert restored.state_hash() == book.state_hash()


def test_version_one_bare_books_and_handoffs_are_still_read():
    data = _book_with_a_stop().snapshot()
    assert snapshots.decode_books(msgspec.msgpack.encode({"AAPL": data})) == {"AAPL": data}
    assert snapshots.decode_handoff(data) == data


def test_a_worker_from_before_stops_cannot_read_either():
    """What such a worker decodes them with (workers/worker.py before version 2): it fails
    instead of dropping the stops the trailing fields hold."""
    book = _book_with_a_stop()
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(snapshots.encode_books({"AAPL": book.snapshot()}),
                               type=dict[str, bytes])  # fmt: skip
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(snapshots.encode_handoff(book.snapshot()), type=BookSnapshot)


def test_a_newer_version_is_refused_by_name():
    newer = snapshots.VERSION + 1
    with pytest.raises(SnapshotVersionError, match="newer"):
        snapshots.decode_books(msgspec.msgpack.encode((newer, {})))
    with pytest.raises(SnapshotVersionError, match="newer"):
        snapshots.decode_handoff(msgspec.msgpack.encode((newer, b"")))
