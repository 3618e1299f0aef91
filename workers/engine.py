"""Many symbols' books behind one `apply`: what a shard worker and `spot replay` run.

Every command names one symbol, so EXPIRE and CANCEL_ALL are routed like the rest: a
clock tick or a user's cancel-all for several symbols is one command per symbol."""

from collections.abc import Callable, Iterable

from schema.codes import RejectReason
from schema.messages import (
    Action,
    Cancel,
    CancelAll,
    Command,
    Event,
    Expire,
    Place,
    Rejected,
    Replace,
)
from schema.symbols import SymbolSpec
from workers.book import OrderBook


class MatchingEngine:
    def __init__(
        self,
        specs: Iterable[SymbolSpec] = (),
        default: Callable[[str], SymbolSpec] | None = None,
    ) -> None:
        """`default` makes a spec for a symbol not in `specs`; without it they are rejected."""
        self.specs = {spec.symbol: spec for spec in specs}
        self.default = default
        self.books: dict[str, OrderBook] = {}

    def book(self, symbol: str) -> OrderBook | None:
        book = self.books.get(symbol)
        if book is None:
            spec = self.specs.get(symbol)
            if spec is None and self.default is not None:
                spec = self.specs[symbol] = self.default(symbol)
            if spec is not None:
                book = self.books[symbol] = OrderBook(spec)
        return book

    def apply(self, command: Command) -> list[Event]:
        # `is None`, not truth: a book's truth is its length, a Python call (and an empty
        # book is false).
        book = self.books.get(command.symbol)
        if book is None:
            book = self.book(command.symbol)
            if book is None:
                # No book, so no sequence to stamp: seq 0 marks an event outside any book.
                return [
                    Rejected(
                        command.symbol,
                        0,
                        command.order_id,
                        command.user_id,
                        _ACTIONS[type(command)],
                        RejectReason.UNKNOWN_SYMBOL,
                    )
                ]
        return book.apply(command)


_ACTIONS = {
    Place: Action.PLACE,
    Cancel: Action.CANCEL,
    Replace: Action.REPLACE,
    Expire: Action.EXPIRE,
    CancelAll: Action.CANCEL_ALL,
}
