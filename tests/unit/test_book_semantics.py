"""The matching core's contract (issue 2), line by line, against both books.

Every test that takes `make_book` runs twice: on the heap OrderBook and on the naive
ReferenceBook. Expected events are written out in full, without sequence numbers:
`Session.expect` stamps them with the next numbers of its own counter, so every
exchange also proves the book's numbering gap-free. `Session` calls `validate()` after
every command on a book that has one (the reference book has none).

Snapshots and `depth()` exist on the heap book only; their tests build it directly
and use the reference book as the never-stopping oracle.
"""

from __future__ import annotations

import msgspec
import pytest

from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Cancel,
    Canceled,
    Command,
    Done,
    Event,
    OrderType,
    Place,
    Rejected,
    Replace,
    Replaced,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
)
from schema.symbols import SymbolSpec
from tests.unit.reference_book import ReferenceBook
from workers.book import OrderBook, RestingOrder

SYMBOL = "BTC-USD"
BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
MARKET = OrderType.MARKET
CANCEL_RESTING = SelfTrade.CANCEL_RESTING
CANCEL_INCOMING = SelfTrade.CANCEL_INCOMING
CANCEL_BOTH = SelfTrade.CANCEL_BOTH

# Reference 10_000 with a 1% band: limit prices 9_900..10_100 until the first trade.
BAND = {"band_bps": 100, "reference_price": 10_000}
# Every rule of the symbol switched on; the band here is 9_000..11_000.
STRICT = {
    "tick": 5,
    "lot": 10,
    "min_qty": 20,
    "max_qty": 1_000,
    "band_bps": 1_000,
    "reference_price": 10_000,
}


# -- commands ---------------------------------------------------------------------------


def place(side: Side, oid: int, price: int | None, qty: int, user: str = "u1", **kw) -> Place:
    return Place(
        order_id=oid, user_id=user, symbol=SYMBOL, side=side, price=price, quantity=qty, **kw
    )


def buy(oid: int, price: int | None, qty: int, user: str = "u1", **kw) -> Place:
    return place(BUY, oid, price, qty, user, **kw)


def sell(oid: int, price: int | None, qty: int, user: str = "u1", **kw) -> Place:
    return place(SELL, oid, price, qty, user, **kw)


def market(side: Side, oid: int, qty: int, user: str = "u1", **kw) -> Place:
    return place(side, oid, None, qty, user, type=MARKET, **kw)


def cancel(oid: int, user: str = "u1") -> Cancel:
    return Cancel(order_id=oid, user_id=user, symbol=SYMBOL)


def replace(oid: int, user: str = "u1", *, price: int | None = None, qty: int | None = None):
    return Replace(order_id=oid, user_id=user, symbol=SYMBOL, price=price, quantity=qty)


def other(side: Side) -> Side:
    return SELL if side is BUY else BUY


def away(maker_side: Side):
    """Prices around 1_000 for makers on `maker_side`: away(n) is n ticks worse for a taker."""
    step = 1 if maker_side is SELL else -1
    return lambda n: 1_000 + step * n


# -- expected events (seq 0: Session.expect stamps the real numbers) ---------------------

ACTIONS = {Place: Action.PLACE, Cancel: Action.CANCEL, Replace: Action.REPLACE}


def accepted(p: Place) -> Accepted:
    return Accepted(
        SYMBOL,
        0,
        p.order_id,
        p.user_id,
        p.side,
        p.type,
        p.price,
        p.quantity,
        p.time_in_force,
        p.post_only,
        p.client_order_id,
    )


def rejected(cmd: Command, reason: RejectReason) -> Rejected:
    return Rejected(SYMBOL, 0, cmd.order_id, cmd.user_id, ACTIONS[type(cmd)], reason)


def trade(maker: Place, taker: Place, price: int, qty: int) -> Trade:
    return Trade(
        SYMBOL,
        0,
        price,
        qty,
        maker.order_id,
        taker.order_id,
        maker.user_id,
        taker.user_id,
        taker.side,
    )


def done(p: Place) -> Done:
    return Done(SYMBOL, 0, p.order_id, p.user_id, p.side)


def canceled(p: Place, remaining: int, reason: CancelReason, price=...) -> Canceled:
    """`price` defaults to the order's own (None for a MARKET order)."""
    price = p.price if price is ... else price
    return Canceled(SYMBOL, 0, p.order_id, p.user_id, p.side, price, remaining, reason)


def replaced(p: Place, price: int, qty: int, old: tuple[int, int], kept: bool) -> Replaced:
    old_price, old_qty = old
    return Replaced(SYMBOL, 0, p.order_id, p.user_id, p.side, price, qty, old_price, old_qty, kept)


def resting(p: Place, remaining: int | None = None, price: int | None = None) -> RestingOrder:
    return RestingOrder(
        p.order_id,
        p.user_id,
        p.price if price is None else price,
        p.quantity if remaining is None else remaining,
        p.post_only,
        p.self_trade,
    )


# -- driving a book ---------------------------------------------------------------------


class Session:
    def __init__(self, book) -> None:
        self.book = book
        self.seq = 0

    def apply(self, cmd: Command) -> list[Event]:
        events = self.book.apply(cmd)
        validate = getattr(self.book, "validate", None)
        if validate is not None:
            validate()
        return events

    def expect(self, cmd: Command, *expected: Event) -> None:
        want = [msgspec.structs.replace(e, seq=self.seq + i) for i, e in enumerate(expected, 1)]
        assert self.apply(cmd) == want
        self.seq += len(want)

    def rest(self, *orders: Place) -> None:
        for p in orders:
            self.expect(p, accepted(p))

    def side(self, side: Side) -> list[RestingOrder]:
        return self.book.resting(side)

    def state(self) -> tuple[list[RestingOrder], list[RestingOrder]]:
        return self.book.resting(BUY), self.book.resting(SELL)

    def assert_book(self, bids: list[RestingOrder], asks: list[RestingOrder]) -> None:
        assert self.state() == (bids, asks)


@pytest.fixture
def session(make_book) -> Session:
    return Session(make_book())


@pytest.fixture
def banded(make_book) -> Session:
    return Session(make_book(**BAND))


@pytest.fixture
def strict(make_book) -> Session:
    return Session(make_book(**STRICT))


# -- LIMIT GTC --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taker_side", "limit", "crosses"),
    [
        (BUY, 99, False),  # ask 100 > limit
        (BUY, 100, True),  # ask <= limit
        (BUY, 101, True),
        (SELL, 101, False),  # bid 100 < limit
        (SELL, 100, True),  # bid >= limit
        (SELL, 99, True),
    ],
)
def test_limit_trades_only_when_the_opposite_best_reaches_its_limit(
    session, taker_side, limit, crosses
):
    maker = place(other(taker_side), 1, 100, 5, "maker")
    taker = place(taker_side, 2, limit, 5, "taker")
    session.rest(maker)
    if crosses:
        session.expect(
            taker, accepted(taker), trade(maker, taker, 100, 5), done(maker), done(taker)
        )
        session.assert_book([], [])
    else:
        session.expect(taker, accepted(taker))
        assert session.side(maker.side) == [resting(maker)]
        assert session.side(taker.side) == [resting(taker)]


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_best_price_first_oldest_first_at_the_resting_price(session, maker_side):
    px = away(maker_side)
    far = place(maker_side, 1, px(2), 4, "m1")
    mid = place(maker_side, 2, px(1), 3, "m2")
    best_old = place(maker_side, 3, px(0), 1, "m3")
    best_new = place(maker_side, 4, px(0), 2, "m4")
    beyond = place(maker_side, 5, px(3), 9, "m5")
    taker = place(other(maker_side), 6, px(2), 8, "t")  # 1 + 2 + 3, then 2 of `far`
    session.rest(far, mid, best_old, best_new, beyond)
    session.expect(
        taker,
        accepted(taker),
        trade(best_old, taker, px(0), 1),
        done(best_old),
        trade(best_new, taker, px(0), 2),
        done(best_new),
        trade(mid, taker, px(1), 3),
        done(mid),
        trade(far, taker, px(2), 2),
        done(taker),
    )
    assert session.side(maker_side) == [resting(far, remaining=2), resting(beyond)]
    assert session.side(taker.side) == []


@pytest.mark.parametrize("taker_side", [BUY, SELL])
def test_remainder_rests_at_its_own_limit_not_the_trade_price(session, taker_side):
    px = away(other(taker_side))
    maker = place(other(taker_side), 1, px(0), 2, "m")
    taker = place(taker_side, 2, px(5), 5, "t")
    session.rest(maker)
    session.expect(taker, accepted(taker), trade(maker, taker, px(0), 2), done(maker))
    assert session.side(taker_side) == [resting(taker, remaining=3, price=px(5))]
    assert session.side(maker.side) == []


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_partial_fill_of_a_resting_order_keeps_its_place(session, maker_side):
    px = away(maker_side)
    first = place(maker_side, 1, px(0), 10, "m1")
    second = place(maker_side, 2, px(0), 4, "m2")
    session.rest(first, second)
    t1 = place(other(maker_side), 3, px(0), 3, "t")
    session.expect(t1, accepted(t1), trade(first, t1, px(0), 3), done(t1))
    assert session.side(maker_side) == [resting(first, remaining=7), resting(second)]
    t2 = place(other(maker_side), 4, px(0), 9, "t")
    session.expect(
        t2,
        accepted(t2),
        trade(first, t2, px(0), 7),
        done(first),
        trade(second, t2, px(0), 2),
        done(t2),
    )
    assert session.side(maker_side) == [resting(second, remaining=2)]


def test_orders_without_a_cross_rest_on_both_sides_best_first_fifo(session):
    orders = [
        buy(1, 98, 1, "a"),
        sell(2, 103, 1, "b"),
        buy(3, 99, 2, "c"),
        sell(4, 101, 2, "d"),
        buy(5, 99, 3, "e"),
        sell(6, 101, 3, "f"),
    ]
    session.rest(*orders)
    b1, a2, b3, a4, b5, a6 = orders
    session.assert_book(
        [resting(b3), resting(b5), resting(b1)], [resting(a4), resting(a6), resting(a2)]
    )


# -- IOC --------------------------------------------------------------------------------


@pytest.mark.parametrize("taker_side", [BUY, SELL])
def test_ioc_fills_what_it_can_and_cancels_the_remainder(session, taker_side):
    px = away(other(taker_side))
    maker = place(other(taker_side), 1, px(0), 3, "m")
    beyond = place(other(taker_side), 2, px(1), 5, "m")
    ioc = place(taker_side, 3, px(0), 5, "t", time_in_force=IOC)
    session.rest(maker, beyond)
    session.expect(
        ioc,
        accepted(ioc),
        trade(maker, ioc, px(0), 3),
        done(maker),
        canceled(ioc, 2, CancelReason.IOC_REMAINDER),
    )
    assert session.side(maker.side) == [resting(beyond)]
    assert session.side(taker_side) == []


def test_ioc_with_nothing_to_meet_is_canceled_whole(session):
    ioc = buy(1, 100, 5, time_in_force=IOC)
    session.rest(sell(2, 101, 5, "m"))
    session.expect(ioc, accepted(ioc), canceled(ioc, 5, CancelReason.IOC_REMAINDER))
    assert session.side(BUY) == []


def test_ioc_that_fills_completely_is_done(session):
    maker = sell(1, 100, 5, "m")
    ioc = buy(2, 100, 5, "t", time_in_force=IOC)
    session.rest(maker)
    session.expect(ioc, accepted(ioc), trade(maker, ioc, 100, 5), done(maker), done(ioc))
    session.assert_book([], [])


# -- FOK --------------------------------------------------------------------------------


@pytest.mark.parametrize("maker_side", [SELL, BUY])
@pytest.mark.parametrize("qty", [6, 10])  # 2 + 3 within the limit; 4 more lie beyond it
def test_fok_that_cannot_fill_whole_trades_nothing(session, maker_side, qty):
    px = away(maker_side)
    makers = [
        place(maker_side, 1, px(0), 2, "m1"),
        place(maker_side, 2, px(1), 3, "m2"),
        place(maker_side, 3, px(2), 4, "m3"),
    ]
    session.rest(*makers)
    before = session.state()
    fok = place(other(maker_side), 4, px(1), qty, "t", time_in_force=FOK)
    session.expect(fok, accepted(fok), canceled(fok, qty, CancelReason.FOK_UNFILLABLE))
    assert session.state() == before


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_fok_fills_exactly_across_levels(session, maker_side):
    px = away(maker_side)
    m1 = place(maker_side, 1, px(0), 2, "m1")
    m2 = place(maker_side, 2, px(1), 3, "m2")
    m3 = place(maker_side, 3, px(2), 4, "m3")
    session.rest(m1, m2, m3)
    fok = place(other(maker_side), 4, px(1), 5, "t", time_in_force=FOK)
    session.expect(
        fok,
        accepted(fok),
        trade(m1, fok, px(0), 2),
        done(m1),
        trade(m2, fok, px(1), 3),
        done(m2),
        done(fok),
    )
    assert session.side(maker_side) == [resting(m3)]
    assert session.side(fok.side) == []


def test_fok_smaller_than_the_book_fills_and_leaves_the_rest(session):
    m1, m2 = sell(1, 100, 2, "m1"), sell(2, 101, 3, "m2")
    session.rest(m1, m2)
    fok = buy(3, 101, 4, "t", time_in_force=FOK)
    session.expect(
        fok, accepted(fok), trade(m1, fok, 100, 2), done(m1), trade(m2, fok, 101, 2), done(fok)
    )
    session.assert_book([], [resting(m2, remaining=1)])


# -- MARKET -----------------------------------------------------------------------------


@pytest.mark.parametrize("taker_side", [BUY, SELL])
def test_market_without_band_sweeps_the_whole_book(session, taker_side):
    maker_side = other(taker_side)
    step = 1 if maker_side is SELL else -1
    makers = [
        place(maker_side, 1, 5_000, 1, "m1"),
        place(maker_side, 2, 5_000 + step * 4_000, 2, "m2"),
        place(maker_side, 3, 5_000 + step * 1_000, 3, "m3"),
    ]
    m1, m2, m3 = makers
    session.rest(*makers)
    order = market(taker_side, 4, 7, "t")
    session.expect(
        order,
        accepted(order),
        trade(m1, order, m1.price, 1),
        done(m1),
        trade(m3, order, m3.price, 3),
        done(m3),
        trade(m2, order, m2.price, 2),
        done(m2),
        canceled(order, 1, CancelReason.MARKET_REMAINDER, price=None),
    )
    session.assert_book([], [])


def test_market_that_fills_completely_is_done(session):
    m1, m2 = sell(1, 100, 2, "m1"), sell(2, 900, 2, "m2")
    session.rest(m1, m2)
    order = market(BUY, 3, 3, "t")
    session.expect(
        order,
        accepted(order),
        trade(m1, order, 100, 2),
        done(m1),
        trade(m2, order, 900, 1),
        done(order),
    )
    session.assert_book([], [resting(m2, remaining=1)])


@pytest.mark.parametrize("taker_side", [BUY, SELL])
@pytest.mark.parametrize("tif", [GTC, IOC])
def test_market_with_no_liquidity_is_canceled_whole(make_book, taker_side, tif):
    s = Session(make_book(**BAND))
    order = market(taker_side, 1, 5, time_in_force=tif)
    s.expect(order, accepted(order), canceled(order, 5, CancelReason.MARKET_REMAINDER))
    s.assert_book([], [])


def test_market_buy_stops_at_the_band_around_the_last_trade(banded):
    s = banded
    # A trade at 10_100 moves the band to 9_999..10_201, so an ask at 10_200 may rest.
    first_maker, first_taker = sell(1, 10_100, 1, "s"), buy(2, 10_100, 1, "b")
    s.rest(first_maker)
    s.expect(first_taker, *_cross(first_maker, first_taker))
    high, low = sell(3, 10_200, 2, "s"), sell(4, 10_000, 2, "s")
    s.rest(high, low)
    # A trade at 10_000 moves the band back to 9_900..10_100: the ask at 10_200 is beyond it.
    taker = buy(5, 10_000, 1, "b")
    s.expect(taker, accepted(taker), trade(low, taker, 10_000, 1), done(taker))
    order = market(BUY, 6, 5, "b")
    s.expect(
        order,
        accepted(order),
        trade(low, order, 10_000, 1),
        done(low),
        canceled(order, 4, CancelReason.MARKET_REMAINDER),
    )
    s.assert_book([], [resting(high)])


def test_market_sell_stops_at_the_band_around_the_last_trade(banded):
    s = banded
    # A trade at 9_900 moves the band to 9_801..9_999, so a bid at 9_801 may rest.
    first_maker, first_taker = buy(1, 9_900, 1, "b"), sell(2, 9_900, 1, "s")
    s.rest(first_maker)
    s.expect(first_taker, *_cross(first_maker, first_taker))
    deep, top = buy(3, 9_801, 2, "b"), buy(4, 9_999, 2, "b")
    s.rest(deep, top)
    # A trade at 9_999 moves the band to 9_900..10_098: the bid at 9_801 is beyond it.
    taker = sell(5, 9_999, 1, "s")
    s.expect(taker, accepted(taker), trade(top, taker, 9_999, 1), done(taker))
    order = market(SELL, 6, 5, "s")
    s.expect(
        order,
        accepted(order),
        trade(top, order, 9_999, 1),
        done(top),
        canceled(order, 4, CancelReason.MARKET_REMAINDER),
    )
    s.assert_book([resting(deep)], [])


def test_market_band_edge_is_inclusive_before_the_first_trade(banded):
    edge, inner = sell(1, 10_100, 1, "s"), sell(2, 10_050, 1, "s")
    banded.rest(edge, inner)
    order = market(BUY, 3, 2, "b")
    banded.expect(
        order,
        accepted(order),
        trade(inner, order, 10_050, 1),
        done(inner),
        trade(edge, order, 10_100, 1),
        done(edge),
        done(order),
    )


def _cross(maker: Place, taker: Place) -> list[Event]:
    """Events of a taker that exactly fills one resting maker."""
    return [
        accepted(taker),
        trade(maker, taker, maker.price, maker.quantity),
        done(maker),
        done(taker),
    ]


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (buy(1, 100, 5, type=MARKET), RejectReason.PRICE_NOT_ALLOWED),
        (sell(1, 100, 5, type=MARKET, time_in_force=IOC), RejectReason.PRICE_NOT_ALLOWED),
        (buy(1, None, 5), RejectReason.PRICE_REQUIRED),
        (sell(1, None, 5, time_in_force=FOK), RejectReason.PRICE_REQUIRED),
    ],
)
def test_price_required_for_limit_and_refused_for_market(session, cmd, reason):
    maker = place(other(cmd.side), 2, 100, 5, "m")
    session.rest(maker)
    session.expect(cmd, rejected(cmd, reason))
    assert session.side(maker.side) == [resting(maker)]
    assert session.side(cmd.side) == []


# -- reference price and band for LIMIT orders -------------------------------------------


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(
    ("price", "ok"), [(9_899, False), (9_900, True), (10_100, True), (10_101, False)]
)
def test_limit_band_is_around_the_spec_reference_before_the_first_trade(banded, side, price, ok):
    order = place(side, 1, price, 1)
    if ok:
        banded.rest(order)
        assert banded.side(side) == [resting(order)]
    else:
        banded.expect(order, rejected(order, RejectReason.PRICE_OUT_OF_BAND))
        assert banded.side(side) == []


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(
    ("price", "ok"),
    # the last trade at 10_100 gives a width of 101: 9_999..10_201
    [(9_900, False), (9_998, False), (9_999, True), (10_201, True), (10_202, False)],
)
def test_limit_band_follows_the_last_trade_price(banded, side, price, ok):
    maker, taker = sell(1, 10_100, 1, "s"), buy(2, 10_100, 1, "b")
    banded.rest(maker)
    banded.expect(taker, *_cross(maker, taker))
    order = place(side, 3, price, 1)
    if ok:
        banded.rest(order)
    else:
        banded.expect(order, rejected(order, RejectReason.PRICE_OUT_OF_BAND))


@pytest.mark.parametrize("mode", [CANCEL_INCOMING, CANCEL_BOTH])
def test_limit_band_follows_a_trade_made_before_self_trade_prevention_stopped(banded, mode):
    s = banded
    theirs, own = sell(1, 10_100, 1, "u2"), sell(2, 10_100, 1, "u1")
    s.rest(theirs, own)
    taker = buy(3, 10_100, 2, "u1", self_trade=mode)
    own_canceled = [canceled(own, 1, CancelReason.SELF_TRADE)] if mode is CANCEL_BOTH else []
    s.expect(
        taker,
        accepted(taker),
        trade(theirs, taker, 10_100, 1),
        done(theirs),
        *own_canceled,
        canceled(taker, 1, CancelReason.SELF_TRADE),
    )
    # The trade at 10_100 moved the band to 9_999..10_201.
    inside, outside = sell(4, 10_201, 1, "u3"), sell(5, 9_950, 1, "u3")
    s.rest(inside)
    s.expect(outside, rejected(outside, RejectReason.PRICE_OUT_OF_BAND))


def test_market_band_follows_a_trade_made_by_a_replace_stopped_by_self_trade(banded):
    s = banded
    mine = buy(1, 10_000, 2, "u1", self_trade=CANCEL_INCOMING)
    theirs, own = sell(2, 10_100, 1, "u2"), sell(3, 10_100, 1, "u1")
    s.rest(mine, theirs, own)
    s.expect(
        replace(1, price=10_100),
        replaced(mine, 10_100, 2, (10_000, 2), False),
        trade(theirs, mine, 10_100, 1),
        done(theirs),
        canceled(mine, 1, CancelReason.SELF_TRADE, price=10_100),
    )
    # Band now 9_999..10_201: an ask at 10_200 may rest, and a market buy reaches it.
    high = sell(4, 10_200, 1, "u4")
    s.rest(high)
    order = market(BUY, 5, 3, "u5")
    s.expect(
        order,
        accepted(order),
        trade(own, order, 10_100, 1),
        done(own),
        trade(high, order, 10_200, 1),
        done(high),
        canceled(order, 1, CancelReason.MARKET_REMAINDER),
    )


def test_limit_band_follows_each_trade_not_the_first(banded):
    s = banded
    for oid, price in ((1, 10_100), (3, 10_201)):  # 10_201 is in band only after 10_100
        maker, taker = sell(oid, price, 1, "s"), buy(oid + 1, price, 1, "b")
        s.rest(maker)
        s.expect(taker, *_cross(maker, taker))
    # last 10_201, width 102: 10_099..10_303
    low, high = buy(5, 10_098, 1), buy(6, 10_303, 1)
    s.expect(low, rejected(low, RejectReason.PRICE_OUT_OF_BAND))
    s.rest(high)


# -- post_only --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "makers"),
    [
        (buy(9, 100, 1, post_only=True), [sell(1, 100, 5, "m")]),  # at the best ask
        (buy(9, 105, 1, post_only=True), [sell(1, 100, 5, "m"), sell(2, 103, 5, "m")]),
        (sell(9, 100, 1, post_only=True), [buy(1, 100, 5, "m")]),  # at the best bid
        (sell(9, 95, 1, post_only=True), [buy(1, 100, 5, "m"), buy(2, 97, 5, "m")]),
    ],
)
def test_post_only_that_would_trade_is_rejected_and_nothing_trades(session, cmd, makers):
    session.rest(*makers)
    before = session.state()
    session.expect(cmd, rejected(cmd, RejectReason.POST_ONLY_WOULD_TRADE))
    assert session.state() == before


@pytest.mark.parametrize("side", [BUY, SELL])
def test_post_only_that_does_not_cross_rests(session, side):
    px = away(other(side))
    maker = place(other(side), 1, px(0), 5, "m")
    order = place(side, 2, px(-1), 3, post_only=True)  # one tick short of the best
    session.rest(maker, order)
    assert session.side(side) == [resting(order)]
    assert session.side(side)[0].post_only is True


@pytest.mark.parametrize(
    "cmd",
    [
        buy(1, 100, 5, post_only=True, time_in_force=IOC),
        sell(1, 100, 5, post_only=True, time_in_force=FOK),
        market(BUY, 1, 5, post_only=True),
        market(SELL, 1, 5, post_only=True, time_in_force=IOC),
    ],
    ids=["ioc", "fok", "market", "market-ioc"],
)
def test_post_only_is_for_gtc_limits_only(session, cmd):
    session.expect(cmd, rejected(cmd, RejectReason.POST_ONLY_NOT_GTC_LIMIT))
    session.assert_book([], [])


# -- symbol rules -----------------------------------------------------------------------

REJECTS = [
    # (price, quantity, reason) under STRICT: tick 5, lot 10, qty 20..1_000, band 9_000..11_000
    (10_003, 100, RejectReason.PRICE_OFF_TICK),
    (10_000, 25, RejectReason.QUANTITY_OFF_LOT),
    (10_000, 10, RejectReason.QUANTITY_BELOW_MIN),
    (10_000, 0, RejectReason.QUANTITY_BELOW_MIN),
    (10_000, -10, RejectReason.QUANTITY_BELOW_MIN),
    (10_000, 1_010, RejectReason.QUANTITY_ABOVE_MAX),
    (0, 100, RejectReason.PRICE_NOT_POSITIVE),
    (-5, 100, RejectReason.PRICE_NOT_POSITIVE),
    (8_995, 100, RejectReason.PRICE_OUT_OF_BAND),
    (11_005, 100, RejectReason.PRICE_OUT_OF_BAND),
]


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(("price", "qty", "reason"), REJECTS)
def test_symbol_rules_reject_limit_orders(strict, side, price, qty, reason):
    maker = place(other(side), 1, 10_000, 100, "m")  # it would trade if accepted
    strict.rest(maker)
    order = place(side, 2, price, qty)
    strict.expect(order, rejected(order, reason))
    assert strict.side(maker.side) == [resting(maker)]
    assert strict.side(side) == []


@pytest.mark.parametrize(
    ("qty", "reason"),
    [
        (25, RejectReason.QUANTITY_OFF_LOT),
        (10, RejectReason.QUANTITY_BELOW_MIN),
        (1_010, RejectReason.QUANTITY_ABOVE_MAX),
    ],
)
def test_symbol_rules_reject_market_quantities(strict, qty, reason):
    maker = sell(1, 10_000, 100, "m")
    strict.rest(maker)
    order = market(BUY, 2, qty)
    strict.expect(order, rejected(order, reason))
    strict.assert_book([], [resting(maker)])


@pytest.mark.parametrize(("price", "qty"), [(9_000, 20), (11_000, 1_000), (10_005, 30)])
def test_orders_on_every_boundary_are_accepted(strict, price, qty):
    order = buy(1, price, qty)
    strict.rest(order)
    strict.assert_book([resting(order)], [])


# -- self-trade prevention -------------------------------------------------------------


def _stp_book(s: Session, maker_side: Side):
    """Makers: another user's 1 at the best price, then own 2 and another's 2 one tick worse."""
    px = away(maker_side)
    first = place(maker_side, 1, px(0), 1, "u2")
    own = place(maker_side, 2, px(1), 2, "u1")
    behind = place(maker_side, 3, px(1), 2, "u3")
    s.rest(first, own, behind)
    return px, first, own, behind


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_stp_default_cancels_the_resting_order_and_goes_on_matching(session, maker_side):
    px, first, own, behind = _stp_book(session, maker_side)
    taker = place(other(maker_side), 4, px(1), 4, "u1")  # no mode given: CANCEL_RESTING
    session.expect(
        taker,
        accepted(taker),
        trade(first, taker, px(0), 1),
        done(first),
        canceled(own, 2, CancelReason.SELF_TRADE),
        trade(behind, taker, px(1), 2),
        done(behind),
    )
    assert session.side(maker_side) == []
    assert session.side(taker.side) == [resting(taker, remaining=1)]


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_stp_cancel_resting_cancels_every_own_order_it_meets(session, maker_side):
    px = away(maker_side)
    own1 = place(maker_side, 1, px(0), 2, "u1")
    own2 = place(maker_side, 2, px(0), 3, "u1")
    theirs = place(maker_side, 3, px(1), 4, "u2")
    session.rest(own1, own2, theirs)
    taker = place(other(maker_side), 4, px(1), 4, "u1", self_trade=CANCEL_RESTING)
    session.expect(
        taker,
        accepted(taker),
        canceled(own1, 2, CancelReason.SELF_TRADE),
        canceled(own2, 3, CancelReason.SELF_TRADE),
        trade(theirs, taker, px(1), 4),
        done(theirs),
        done(taker),
    )
    session.assert_book([], [])


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_stp_cancel_incoming_cancels_the_incoming_and_keeps_the_resting(session, maker_side):
    px, first, own, behind = _stp_book(session, maker_side)
    taker = place(other(maker_side), 4, px(1), 4, "u1", self_trade=CANCEL_INCOMING)
    session.expect(
        taker,
        accepted(taker),
        trade(first, taker, px(0), 1),
        done(first),
        canceled(taker, 3, CancelReason.SELF_TRADE),
    )
    assert session.side(maker_side) == [resting(own), resting(behind)]
    assert session.side(taker.side) == []


@pytest.mark.parametrize("maker_side", [SELL, BUY])
def test_stp_cancel_both_cancels_the_resting_and_the_incoming(session, maker_side):
    px, first, own, behind = _stp_book(session, maker_side)
    taker = place(other(maker_side), 4, px(1), 4, "u1", self_trade=CANCEL_BOTH)
    session.expect(
        taker,
        accepted(taker),
        trade(first, taker, px(0), 1),
        done(first),
        canceled(own, 2, CancelReason.SELF_TRADE),
        canceled(taker, 3, CancelReason.SELF_TRADE),
    )
    assert session.side(maker_side) == [resting(behind)]
    assert session.side(taker.side) == []


@pytest.mark.parametrize("mode", [CANCEL_INCOMING, CANCEL_BOTH])
def test_stp_stops_ioc_and_market_orders_too(session, mode):
    own, theirs = sell(1, 100, 2, "u1"), sell(2, 101, 2, "u2")
    session.rest(own, theirs)
    ioc = buy(3, 101, 3, "u1", time_in_force=IOC, self_trade=mode)
    own_canceled = [canceled(own, 2, CancelReason.SELF_TRADE)] if mode is CANCEL_BOTH else []
    session.expect(ioc, accepted(ioc), *own_canceled, canceled(ioc, 3, CancelReason.SELF_TRADE))
    if mode is CANCEL_INCOMING:
        order = market(BUY, 4, 3, "u1", self_trade=mode)
        session.expect(order, accepted(order), canceled(order, 3, CancelReason.SELF_TRADE))


# -- self-trade prevention and FOK ------------------------------------------------------


@pytest.mark.parametrize("mode", [CANCEL_RESTING, CANCEL_INCOMING, CANCEL_BOTH])
@pytest.mark.parametrize("qty", [3, 4])
def test_fok_with_own_orders_in_front(session, mode, qty):
    """CANCEL_RESTING skips own orders when sizing a FOK; the other modes stop at them."""
    own, theirs = sell(1, 100, 2, "u1"), sell(2, 100, 3, "u2")
    session.rest(own, theirs)
    before = session.state()
    fok = buy(3, 100, qty, "u1", time_in_force=FOK, self_trade=mode)
    if mode is CANCEL_RESTING and qty == 3:
        session.expect(
            fok,
            accepted(fok),
            canceled(own, 2, CancelReason.SELF_TRADE),
            trade(theirs, fok, 100, 3),
            done(theirs),
            done(fok),
        )
        session.assert_book([], [])
    else:
        session.expect(fok, accepted(fok), canceled(fok, qty, CancelReason.FOK_UNFILLABLE))
        assert session.state() == before


@pytest.mark.parametrize("mode", [CANCEL_RESTING, CANCEL_INCOMING, CANCEL_BOTH])
def test_fok_filled_before_reaching_own_orders_leaves_them(session, mode):
    theirs, own = sell(1, 100, 3, "u2"), sell(2, 100, 2, "u1")
    session.rest(theirs, own)
    fok = buy(3, 100, 3, "u1", time_in_force=FOK, self_trade=mode)
    session.expect(fok, accepted(fok), trade(theirs, fok, 100, 3), done(theirs), done(fok))
    session.assert_book([], [resting(own)])


@pytest.mark.parametrize("mode", [CANCEL_INCOMING, CANCEL_BOTH])
def test_fok_blocked_by_own_order_behind_some_liquidity(session, mode):
    theirs, own, more = sell(1, 100, 3, "u2"), sell(2, 100, 2, "u1"), sell(3, 101, 5, "u3")
    session.rest(theirs, own, more)
    before = session.state()
    fok = buy(4, 101, 4, "u1", time_in_force=FOK, self_trade=mode)
    session.expect(fok, accepted(fok), canceled(fok, 4, CancelReason.FOK_UNFILLABLE))
    assert session.state() == before


# -- CANCEL -----------------------------------------------------------------------------


def test_cancel_removes_a_resting_order_with_its_remaining_quantity(session):
    bid, keep = buy(1, 100, 10), buy(2, 100, 4, "u2")
    session.rest(bid, keep)
    taker = sell(3, 100, 3, "u3")
    session.expect(taker, accepted(taker), trade(bid, taker, 100, 3), done(taker))
    session.expect(cancel(1), canceled(bid, 7, CancelReason.USER))
    session.assert_book([resting(keep)], [])


def test_cancel_of_a_sell(session):
    ask = sell(1, 100, 10, "u1")
    session.rest(ask)
    session.expect(cancel(1, "u1"), canceled(ask, 10, CancelReason.USER))
    session.assert_book([], [])


def _filled(s: Session) -> None:
    maker, taker = sell(1, 100, 5, "u1"), buy(2, 100, 5, "u2")
    s.rest(maker)
    s.expect(taker, *_cross(maker, taker))


def _canceled(s: Session) -> None:
    order = sell(1, 100, 5, "u1")
    s.rest(order)
    s.expect(cancel(1), canceled(order, 5, CancelReason.USER))


def _ioc_done(s: Session) -> None:
    ioc = sell(1, 100, 5, "u1", time_in_force=IOC)
    s.expect(ioc, accepted(ioc), canceled(ioc, 5, CancelReason.IOC_REMAINDER))


def _nothing(s: Session) -> None:
    pass


FINISHED = {"unknown": _nothing, "filled": _filled, "canceled": _canceled, "ioc": _ioc_done}


@pytest.mark.parametrize("history", FINISHED)
def test_cancel_of_an_unknown_or_finished_order_is_rejected(session, history):
    FINISHED[history](session)
    before = session.state()
    cmd = cancel(1, "u1")
    session.expect(cmd, rejected(cmd, RejectReason.UNKNOWN_ORDER))
    assert session.state() == before


def test_cancel_of_another_users_order_is_rejected_and_it_stays(session):
    order = buy(1, 100, 5, "u1")
    session.rest(order)
    cmd = cancel(1, "u2")
    session.expect(cmd, rejected(cmd, RejectReason.UNKNOWN_ORDER))
    session.assert_book([resting(order)], [])


# -- REPLACE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "new_qty", "kept"),
    [
        ({"qty": 3}, 3, True),  # a decrease at the same price
        ({"price": 100, "qty": 3}, 3, True),  # the same price named
        ({"qty": 7}, 7, False),  # an increase
        ({"price": 100, "qty": 7}, 7, False),
    ],
)
def test_replace_quantity_keeps_priority_only_when_decreasing(session, change, new_qty, kept):
    mine, theirs = buy(1, 100, 5, "u1"), buy(2, 100, 5, "u2")
    session.rest(mine, theirs)
    session.expect(replace(1, **change), replaced(mine, 100, new_qty, (100, 5), kept))
    mine_now = resting(mine, remaining=new_qty)
    expected = [mine_now, resting(theirs)] if kept else [resting(theirs), mine_now]
    assert session.side(BUY) == expected
    # A later crossing order meets the front of the level first.
    taker = sell(3, 100, 1, "u3")
    first = mine if kept else theirs
    session.expect(taker, accepted(taker), trade(first, taker, 100, 1), done(taker))


@pytest.mark.parametrize("maker_side", [BUY, SELL])
def test_replace_price_loses_priority(session, maker_side):
    px = away(maker_side)
    mine, theirs = place(maker_side, 1, px(1), 5, "u1"), place(maker_side, 2, px(0), 5, "u2")
    session.rest(mine, theirs)
    session.expect(replace(1, price=px(0)), replaced(mine, px(0), 5, (px(1), 5), False))
    assert session.side(maker_side) == [resting(theirs), resting(mine, price=px(0))]
    taker = place(other(maker_side), 3, px(0), 6, "u3")
    session.expect(
        taker,
        accepted(taker),
        trade(theirs, taker, px(0), 5),
        done(theirs),
        trade(mine, taker, px(0), 1),
        done(taker),
    )


def test_replace_price_and_back_goes_to_the_back_of_the_level(session):
    mine, theirs = sell(1, 100, 5, "u1"), sell(2, 100, 5, "u2")
    session.rest(mine, theirs)
    session.expect(replace(1, price=101), replaced(mine, 101, 5, (100, 5), False))
    session.expect(replace(1, price=100, qty=4), replaced(mine, 100, 4, (101, 5), False))
    assert session.side(SELL) == [resting(theirs), resting(mine, remaining=4)]


def test_replace_after_a_partial_fill_reports_the_remaining_as_old_quantity(session):
    mine = buy(1, 100, 10, "u1")
    session.rest(mine)
    taker = sell(2, 100, 4, "u2")
    session.expect(taker, accepted(taker), trade(mine, taker, 100, 4), done(taker))
    session.expect(replace(1, qty=2), replaced(mine, 100, 2, (100, 6), True))
    session.assert_book([resting(mine, remaining=2)], [])


def test_replaced_order_that_crosses_trades_after_the_replaced_event(session):
    mine = buy(1, 99, 5, "u1")
    a, b, c = sell(2, 101, 3, "u2"), sell(3, 102, 1, "u3"), sell(4, 103, 9, "u4")
    session.rest(mine, a, b, c)
    session.expect(
        replace(1, price=102, qty=6),
        replaced(mine, 102, 6, (99, 5), False),
        trade(a, mine, 101, 3),
        done(a),
        trade(b, mine, 102, 1),
        done(b),
    )
    session.assert_book([resting(mine, remaining=2, price=102)], [resting(c)])


def test_replaced_order_that_fills_completely_is_done(session):
    mine, theirs = sell(1, 105, 4, "u1"), buy(2, 100, 9, "u2")
    session.rest(mine, theirs)
    session.expect(
        replace(1, price=100),
        replaced(mine, 100, 4, (105, 4), False),
        trade(theirs, mine, 100, 4),
        done(mine),
    )
    session.assert_book([resting(theirs, remaining=5)], [])


def test_replaced_order_follows_its_self_trade_mode(session):
    mine = buy(1, 99, 2, "u1", self_trade=CANCEL_INCOMING)
    own_ask, their_ask = sell(2, 101, 1, "u1"), sell(3, 101, 1, "u2")
    session.rest(mine, own_ask, their_ask)
    session.expect(
        replace(1, price=101),
        replaced(mine, 101, 2, (99, 2), False),
        canceled(mine, 2, CancelReason.SELF_TRADE, price=101),
    )
    session.assert_book([], [resting(own_ask), resting(their_ask)])


def test_replaced_order_cancels_own_resting_by_default(session):
    mine = buy(1, 99, 2, "u1")
    own_ask, their_ask = sell(2, 101, 1, "u1"), sell(3, 101, 1, "u2")
    session.rest(mine, own_ask, their_ask)
    session.expect(
        replace(1, price=101),
        replaced(mine, 101, 2, (99, 2), False),
        canceled(own_ask, 1, CancelReason.SELF_TRADE),
        trade(their_ask, mine, 101, 1),
        done(their_ask),
    )
    session.assert_book([resting(mine, remaining=1, price=101)], [])


def test_replace_quantity_may_go_below_the_minimum(strict):
    mine = buy(1, 10_000, 100)
    strict.rest(mine)
    strict.expect(replace(1, qty=10), replaced(mine, 10_000, 10, (10_000, 100), True))
    strict.assert_book([resting(mine, remaining=10)], [])


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (replace(1, "u2", price=10_005), RejectReason.UNKNOWN_ORDER),
        (replace(99, "u1", price=10_005), RejectReason.UNKNOWN_ORDER),
        (replace(1), RejectReason.REPLACE_WITHOUT_CHANGE),
        (replace(1, price=10_003), RejectReason.PRICE_OFF_TICK),
        (replace(1, price=11_005), RejectReason.PRICE_OUT_OF_BAND),
        (replace(1, price=8_995, qty=50), RejectReason.PRICE_OUT_OF_BAND),
        (replace(1, price=0), RejectReason.PRICE_NOT_POSITIVE),
        (replace(1, qty=25), RejectReason.QUANTITY_OFF_LOT),
        (replace(1, price=10_005, qty=25), RejectReason.QUANTITY_OFF_LOT),
        (replace(1, qty=0), RejectReason.QUANTITY_BELOW_MIN),
        (replace(1, qty=1_010), RejectReason.QUANTITY_ABOVE_MAX),
    ],
)
def test_replace_rejects_leave_the_order_as_it_was(strict, cmd, reason):
    mine, behind = buy(1, 10_000, 100, "u1"), buy(2, 10_000, 50, "u2")
    strict.rest(mine, behind)
    strict.expect(cmd, rejected(cmd, reason))
    strict.assert_book([resting(mine), resting(behind)], [])


@pytest.mark.parametrize("history", ["filled", "canceled", "ioc"])
def test_replace_of_a_finished_order_is_rejected(session, history):
    FINISHED[history](session)
    cmd = replace(1, "u1", price=100)
    session.expect(cmd, rejected(cmd, RejectReason.UNKNOWN_ORDER))


def test_replace_post_only_into_a_cross_is_rejected_and_it_stays(session):
    mine, ask = buy(1, 99, 5, "u1", post_only=True), sell(2, 101, 5, "u2")
    session.rest(mine, ask)
    cmd = replace(1, price=101)
    session.expect(cmd, rejected(cmd, RejectReason.POST_ONLY_WOULD_TRADE))
    session.assert_book([resting(mine)], [resting(ask)])
    session.expect(replace(1, price=100), replaced(mine, 100, 5, (99, 5), False))
    session.assert_book([resting(mine, price=100)], [resting(ask)])


# -- duplicate order ids ----------------------------------------------------------------


@pytest.mark.parametrize(
    "dup",
    [buy(1, 100, 5, "u1"), sell(1, 100, 5, "u1"), sell(1, 99, 5, "u2"), market(SELL, 1, 5, "u2")],
    ids=["same", "crossing", "other-user", "market"],
)
def test_duplicate_live_order_id_is_rejected(session, dup):
    live = buy(1, 100, 5, "u1")
    session.rest(live)
    session.expect(dup, rejected(dup, RejectReason.DUPLICATE_ORDER_ID))
    session.assert_book([resting(live)], [])


# -- sequence numbers -------------------------------------------------------------------


def test_sequence_numbers_are_gap_free_across_every_event_kind(make_book):
    book = make_book(**BAND)
    s = Session(book)
    script = [
        buy(1, 1, 5),  # rejected: out of band
        sell(2, 10_050, 5, "u2"),
        cancel(7),  # rejected: unknown
        buy(3, 10_050, 2, "u3"),  # trade, done
        replace(2, "u2", qty=1),  # replaced
        replace(2, "u2"),  # rejected: no change
        buy(4, 10_050, 1, "u3", time_in_force=FOK),  # trade, done, done
        market(BUY, 5, 3, "u3"),  # canceled: no liquidity
        sell(6, 10_000, 4, "u4"),
        cancel(6, "u4"),  # canceled
    ]
    events = [e for cmd in script for e in s.apply(cmd)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [type(e) for e in events] == [
        Rejected,
        Accepted,
        Rejected,
        Accepted,
        Trade,
        Done,
        Replaced,
        Rejected,
        Accepted,
        Trade,
        Done,
        Done,
        Accepted,
        Canceled,
        Accepted,
        Canceled,
    ]
    assert {e.symbol for e in events} == {SYMBOL}
    s.seq = len(events)  # Session.apply does not count; expect() goes on from here
    again = buy(1, 10_000, 1)  # the id of a rejected order is free
    s.expect(again, accepted(again))


# -- snapshot, restore, state hash (heap book) -------------------------------------------

SPEC = SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD", **BAND)
SCRIPT: list[Command] = [
    sell(1, 10_050, 5, "a"),
    sell(2, 10_050, 3, "b"),  # behind 1 at the same price
    sell(3, 10_100, 4, "c"),  # at the band's edge
    buy(4, 9_950, 6, "d"),
    buy(5, 9_990, 2, "e", post_only=True),
    buy(6, 10_050, 2, "f"),  # partial fill of 1; last price 10_050
    cancel(2, "b"),  # a dead order left inside a level
    sell(7, 10_050, 2, "g"),
    replace(4, "d", qty=3),  # keeps priority
    buy(8, 10_100, 9, "h"),  # sweeps 1, 7 and 3; last price 10_100: band 9_999..10_201
    buy(9, 10_200, 1, "i"),  # in band only because the last trade moved it
    sell(10, 10_150, 2, "j", self_trade=CANCEL_BOTH),  # trades at 10_200, rests 1
    replace(5, "e", price=10_100),  # loses priority; band now 10_098..10_302
    buy(11, 10_100, 1, "x"),  # behind 5
    sell(12, 10_100, 2, "e"),  # meets its own bid 5 first: cancels it, trades with 11
    cancel(1, "a"),  # already finished
    buy(13, 10_050, 2, "l"),
    market(SELL, 14, 20, "k"),  # trades with 13, stops before 4 at 9_950: out of band
    buy(15, 10_150, 1, "m", time_in_force=FOK),
    replace(4, "d", qty=6),  # an increase: loses priority
    sell(16, 10_120, 1, "n"),
    buy(17, 20_000, 1, "o"),  # out of band
]


@pytest.mark.parametrize("cut", range(len(SCRIPT) + 1))
def test_snapshot_restore_continue_equals_never_stopping(cut):
    straight, reference = OrderBook(SPEC), ReferenceBook(SPEC)
    events = [straight.apply(cmd) for cmd in SCRIPT[:cut]]
    restored = OrderBook(SPEC)
    restored.restore(straight.snapshot())
    restored.validate()
    assert restored.state_hash() == straight.state_hash()
    assert restored.snapshot() == straight.snapshot()
    for side in (BUY, SELL):
        assert restored.resting(side) == straight.resting(side)
    for cmd in SCRIPT[cut:]:
        got = restored.apply(cmd)
        assert got == straight.apply(cmd), cmd
        restored.validate()
        straight.validate()
        assert restored.state_hash() == straight.state_hash()
        events.append(got)
    assert events == [reference.apply(cmd) for cmd in SCRIPT]
    for side in (BUY, SELL):
        assert restored.resting(side) == reference.resting(side)


def test_script_reaches_every_event_kind():
    """Guards the snapshot test: the script must keep exercising everything."""
    book = OrderBook(SPEC)
    kinds = {type(e) for cmd in SCRIPT for e in book.apply(cmd)}
    assert kinds == {Accepted, Rejected, Trade, Canceled, Replaced, Done}
    assert book.resting(BUY) and book.resting(SELL)


def test_state_hash_sees_priority_sequence_and_last_price():
    a, b = OrderBook(SPEC), OrderBook(SPEC)
    for cmd in (buy(1, 10_000, 1, "x"), buy(2, 10_000, 1, "y")):
        a.apply(cmd)
    for cmd in (buy(2, 10_000, 1, "y"), buy(1, 10_000, 1, "x")):
        b.apply(cmd)
    assert a.state_hash() != b.state_hash()  # same orders, other time priority
    c = OrderBook(SPEC)
    c.apply(buy(1, 10_000, 1, "x"))
    before = c.state_hash()
    c.apply(cancel(9, "x"))  # rejected: only the sequence number moves
    assert c.state_hash() != before
    d, e = OrderBook(SPEC), OrderBook(SPEC)
    d.apply(buy(1, 10_000, 1, "x"))
    d.apply(sell(2, 10_000, 1, "y"))
    e.apply(buy(1, 10_050, 1, "x"))
    e.apply(sell(2, 10_050, 1, "y"))
    assert d.state_hash() != e.state_hash()  # both empty, seq 4, other last price


def test_restore_replaces_the_whole_state_and_keeps_the_band():
    source = OrderBook(SPEC)
    for cmd in (sell(1, 10_100, 1, "a"), buy(2, 10_100, 1, "b"), buy(3, 10_000, 4, "c")):
        source.apply(cmd)
    target = OrderBook(SPEC)
    target.apply(sell(9, 9_950, 7, "z"))
    target.restore(source.snapshot())
    target.validate()
    assert target.state_hash() == source.state_hash()
    assert target.resting(SELL) == []
    # The last trade (10_100) sets the band after restore: 10_201 fits, 10_202 does not.
    ok, out = buy(4, 10_201, 1, "d"), buy(5, 10_202, 1, "d")
    assert [type(e) for e in target.apply(ok)] == [Accepted]
    assert target.apply(out) == [
        Rejected(SYMBOL, 8, 5, "d", Action.PLACE, RejectReason.PRICE_OUT_OF_BAND)
    ]


def test_restore_refuses_another_symbols_snapshot():
    other_book = OrderBook(SymbolSpec(symbol="ETH-USD", base="ETH", quote="USD"))
    with pytest.raises(ValueError, match="ETH-USD"):
        OrderBook(SPEC).restore(other_book.snapshot())


@pytest.mark.parametrize("symbol", ["BTC/USD", "btc-usd", "", "-BTC", "B" * 33, "BTC USD"])
def test_a_symbol_that_cannot_name_a_path_segment_is_refused(symbol):
    with pytest.raises(ValueError, match="a symbol is"):
        SymbolSpec(symbol=symbol, base="BTC", quote="USD")


@pytest.mark.parametrize("symbol", ["BTC-USD", "BRK.B", "X", "A_1", "B" * 32])
def test_symbols_of_letters_digits_dots_dashes_are_listed(symbol):
    assert SymbolSpec(symbol=symbol, base="BTC", quote="USD").symbol == symbol


# -- depth (heap book) ------------------------------------------------------------------


def _aggregate(orders: list[RestingOrder], levels: int) -> list[tuple[int, int]]:
    totals: dict[int, int] = {}
    for o in orders:  # best first already, so dict order is price order
        totals[o.price] = totals.get(o.price, 0) + o.remaining
    return list(totals.items())[:levels]


def test_depth_aggregates_per_price_best_first_and_skips_emptied_levels():
    spec = SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD")
    book, reference = OrderBook(spec), ReferenceBook(spec)

    def run(*cmds: Command) -> None:
        for cmd in cmds:
            assert book.apply(cmd) == reference.apply(cmd)
            book.validate()

    def depth(levels: int):
        got = book.depth(levels)
        assert got == (
            _aggregate(reference.resting(BUY), levels),
            _aggregate(reference.resting(SELL), levels),
        )
        return got

    run(
        buy(1, 100, 2, "a"),
        buy(2, 100, 3, "b"),
        buy(3, 99, 4, "c"),
        buy(4, 98, 1, "d"),
        buy(5, 97, 7, "e"),
        sell(6, 102, 1, "f"),
        sell(7, 101, 5, "g"),
        sell(8, 102, 2, "h"),
        sell(9, 105, 3, "i"),
    )
    assert depth(2) == ([(100, 5), (99, 4)], [(101, 5), (102, 3)])
    assert depth(10) == (
        [(100, 5), (99, 4), (98, 1), (97, 7)],
        [(101, 5), (102, 3), (105, 3)],
    )
    assert depth(0) == ([], [])
    run(cancel(3, "c"), buy(10, 101, 5, "j"))  # 99 emptied by a cancel, 101 by a fill
    assert depth(2) == ([(100, 5), (98, 1)], [(102, 3), (105, 3)])
    run(cancel(1, "a"), sell(11, 100, 1, "k"))  # 100: one canceled, one partly filled
    assert depth(1) == ([(100, 2)], [(102, 3)])
    run(cancel(2, "b"), cancel(4, "d"), cancel(5, "e"))
    assert depth(5) == ([], [(102, 3), (105, 3)])
