"""The matching core's contract (issue 2; stops, fees, GTD and cancel-all after it),
line by line, against both books.

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
    CancelAll,
    Canceled,
    Command,
    Done,
    Event,
    Expire,
    OrderType,
    Place,
    Rejected,
    Replace,
    Replaced,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)
from schema.symbols import SymbolSpec
from tests.unit.reference_book import ReferenceBook
from workers.book import BookSnapshot, OrderBook, RestingOrder, StopOrder

SYMBOL = "BTC-USD"
BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK, GTD = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD
MARKET = OrderType.MARKET
STOP_LIMIT, STOP_MARKET = OrderType.STOP_LIMIT, OrderType.STOP_MARKET
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


def stop(
    side: Side, oid: int, stop_price: int, qty: int, user: str = "u1", price=None, **kw
) -> Place:
    """A STOP_LIMIT at `price`, or a STOP_MARKET without one."""
    kind = STOP_MARKET if price is None else STOP_LIMIT
    return place(side, oid, price, qty, user, type=kind, stop_price=stop_price, **kw)


def expire(now_ms: int) -> Expire:
    return Expire(symbol=SYMBOL, now_ms=now_ms)


def cancel_all(user: str = "u1") -> CancelAll:
    return CancelAll(user_id=user, symbol=SYMBOL, order_id=10**9)


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

ACTIONS = {
    Place: Action.PLACE,
    Cancel: Action.CANCEL,
    Replace: Action.REPLACE,
    Expire: Action.EXPIRE,
    CancelAll: Action.CANCEL_ALL,
}


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
        p.stop_price,
        p.expire_at_ms,
    )


def rejected(cmd: Command, reason: RejectReason) -> Rejected:
    return Rejected(SYMBOL, 0, cmd.order_id, cmd.user_id, ACTIONS[type(cmd)], reason)


def trade(
    maker: Place, taker: Place, price: int, qty: int, maker_fee: int = 0, taker_fee: int = 0
) -> Trade:
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
        maker_fee,
        taker_fee,
    )


def done(p: Place) -> Done:
    return Done(SYMBOL, 0, p.order_id, p.user_id, p.side)


def canceled(
    p: Place, remaining: int, reason: CancelReason, price=..., protection: int | None = None
) -> Canceled:
    """`price` defaults to the order's own (None for a MARKET order)."""
    price = p.price if price is ... else price
    return Canceled(SYMBOL, 0, p.order_id, p.user_id, p.side, price, remaining, reason, protection)


def triggered(p: Place, last_price: int) -> Triggered:
    return Triggered(
        SYMBOL,
        0,
        p.order_id,
        p.user_id,
        p.side,
        p.type,
        p.stop_price,
        p.price,
        p.quantity,
        p.time_in_force,
        last_price,
        p.protection_price,
    )


def replaced(p: Place, price: int, qty: int, old: tuple[int, int], kept: bool) -> Replaced:
    old_price, old_qty = old
    return Replaced(SYMBOL, 0, p.order_id, p.user_id, p.side, price, qty, old_price, old_qty, kept)


def resting(
    p: Place,
    remaining: int | None = None,
    price: int | None = None,
    maker: int = 0,
    taker: int = 0,
) -> RestingOrder:
    """`maker`, `taker`: the fee rates it rests with (the symbol's unless its own)."""
    return RestingOrder(
        p.order_id,
        p.user_id,
        p.price if price is None else price,
        p.quantity if remaining is None else remaining,
        p.post_only,
        p.self_trade,
        maker if p.maker_fee_bps is None else p.maker_fee_bps,
        taker if p.taker_fee_bps is None else p.taker_fee_bps,
        p.expire_at_ms,
    )


def waiting(p: Place, maker: int = 0, taker: int = 0) -> StopOrder:
    """An untriggered stop as `stops()` shows it."""
    return StopOrder(
        p.order_id,
        p.user_id,
        p.side,
        p.type,
        p.stop_price,
        p.price,
        p.quantity,
        p.time_in_force,
        p.self_trade,
        p.protection_price,
        maker if p.maker_fee_bps is None else p.maker_fee_bps,
        taker if p.taker_fee_bps is None else p.taker_fee_bps,
        p.expire_at_ms,
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


# -- stops: waiting, triggering --------------------------------------------------------


def _print(s: Session, price: int, oid: int) -> None:
    """A trade at `price` between two bystanders (ids oid, oid + 1): the last price."""
    maker, taker = sell(oid, price, 1, "pm"), buy(oid + 1, price, 1, "pt")
    s.rest(maker)
    s.expect(taker, *_cross(maker, taker))


@pytest.mark.parametrize("side", [BUY, SELL])
def test_a_stop_is_accepted_and_waits_outside_the_book(session, side):
    d = 1 if side is BUY else -1
    bid, ask = buy(1, 990, 5, "m"), sell(2, 1_010, 5, "m")
    session.rest(bid, ask)
    limit_stop = stop(side, 3, 1_000 + 20 * d, 4, price=1_000 + 25 * d)
    market_stop = stop(side, 4, 1_000 + 30 * d, 2, protection_price=1_000 + 40 * d)
    session.rest(limit_stop, market_stop)
    assert session.state() == ([resting(bid)], [resting(ask)])
    assert session.book.stops() == [waiting(limit_stop), waiting(market_stop)]


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(("beyond", "fires"), [(-1, False), (0, True), (1, True)])
def test_a_stop_fires_on_a_trade_at_or_beyond_its_stop_price(session, side, beyond, fires):
    d = 1 if side is BUY else -1  # a BUY stop waits for a rise, a SELL stop for a fall
    at = 1_000 + 5 * d
    price = at + beyond * d
    order = stop(side, 1, at, 1)
    liquidity = place(other(side), 2, price + 2 * d, 3, "m2")
    maker, taker = place(other(side), 3, price, 1, "m3"), place(side, 4, price, 1, "t")
    session.rest(order, liquidity, maker)
    fired = [triggered(order, price), trade(liquidity, order, price + 2 * d, 1), done(order)]
    session.expect(taker, *_cross(maker, taker), *(fired if fires else []))
    assert session.book.stops() == ([] if fires else [waiting(order)])
    assert session.side(other(side)) == [resting(liquidity, remaining=2 if fires else 3)]


def test_any_trade_reaches_a_stop_whichever_side_took_and_both_sides_fire(session):
    """A BUY taker sweeping up from a low ask prints below a SELL stop and above a BUY
    stop: both fire, in the order they were placed; the second meets the first."""
    _print(session, 1_000, 1)
    sell_stop = stop(SELL, 3, 995, 1, "u1", price=990)  # placed first
    buy_stop = stop(BUY, 4, 1_005, 1, "u2", price=1_010)
    low, high, bid = sell(5, 990, 1, "m5"), sell(6, 1_005, 1, "m6"), buy(7, 985, 3, "m7")
    session.rest(sell_stop, buy_stop, low, high, bid)
    taker = buy(8, 1_005, 2, "t")
    session.expect(
        taker,
        accepted(taker),
        trade(low, taker, 990, 1),
        done(low),
        trade(high, taker, 1_005, 1),
        done(high),
        done(taker),
        triggered(sell_stop, 1_005),  # rests at 990: the best bid (985) is under its limit
        triggered(buy_stop, 1_005),  # and the BUY stop takes it
        trade(sell_stop, buy_stop, 990, 1),
        done(sell_stop),
        done(buy_stop),
    )
    session.assert_book([resting(bid)], [])


@pytest.mark.parametrize("tif", [GTC, IOC])
def test_a_triggered_stop_limit_runs_as_a_limit(session, tif):
    order = stop(BUY, 1, 1_005, 5, price=1_007, time_in_force=tif)
    near, far = sell(2, 1_006, 2, "m2"), sell(3, 1_008, 9, "m3")
    maker, taker = sell(4, 1_005, 1, "m4"), buy(5, 1_005, 1, "t5")
    session.rest(order, near, far, maker)
    end = [] if tif is GTC else [canceled(order, 3, CancelReason.IOC_REMAINDER)]
    session.expect(
        taker,
        *_cross(maker, taker),
        triggered(order, 1_005),
        trade(near, order, 1_006, 2),
        done(near),
        *end,
    )
    bids = [resting(order, remaining=3)] if tif is GTC else []
    session.assert_book(bids, [resting(far)])


@pytest.mark.parametrize(
    ("protection", "fills"),
    [(None, 1), (10_300, 1), (10_170, 0)],  # the band around 10_150 ends at 10_251
)
def test_a_triggered_stop_market_is_held_to_the_band_and_its_protection(banded, protection, fills):
    s = banded
    _print(s, 10_100, 1)  # band 9_999..10_201
    _print(s, 10_200, 3)  # band 10_098..10_302: an ask at 10_300 may rest
    far = sell(5, 10_300, 1, "far")
    s.rest(far)
    _print(s, 10_100, 6)
    order = stop(BUY, 8, 10_150, 3, protection_price=protection)
    near = sell(9, 10_180, 1, "near")
    s.rest(order, near)
    maker, taker = sell(10, 10_150, 1, "pm"), buy(11, 10_150, 1, "pt")
    s.rest(maker)
    filled = [trade(near, order, 10_180, 1), done(near)] if fills else []
    s.expect(
        taker,
        *_cross(maker, taker),
        triggered(order, 10_150),
        *filled,
        canceled(order, 3 - fills, CancelReason.MARKET_REMAINDER),
    )
    s.assert_book([], [resting(far)] if fills else [resting(near), resting(far)])


@pytest.mark.parametrize("side", [BUY, SELL])
def test_reached_stops_run_in_placement_order_and_a_cascade_joins_the_back(session, side):
    """A and C are reached by the first trade, B (placed first) only by A's trade: A, C
    run in placement order, then B from the back of the queue."""
    d = 1 if side is BUY else -1

    def px(n: int) -> int:
        return 1_000 + d * n

    m1, m2, m3 = (place(other(side), i, px(i), q, f"m{i}") for i, q in ((1, 1), (2, 1), (3, 5)))
    b = stop(side, 4, px(2), 1, "b")
    a = stop(side, 5, px(1), 1, "a", price=px(2))
    c = stop(side, 6, px(1), 1, "c", price=px(1))
    session.rest(m1, m2, m3, b, a, c)
    taker = place(side, 7, px(1), 1, "t")
    session.expect(
        taker,
        *_cross(m1, taker),
        triggered(a, px(1)),
        trade(m2, a, px(2), 1),
        done(m2),
        done(a),
        triggered(c, px(2)),  # its limit px(1) no longer meets anything: it rests
        triggered(b, px(2)),
        trade(m3, b, px(3), 1),
        done(b),
    )
    assert session.side(side) == [resting(c)]
    assert session.side(other(side)) == [resting(m3, remaining=4)]
    assert session.book.stops() == []


def test_a_cascade_runs_until_no_trade_reaches_another_stop(session):
    """Each stop's fill prints one tick higher and reaches the next: a chain of five."""
    asks = [sell(i, 1_000 + i, 1, f"m{i}") for i in range(1, 7)]
    stops = [stop(BUY, 10 + i, 1_000 + i, 1, f"s{i}") for i in range(1, 6)]
    session.rest(*asks, *stops)
    taker = buy(20, 1_001, 1, "t")
    chain: list[Event] = []
    for i, order in enumerate(stops, 1):
        maker = asks[i]  # the one at 1_000 + i + 1
        chain += [triggered(order, 1_000 + i), trade(maker, order, maker.price, 1)]
        chain += [done(maker), done(order)]
    session.expect(taker, *_cross(asks[0], taker), *chain)
    session.assert_book([], [])


def test_a_replace_that_trades_triggers_stops(session):
    mine, ask = buy(1, 990, 2, "u1"), sell(2, 1_005, 5, "u2")
    order = stop(BUY, 3, 1_005, 1, "u3")
    session.rest(mine, ask, order)
    session.expect(
        replace(1, price=1_005),
        replaced(mine, 1_005, 2, (990, 2), False),
        trade(ask, mine, 1_005, 2),
        done(mine),
        triggered(order, 1_005),
        trade(ask, order, 1_005, 1),
        done(order),
    )
    session.assert_book([], [resting(ask, remaining=2)])


@pytest.mark.parametrize("mode", [CANCEL_RESTING, CANCEL_INCOMING, CANCEL_BOTH])
def test_self_trade_prevention_applies_to_a_triggered_stop(session, mode):
    order = stop(BUY, 1, 1_005, 2, "u1", self_trade=mode)
    own, theirs = sell(2, 1_006, 1, "u1"), sell(3, 1_007, 2, "u2")
    maker, taker = sell(4, 1_005, 1, "pm"), buy(5, 1_005, 1, "pt")
    session.rest(order, own, theirs, maker)
    if mode is CANCEL_RESTING:
        outcome = [
            canceled(own, 1, CancelReason.SELF_TRADE),
            trade(theirs, order, 1_007, 2),
            done(theirs),
            done(order),
        ]
    else:
        own_gone = [canceled(own, 1, CancelReason.SELF_TRADE)] if mode is CANCEL_BOTH else []
        outcome = [*own_gone, canceled(order, 2, CancelReason.SELF_TRADE)]
    session.expect(taker, *_cross(maker, taker), triggered(order, 1_005), *outcome)
    left = [] if mode is CANCEL_RESTING else [resting(theirs)]
    assert session.side(SELL) == ([resting(own)] if mode is CANCEL_INCOMING else []) + left


# -- stops: arrival --------------------------------------------------------------------


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(("offset", "ok"), [(-1, False), (0, False), (1, True)])
def test_a_stop_the_last_trade_already_reached_is_rejected(session, side, offset, ok):
    _print(session, 1_000, 1)
    d = 1 if side is BUY else -1
    order = stop(side, 3, 1_000 + offset * d, 1)
    if ok:
        session.rest(order)
    else:
        session.expect(order, rejected(order, RejectReason.STOP_WOULD_TRIGGER))
        assert session.book.stops() == []


@pytest.mark.parametrize("side", [BUY, SELL])
@pytest.mark.parametrize(("offset", "ok"), [(0, False), (1, True)])
def test_before_any_trade_a_stop_is_checked_against_the_reference_price(banded, side, offset, ok):
    d = 1 if side is BUY else -1
    order = stop(side, 1, 10_000 + offset * d, 1, price=10_000 + offset * d)
    if ok:
        banded.rest(order)
    else:
        banded.expect(order, rejected(order, RejectReason.STOP_WOULD_TRIGGER))


@pytest.mark.parametrize("at", [1, 10**9])
@pytest.mark.parametrize("side", [BUY, SELL])
def test_without_trade_or_reference_price_any_stop_is_accepted(session, side, at):
    session.rest(stop(side, 1, at, 1))


STOP_REJECTS = [
    # under STRICT: tick 5, lot 10, qty 20..1_000, band 9_000..11_000 around 10_000
    (place(BUY, 1, None, 100, type=STOP_MARKET), RejectReason.STOP_PRICE_REQUIRED),
    (place(BUY, 1, 10_100, 100, type=STOP_LIMIT), RejectReason.STOP_PRICE_REQUIRED),
    (place(BUY, 1, None, 100, type=STOP_LIMIT, stop_price=10_100), RejectReason.PRICE_REQUIRED),
    (stop(BUY, 1, 10_100, 100, price=10_003), RejectReason.PRICE_OFF_TICK),
    (stop(BUY, 1, 10_100, 100, price=11_005), RejectReason.PRICE_OUT_OF_BAND),
    (stop(SELL, 1, 9_900, 100, price=0), RejectReason.PRICE_NOT_POSITIVE),
    (
        place(BUY, 1, 10_000, 100, type=STOP_MARKET, stop_price=10_100),
        RejectReason.PRICE_NOT_ALLOWED,
    ),
    (stop(BUY, 1, 10_103, 100), RejectReason.STOP_PRICE_OFF_TICK),
    (stop(BUY, 1, 11_005, 100), RejectReason.STOP_PRICE_OUT_OF_BAND),
    (stop(SELL, 1, 8_995, 100, price=9_000), RejectReason.STOP_PRICE_OUT_OF_BAND),
    (stop(SELL, 1, 0, 100), RejectReason.STOP_PRICE_NOT_POSITIVE),
    (stop(SELL, 1, -5, 100), RejectReason.STOP_PRICE_NOT_POSITIVE),
    (stop(BUY, 1, 10_100, 25), RejectReason.QUANTITY_OFF_LOT),
    (stop(BUY, 1, 10_100, 10), RejectReason.QUANTITY_BELOW_MIN),
    (stop(BUY, 1, 10_100, 1_010), RejectReason.QUANTITY_ABOVE_MAX),
    (stop(BUY, 1, 10_100, 100, price=10_100, post_only=True), RejectReason.POST_ONLY_NOT_GTC_LIMIT),
    (stop(BUY, 1, 10_100, 100, time_in_force=FOK), RejectReason.TIME_IN_FORCE_NOT_ALLOWED),
    (
        stop(SELL, 1, 9_900, 100, price=9_900, time_in_force=FOK),
        RejectReason.TIME_IN_FORCE_NOT_ALLOWED,
    ),
    (buy(1, 10_000, 100, stop_price=10_100), RejectReason.STOP_PRICE_NOT_ALLOWED),
    (market(SELL, 1, 100, stop_price=9_900), RejectReason.STOP_PRICE_NOT_ALLOWED),
    (stop(BUY, 1, 10_000, 100), RejectReason.STOP_WOULD_TRIGGER),
    (stop(SELL, 1, 10_000, 100, price=9_995), RejectReason.STOP_WOULD_TRIGGER),
]


@pytest.mark.parametrize(("cmd", "reason"), STOP_REJECTS)
def test_symbol_rules_reject_stops(strict, cmd, reason):
    strict.expect(cmd, rejected(cmd, reason))
    assert strict.book.stops() == []


@pytest.mark.parametrize(
    "order",
    [
        stop(BUY, 1, 11_000, 20, price=11_000),  # every boundary
        stop(SELL, 1, 9_000, 1_000, price=9_000),
        stop(BUY, 1, 10_005, 30, time_in_force=IOC),
        stop(SELL, 1, 9_995, 30, price=9_990, time_in_force=IOC),
    ],
)
def test_stops_on_every_boundary_are_accepted(strict, order):
    strict.rest(order)
    assert strict.book.stops() == [waiting(order)]


def test_a_stop_and_a_resting_order_never_share_an_id(session):
    order, limit = stop(BUY, 1, 1_005, 1), buy(2, 990, 1)
    session.rest(order, limit)
    for dup in (buy(1, 990, 1, "u2"), stop(SELL, 2, 980, 1, "u2")):
        session.expect(dup, rejected(dup, RejectReason.DUPLICATE_ORDER_ID))
    assert session.book.stops() == [waiting(order)]


# -- stops: cancel, replace ------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, 1_010], ids=["stop-market", "stop-limit"])
def test_an_untriggered_stop_can_be_canceled_and_then_never_fires(session, limit):
    order = stop(BUY, 1, 1_005, 4, price=limit, protection_price=1_020)
    session.rest(order)
    theirs = cancel(1, "u2")
    session.expect(theirs, rejected(theirs, RejectReason.UNKNOWN_ORDER))
    # A STOP_MARKET names the price its hold was taken at; a STOP_LIMIT has its price.
    protection = 1_020 if limit is None else None
    session.expect(cancel(1), canceled(order, 4, CancelReason.USER, protection=protection))
    assert session.book.stops() == []
    _print(session, 1_010, 2)
    again = cancel(1)
    session.expect(again, rejected(again, RejectReason.UNKNOWN_ORDER))


def test_an_untriggered_stop_cannot_be_replaced_until_it_rests(session):
    order = stop(SELL, 1, 995, 4, price=990)
    session.rest(order)
    for cmd in (replace(1, price=991), replace(1, qty=2), replace(1)):
        session.expect(cmd, rejected(cmd, RejectReason.STOP_NOT_REPLACEABLE))
    theirs = replace(1, "u2", qty=2)
    session.expect(theirs, rejected(theirs, RejectReason.UNKNOWN_ORDER))
    assert session.book.stops() == [waiting(order)]
    maker, taker = buy(2, 995, 1, "pm"), sell(3, 995, 1, "pt")
    session.rest(maker)
    session.expect(taker, *_cross(maker, taker), triggered(order, 995))
    session.assert_book([], [resting(order)])
    session.expect(replace(1, qty=2), replaced(order, 990, 2, (990, 4), True))


def test_a_triggered_gtd_stop_rests_with_its_expiry_and_expires(session):
    order = stop(BUY, 1, 1_005, 3, price=1_004, time_in_force=GTD, expire_at_ms=500)
    maker, taker = sell(2, 1_005, 1, "pm"), buy(3, 1_005, 1, "pt")
    session.rest(order, maker)
    # It fires, and with nothing at or under 1_004 to buy it rests, GTD as it came.
    session.expect(taker, *_cross(maker, taker), triggered(order, 1_005))
    session.assert_book([resting(order)], [])
    session.expect(expire(499))
    session.expect(expire(500), canceled(order, 3, CancelReason.EXPIRED))
    session.assert_book([], [])


# -- fees -------------------------------------------------------------------------------

FEE_CASES = [
    # (maker bps, taker bps, taker side, price, quantity, maker fee, taker fee). The
    # buyer pays on base (quantity), the seller on quote (price × quantity); a fee
    # rounds up, a rebate's size down.
    (10, 20, BUY, 1_001, 7, 8, 1),  # seller: 7.007 -> 8; buyer: 0.014 -> 1
    (10, 20, SELL, 1_001, 7, 1, 15),  # buyer: 0.007 -> 1; seller: 14.014 -> 15
    (-3, 8, BUY, 1_001, 7, -2, 1),  # rebate -2.1021 -> -2
    (-3, 8, SELL, 1_001, 7, 0, 6),  # rebate -0.0021 -> 0; fee 5.6056 -> 6
    (-3, 8, BUY, 100, 100, -3, 1),  # exact rebate -3; fee 0.08 -> 1
    (-5, 5, SELL, 100, 20_000, -10, 1_000),  # both exact
    (-7, 10, BUY, 1_003, 1_999, -1_403, 2),  # -1403.4979 -> -1403; 1.999 -> 2
    (25, 25, BUY, 1_000, 4, 10, 1),
    (0, 0, SELL, 1_000, 4, 0, 0),
    (10_000, 10_000, BUY, 3, 5, 15, 5),  # all that each side receives
]


@pytest.mark.parametrize(
    ("maker_bps", "taker_bps", "side", "price", "qty", "mfee", "tfee"), FEE_CASES
)
def test_fees_are_charged_on_what_each_side_receives_rounded_for_the_exchange(
    make_book, maker_bps, taker_bps, side, price, qty, mfee, tfee
):
    s = Session(make_book(maker_fee_bps=maker_bps, taker_fee_bps=taker_bps))
    maker = place(other(side), 1, price, qty, "m")
    taker = place(side, 2, price, qty, "t")
    s.rest(maker)
    assert s.side(other(side)) == [resting(maker, maker=maker_bps, taker=taker_bps)]
    s.expect(
        taker,
        accepted(taker),
        trade(maker, taker, price, qty, mfee, tfee),
        done(maker),
        done(taker),
    )


def test_an_orders_own_rates_override_the_symbols_and_a_maker_keeps_its_own(make_book):
    s = Session(make_book(maker_fee_bps=10, taker_fee_bps=20))
    vip = sell(1, 1_000, 10, "vip", maker_fee_bps=-2)  # its tier's rate, kept while it rests
    plain = sell(2, 1_000, 10, "plain")
    s.rest(vip, plain)
    taker = buy(3, 1_000, 20, "t", taker_fee_bps=5)
    s.expect(
        taker,
        accepted(taker),
        trade(vip, taker, 1_000, 10, -2, 1),  # rebate 2 on 10_000; fee 0.005 -> 1
        done(vip),
        trade(plain, taker, 1_000, 10, 10, 1),
        done(plain),
        done(taker),
    )


def test_a_replaced_order_that_crosses_pays_its_own_taker_rate(make_book):
    s = Session(make_book(maker_fee_bps=10, taker_fee_bps=20))
    mine = buy(1, 990, 50_000, "u1", taker_fee_bps=1)
    ask = sell(2, 1_000, 50_000, "u2")
    s.rest(mine, ask)
    s.expect(
        replace(1, price=1_000),
        replaced(mine, 1_000, 50_000, (990, 50_000), False),
        trade(ask, mine, 1_000, 50_000, 50_000, 5),  # maker 10 bps of 50M; taker 1 bps of 50k
        done(ask),
        done(mine),
    )


def test_a_triggered_stop_pays_its_own_rates(make_book):
    s = Session(make_book(maker_fee_bps=10, taker_fee_bps=20))
    order = stop(BUY, 1, 1_005, 20_000, price=1_005, maker_fee_bps=0, taker_fee_bps=1)
    ask = sell(2, 1_005, 10_000, "m")
    s.rest(order, ask)
    assert s.book.stops() == [waiting(order)]
    taker = buy(3, 1_005, 1, "t")
    s.expect(
        taker,
        accepted(taker),
        trade(ask, taker, 1_005, 1, 2, 1),  # 1.005 -> 2; 0.002 -> 1
        done(taker),
        triggered(order, 1_005),
        trade(ask, order, 1_005, 9_999, 10_049, 1),  # 10_048.995 -> 10_049; 0.9999 -> 1
        done(ask),
    )
    s.assert_book([resting(order, remaining=10_001)], [])


@pytest.mark.parametrize(
    ("maker", "taker", "ok"),
    [
        (-20, 20, True),  # a rebate as large as the taker rate
        (-21, 20, False),
        (None, -1, False),
        (10_001, None, False),
        (None, 10_001, False),
        (10_000, 10_000, True),
        (-3, None, True),
        (None, 2, False),  # with the symbol's maker rebate of 3: the pair is checked
    ],
)
def test_an_orders_own_fee_rates_are_checked_as_a_pair(make_book, maker, taker, ok):
    s = Session(make_book(maker_fee_bps=-3, taker_fee_bps=20))
    order = buy(1, 1_000, 1, maker_fee_bps=maker, taker_fee_bps=taker)
    if ok:
        s.rest(order)
    else:
        s.expect(order, rejected(order, RejectReason.FEE_RATE_INVALID))


@pytest.mark.parametrize(
    ("maker", "taker", "ok"),
    [(0, 0, True), (-20, 20, True), (-21, 20, False), (0, -1, False), (10_001, 10_001, False)],
)
def test_a_symbols_fee_rates_are_checked(maker, taker, ok):
    def spec() -> SymbolSpec:
        return SymbolSpec(
            symbol=SYMBOL, base="BTC", quote="USD", maker_fee_bps=maker, taker_fee_bps=taker
        )

    if ok:
        assert spec().maker_fee_bps == maker
    else:
        with pytest.raises(ValueError, match="fee_bps"):
            spec()


# -- GTD and expiry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (buy(1, 100, 5, time_in_force=GTD), RejectReason.EXPIRE_AT_REQUIRED),
        (buy(1, 100, 5, expire_at_ms=50), RejectReason.EXPIRE_AT_NOT_ALLOWED),
        (sell(1, 100, 5, time_in_force=IOC, expire_at_ms=50), RejectReason.EXPIRE_AT_NOT_ALLOWED),
        (stop(BUY, 1, 105, 5, expire_at_ms=50), RejectReason.EXPIRE_AT_NOT_ALLOWED),
        (
            market(BUY, 1, 5, time_in_force=GTD, expire_at_ms=50),
            RejectReason.TIME_IN_FORCE_NOT_ALLOWED,
        ),
        (buy(1, 100, 5, time_in_force=GTD, expire_at_ms=0), RejectReason.EXPIRE_AT_PASSED),
        (buy(1, 100, 5, time_in_force=GTD, expire_at_ms=-1), RejectReason.EXPIRE_AT_PASSED),
        (
            buy(1, 100, 5, time_in_force=GTD, expire_at_ms=50, post_only=True),
            RejectReason.POST_ONLY_NOT_GTC_LIMIT,
        ),
    ],
)
def test_gtd_needs_an_expiry_and_only_gtd_takes_one(session, cmd, reason):
    session.expect(cmd, rejected(cmd, reason))
    session.assert_book([], [])


def test_a_gtd_order_already_due_by_the_books_clock_is_rejected(session):
    session.expect(expire(100))  # nothing to expire: no event, the clock moves
    due, later = (
        buy(1, 99, 1, time_in_force=GTD, expire_at_ms=100),
        stop(BUY, 2, 105, 1, time_in_force=GTD, expire_at_ms=100),
    )
    for cmd in (due, later):
        session.expect(cmd, rejected(cmd, RejectReason.EXPIRE_AT_PASSED))
    ok = buy(3, 99, 1, time_in_force=GTD, expire_at_ms=101)
    session.rest(ok)
    session.expect(expire(50))  # a clock from behind changes nothing
    session.assert_book([resting(ok)], [])


def test_expire_cancels_what_is_due_in_order_id_order(session):
    b = sell(1, 105, 5, "u2", time_in_force=GTD, expire_at_ms=50)
    keep = buy(2, 98, 5, "u3", time_in_force=GTD, expire_at_ms=200)
    a = buy(3, 99, 5, "u1", time_in_force=GTD, expire_at_ms=40)
    gtc = buy(4, 97, 5, "u4")
    e = stop(BUY, 5, 110, 2, "u5", time_in_force=GTD, expire_at_ms=80, protection_price=120)
    session.rest(b, keep, a, gtc, e)
    taker = sell(6, 99, 2, "u9")
    session.expect(taker, accepted(taker), trade(a, taker, 99, 2), done(taker))
    session.expect(expire(39))
    session.expect(
        expire(100),  # by id: 1, 3, 5, though they fell due in the order 3, 1, 5
        canceled(b, 5, CancelReason.EXPIRED),
        canceled(a, 3, CancelReason.EXPIRED),  # what is left after its fill
        canceled(e, 2, CancelReason.EXPIRED, protection=120),
    )
    session.assert_book([resting(keep), resting(gtc)], [])
    assert session.book.stops() == []
    session.expect(expire(200), canceled(keep, 5, CancelReason.EXPIRED))  # at its very ms
    session.assert_book([resting(gtc)], [])


def test_a_gtd_order_keeps_its_expiry_through_a_replace(session):
    order = buy(1, 99, 5, time_in_force=GTD, expire_at_ms=70)
    session.rest(order)
    session.expect(replace(1, price=98, qty=6), replaced(order, 98, 6, (99, 5), False))
    session.expect(replace(1, qty=4), replaced(order, 98, 4, (98, 6), True))
    session.assert_book([resting(order, remaining=4, price=98)], [])
    session.expect(expire(70), canceled(order, 4, CancelReason.EXPIRED, price=98))


def test_an_order_that_filled_is_not_expired(session):
    order = buy(1, 99, 5, time_in_force=GTD, expire_at_ms=70)
    session.rest(order)
    taker = sell(2, 99, 5, "u2")
    session.expect(taker, *_cross(order, taker))
    reused = buy(1, 99, 5, time_in_force=GTD, expire_at_ms=90)  # an ended order's id is free
    session.rest(reused)
    session.expect(expire(80))  # the entry of the first order 1 expires nothing
    session.expect(expire(90), canceled(reused, 5, CancelReason.EXPIRED))


# -- cancel-all -------------------------------------------------------------------------


def test_cancel_all_cancels_the_users_orders_and_stops_in_order_id_order(session):
    b3, b1 = buy(3, 99, 5), buy(1, 98, 2)
    a5 = sell(5, 105, 1)
    s2 = stop(BUY, 2, 110, 4, price=111)
    s4 = stop(SELL, 4, 90, 3, protection_price=80)
    theirs, their_stop = buy(6, 99, 1, "u2"), stop(BUY, 7, 110, 1, "u2")
    session.rest(b3, b1, a5, s2, s4, theirs, their_stop)
    session.expect(
        cancel_all("u1"),
        canceled(b1, 2, CancelReason.USER),
        canceled(s2, 4, CancelReason.USER),
        canceled(b3, 5, CancelReason.USER),
        canceled(s4, 3, CancelReason.USER, protection=80),
        canceled(a5, 1, CancelReason.USER),
    )
    session.assert_book([resting(theirs)], [])
    assert session.book.stops() == [waiting(their_stop)]
    session.expect(cancel_all("u1"))  # nothing left: no event at all
    session.expect(cancel_all("nobody"))


# -- snapshot, restore, state hash with stops, fees and GTD (heap book) ------------------

FEE_SPEC = SymbolSpec(
    symbol=SYMBOL, base="BTC", quote="USD", maker_fee_bps=-2, taker_fee_bps=6, **BAND
)
STOP_SCRIPT: list[Command] = [
    sell(1, 10_050, 2, "a", maker_fee_bps=-1),
    sell(2, 10_080, 5, "b", time_in_force=GTD, expire_at_ms=1_000),
    stop(BUY, 3, 10_040, 2, "c", price=10_080),  # placed before 4: runs first
    stop(BUY, 4, 10_020, 1, "d"),  # STOP_MARKET: band-protected when it fires
    stop(SELL, 5, 9_950, 2, "e", price=9_940, time_in_force=GTD, expire_at_ms=500),
    stop(BUY, 6, 10_060, 2, "f", price=10_100, taker_fee_bps=2),  # reached by 3's trade
    buy(7, 9_990, 4, "g", time_in_force=GTD, expire_at_ms=800),
    stop(BUY, 8, 10_000, 1, "h"),  # rejected: the reference price reaches it
    buy(9, 10_050, 1, "i"),  # a trade at 10_050 fires 3 and 4; 3's trade at 10_080 fires 6
    replace(3, "c", price=10_055),  # rejected: 3 filled
    replace(5, "e", qty=1),  # rejected: an untriggered stop is not replaceable
    expire(600),  # stop 5 expires
    stop(SELL, 10, 9_990, 3, "j", price=9_980),
    cancel_all("g"),  # 7 goes; 10 is j's
    sell(11, 10_000, 1, "k"),
    buy(12, 10_000, 1, "l"),  # a trade at 10_000: not low enough for 10
    stop(SELL, 13, 9_950, 1, "j", expire_at_ms=5),  # rejected: not GTD
    expire(1_000),  # what is left of 2 expires
    buy(14, 9_990, 2, "m"),
    sell(15, 9_990, 1, "n"),  # a trade at 9_990 fires 10: it takes the rest of 14, rests 2
    cancel(10, "j"),
]


@pytest.mark.parametrize("cut", range(len(STOP_SCRIPT) + 1))
def test_stops_and_expiries_survive_snapshot_restore(cut):
    straight, reference = OrderBook(FEE_SPEC), ReferenceBook(FEE_SPEC)
    events = [straight.apply(cmd) for cmd in STOP_SCRIPT[:cut]]
    restored = OrderBook(FEE_SPEC)
    restored.restore(straight.snapshot())
    restored.validate()
    assert restored.snapshot() == straight.snapshot()
    assert restored.stops() == straight.stops()
    assert restored.now_ms == straight.now_ms
    for cmd in STOP_SCRIPT[cut:]:
        got = restored.apply(cmd)
        assert got == straight.apply(cmd), cmd
        restored.validate()
        assert restored.state_hash() == straight.state_hash()
        events.append(got)
    assert events == [reference.apply(cmd) for cmd in STOP_SCRIPT]
    assert restored.stops() == reference.stops()


def test_stop_script_reaches_every_event_kind_and_each_new_rule():
    book = OrderBook(FEE_SPEC)
    events = [e for cmd in STOP_SCRIPT for e in book.apply(cmd)]
    assert {type(e) for e in events} == {
        Accepted,
        Rejected,
        Trade,
        Canceled,
        Done,
        Triggered,
    }
    fired = [e.order_id for e in events if isinstance(e, Triggered)]
    assert fired == [3, 4, 6, 10]
    reasons = {e.reason for e in events if isinstance(e, (Rejected, Canceled))}
    assert reasons >= {
        RejectReason.STOP_WOULD_TRIGGER,
        RejectReason.STOP_NOT_REPLACEABLE,
        RejectReason.EXPIRE_AT_NOT_ALLOWED,
        CancelReason.EXPIRED,
        CancelReason.USER,
    }
    trades = [e for e in events if isinstance(e, Trade)]
    assert any(t.maker_fee < 0 for t in trades) and all(t.taker_fee > 0 for t in trades)


def test_state_hash_sees_the_stops_their_trigger_order_and_the_clock():
    def book(*cmds: Command) -> OrderBook:
        b = OrderBook(FEE_SPEC)
        for cmd in cmds:
            b.apply(cmd)
        return b

    x, y = stop(BUY, 1, 10_050, 1, "x"), stop(BUY, 2, 10_050, 1, "y")
    assert book(x, y).state_hash() != book(y, x).state_hash()  # same stops, other queue
    assert book(x, expire(5)).state_hash() != book(x, expire(6)).state_hash()
    assert book(x).snapshot() != book(buy(1, 9_950, 1, "x")).snapshot()


def test_a_snapshot_from_before_stops_still_restores():
    """The arrays a book wrote before stops, fees and GTD existed: 5 fields, orders of 6."""
    old = msgspec.msgpack.encode(
        [SYMBOL, 7, 10_050, [[4, "d", 9_950, 3, False, "CANCEL_RESTING"]], []]
    )
    book = OrderBook(FEE_SPEC)
    book.restore(old)
    book.validate()
    assert (book.seq, book.last_price, book.now_ms, book.stops()) == (7, 10_050, 0, [])
    assert book.resting(BUY) == [RestingOrder(4, "d", 9_950, 3, False, CANCEL_RESTING)]
    assert msgspec.msgpack.decode(book.snapshot(), type=BookSnapshot).stops == []


def test_untriggered_stops_are_not_in_the_depth():
    book = OrderBook(SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD"))
    for cmd in (
        buy(1, 99, 2),
        sell(2, 101, 3),
        stop(BUY, 3, 105, 7, price=106),
        stop(SELL, 4, 95, 1),
    ):
        book.apply(cmd)
    assert book.depth(5) == ([(99, 2)], [(101, 3)])
    assert len(book) == 2
    assert book.order(3) is None and book.stop(3) is not None
