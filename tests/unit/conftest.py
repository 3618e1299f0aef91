import pytest

from schema.symbols import SymbolSpec
from tests.unit.reference_book import ReferenceBook
from workers.book import OrderBook

BOOKS = {"heap": OrderBook, "reference": ReferenceBook}


@pytest.fixture(params=sorted(BOOKS))
def make_book(request):
    """Build a book of each kind: every semantic test runs against both."""
    cls = BOOKS[request.param]

    def make(**spec_fields):
        fields = {"symbol": "BTC-USD", "base": "BTC", "quote": "USD", **spec_fields}
        return cls(SymbolSpec(**fields))

    return make
