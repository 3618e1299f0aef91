"""Hypothesis stateful test: random command sequences into the heap book and the
reference book must give identical events and identical resting state (orders, stops,
clock), and the heap book must pass validate() after every step, also across
snapshot/restore."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from schema.messages import (
    Cancel,
    CancelAll,
    Expire,
    OrderType,
    Place,
    Replace,
    SelfTrade,
    Side,
    TimeInForce,
)
from schema.symbols import SymbolSpec
from tests.unit.reference_book import ReferenceBook
from workers.book import OrderBook

SYMBOL = "BTC-USD"
SPECS = [
    # Rules tight enough that random input breaks each of them now and then; a maker
    # rebate, so rounding runs both ways.
    SymbolSpec(
        symbol=SYMBOL,
        base="BTC",
        quote="USD",
        tick=5,
        lot=10,
        min_qty=20,
        max_qty=500,
        band_bps=300,
        reference_price=1000,
        maker_fee_bps=-3,
        taker_fee_bps=8,
    ),
    SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD"),
    # No band, no reference: stops are accepted whatever their price before a trade.
    SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD", maker_fee_bps=10, taker_fee_bps=25),
]
USERS = st.sampled_from(["alice", "bob", "carol"])
PRICES = st.one_of(st.integers(960, 1040).map(lambda p: p - p % 5), st.integers(-5, 1100))
QUANTITIES = st.one_of(st.integers(1, 30).map(lambda q: q * 10), st.integers(-10, 600))
# What every spec accepts: on tick and lot, above the minimum.
GOOD_QUANTITIES = st.integers(2, 30).map(lambda q: q * 10)
# Mostly the symbol's rates; now and then an order's own, sometimes out of range.
FEE_RATES = st.one_of(st.none(), st.none(), st.integers(-30, 60))


class BookMachine(RuleBasedStateMachine):
    @initialize(spec=st.sampled_from(SPECS))
    def start(self, spec: SymbolSpec) -> None:
        self.heap = OrderBook(spec)
        self.reference = ReferenceBook(spec)
        self.next_id = 1
        self.ids: list[int] = []
        self.clock = 0

    def both(self, command) -> None:
        got = self.heap.apply(command)
        want = self.reference.apply(command)
        assert got == want, f"{command}\nheap:      {got}\nreference: {want}"
        self.heap.validate()

    def owner(self, order_id: int) -> str | None:
        found = self.heap.order(order_id) or self.heap.stop(order_id)
        return None if found is None else found.user_id

    @rule(
        user=USERS,
        side=st.sampled_from(Side),
        order_type=st.sampled_from(OrderType),
        price=PRICES,
        quantity=QUANTITIES,
        tif=st.sampled_from(TimeInForce),
        post_only=st.booleans(),
        self_trade=st.sampled_from(SelfTrade),
        odd=st.integers(0, 19),
        protection=st.one_of(st.none(), PRICES),
        stop_price=PRICES,
        expires_in=st.integers(-5, 60),
        maker_fee=FEE_RATES,
        taker_fee=FEE_RATES,
    )
    def place(
        self,
        user,
        side,
        order_type,
        price,
        quantity,
        tif,
        post_only,
        self_trade,
        odd,
        protection,
        stop_price,
        expires_in,
        maker_fee,
        taker_fee,
    ):
        # Now and then break a rule on purpose: a MARKET with a price, a LIMIT without,
        # post_only off GTC, a live order id reused, a stop price where none belongs or
        # none where one does, an expiry without GTD or GTD without one.
        market_like = order_type in (OrderType.MARKET, OrderType.STOP_MARKET)
        if market_like and odd:
            price = None
        if not market_like and odd == 1:
            price = None
        post_only = post_only and (odd < 4 or tif is TimeInForce.GTC)
        stop = order_type in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
        if stop == (odd == 3):
            stop_price = None
        gtd = tif is TimeInForce.GTD
        expire_at = self.clock + expires_in if gtd != (odd == 5) else None
        order_id = self.ids[-1] if odd == 2 and self.ids else self.next_id
        self.next_id += 1
        self.ids.append(order_id)
        self.both(
            Place(
                order_id=order_id,
                user_id=user,
                symbol=SYMBOL,
                side=side,
                type=order_type,
                price=price,
                quantity=quantity,
                time_in_force=tif,
                post_only=post_only,
                self_trade=self_trade,
                protection_price=protection,
                stop_price=stop_price,
                maker_fee_bps=maker_fee,
                taker_fee_bps=taker_fee,
                expire_at_ms=expire_at,
            )
        )

    @rule(
        user=USERS,
        side=st.sampled_from(Side),
        order_type=st.sampled_from([OrderType.STOP_LIMIT, OrderType.STOP_MARKET]),
        ticks=st.integers(1, 6),
        spread=st.integers(-2, 4),
        quantity=GOOD_QUANTITIES,
        tif=st.sampled_from([TimeInForce.GTC, TimeInForce.IOC, TimeInForce.GTD]),
        self_trade=st.sampled_from(SelfTrade),
        expires_in=st.integers(1, 60),
    )
    def place_stop(
        self, user, side, order_type, ticks, spread, quantity, tif, self_trade, expires_in
    ):
        """A valid stop a few ticks beyond the market, so that trades reach it and the
        stops' own trades reach further ones."""
        away = 1 if side is Side.BUY else -1
        reference = self.heap.reference_price or 1000
        stop_price = reference - reference % 5 + away * 5 * ticks
        price = stop_price + away * 5 * spread if order_type is OrderType.STOP_LIMIT else None
        self.next_id += 1
        self.ids.append(self.next_id)
        self.both(
            Place(
                order_id=self.next_id,
                user_id=user,
                symbol=SYMBOL,
                side=side,
                type=order_type,
                price=price,
                quantity=quantity,
                time_in_force=tif,
                self_trade=self_trade,
                stop_price=stop_price,
                expire_at_ms=self.clock + expires_in if tif is TimeInForce.GTD else None,
            )
        )

    @rule(
        user=USERS,
        side=st.sampled_from(Side),
        ticks=st.integers(-2, 8),
        quantity=GOOD_QUANTITIES,
        market=st.booleans(),
    )
    def sweep(self, user, side, ticks, quantity, market):
        """A valid order priced to trade through a few levels, moving the last price."""
        away = 1 if side is Side.BUY else -1
        reference = self.heap.reference_price or 1000
        price = None if market else reference - reference % 5 + away * 5 * ticks
        self.next_id += 1
        self.ids.append(self.next_id)
        self.both(
            Place(
                order_id=self.next_id,
                user_id=user,
                symbol=SYMBOL,
                side=side,
                type=OrderType.MARKET if market else OrderType.LIMIT,
                price=price,
                quantity=quantity,
            )
        )

    @rule(
        user=USERS,
        side=st.sampled_from(Side),
        ticks=st.integers(0, 5),
        quantity=GOOD_QUANTITIES,
        maker_fee=FEE_RATES,
    )
    def quote(self, user, side, ticks, quantity, maker_fee):
        """Valid liquidity at and behind the market, for sweeps and stops to trade with."""
        away = -1 if side is Side.BUY else 1
        reference = self.heap.reference_price or 1000
        self.next_id += 1
        self.ids.append(self.next_id)
        self.both(
            Place(
                order_id=self.next_id,
                user_id=user,
                symbol=SYMBOL,
                side=side,
                price=reference - reference % 5 + away * 5 * ticks,
                quantity=quantity,
                maker_fee_bps=maker_fee,
            )
        )

    @rule(data=st.data(), user=USERS, owner=st.booleans())
    def cancel(self, data, user, owner):
        order_id = data.draw(st.sampled_from(self.ids)) if self.ids else 999
        if owner:
            user = self.owner(order_id) or user
        self.both(Cancel(order_id=order_id, user_id=user, symbol=SYMBOL))

    @rule(
        data=st.data(),
        price=st.one_of(st.none(), PRICES),
        quantity=st.one_of(st.none(), QUANTITIES),
    )
    def replace(self, data, price, quantity):
        order_id = data.draw(st.sampled_from(self.ids)) if self.ids else 999
        user = self.owner(order_id) or "alice"
        self.both(
            Replace(order_id=order_id, user_id=user, symbol=SYMBOL, price=price, quantity=quantity)
        )

    @rule(step=st.integers(-5, 30))
    def expire(self, step):
        """The clock: mostly forward, now and then a tick from behind."""
        now = self.clock + step
        self.clock = max(self.clock, now)
        self.both(Expire(symbol=SYMBOL, now_ms=now))

    @rule(user=USERS)
    def cancel_all(self, user):
        self.both(CancelAll(user_id=user, symbol=SYMBOL, order_id=10**9))

    @rule()
    def snapshot_and_restore(self):
        """Carry on with a book rebuilt from a snapshot: it must be indistinguishable."""
        before = self.heap.state_hash()
        restored = OrderBook(self.heap.spec)
        restored.restore(self.heap.snapshot())
        restored.validate()
        assert restored.state_hash() == before
        self.heap = restored

    @invariant()
    def same_state(self):
        if not hasattr(self, "heap"):
            return
        for side in Side:
            assert self.heap.resting(side) == self.reference.resting(side)
        assert self.heap.stops() == self.reference.stops()
        assert self.heap.seq == self.reference.seq
        assert self.heap.last_price == self.reference.last_price
        assert self.heap.now_ms == self.reference.now_ms


BookMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookMatchesReference = BookMachine.TestCase
