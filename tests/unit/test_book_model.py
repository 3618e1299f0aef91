"""Hypothesis stateful test: random command sequences into the heap book and the
reference book must give identical events and identical resting state, and the heap
book must pass validate() after every step, also across snapshot/restore."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from schema.messages import (
    Cancel,
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
    # Rules tight enough that random input breaks each of them now and then.
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
    ),
    SymbolSpec(symbol=SYMBOL, base="BTC", quote="USD"),
]
USERS = st.sampled_from(["alice", "bob", "carol"])
PRICES = st.one_of(st.integers(960, 1040).map(lambda p: p - p % 5), st.integers(-5, 1100))
QUANTITIES = st.one_of(st.integers(1, 30).map(lambda q: q * 10), st.integers(-10, 600))


class BookMachine(RuleBasedStateMachine):
    @initialize(spec=st.sampled_from(SPECS))
    def start(self, spec: SymbolSpec) -> None:
        self.heap = OrderBook(spec)
        self.reference = ReferenceBook(spec)
        self.next_id = 1
        self.ids: list[int] = []

    def both(self, command) -> None:
        got = self.heap.apply(command)
        want = self.reference.apply(command)
        assert got == want, f"{command}\nheap:      {got}\nreference: {want}"
        self.heap.validate()

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
    )
    def place(
        self, user, side, order_type, price, quantity, tif, post_only, self_trade, odd, protection
    ):
        # Now and then break a rule on purpose: a MARKET with a price, a LIMIT without,
        # post_only off GTC, a live order id reused.
        if order_type is OrderType.MARKET and odd:
            price = None
        if order_type is OrderType.LIMIT and odd == 1:
            price = None
        post_only = post_only and (odd < 4 or tif is TimeInForce.GTC)
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
            )
        )

    @rule(data=st.data(), user=USERS, owner=st.booleans())
    def cancel(self, data, user, owner):
        order_id = data.draw(st.sampled_from(self.ids)) if self.ids else 999
        resting = self.heap.order(order_id)
        if owner and resting is not None:
            user = resting.user_id
        self.both(Cancel(order_id=order_id, user_id=user, symbol=SYMBOL))

    @rule(
        data=st.data(),
        price=st.one_of(st.none(), PRICES),
        quantity=st.one_of(st.none(), QUANTITIES),
    )
    def replace(self, data, price, quantity):
        order_id = data.draw(st.sampled_from(self.ids)) if self.ids else 999
        resting = self.heap.order(order_id)
        user = resting.user_id if resting is not None else "alice"
        self.both(
            Replace(order_id=order_id, user_id=user, symbol=SYMBOL, price=price, quantity=quantity)
        )

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
        assert self.heap.seq == self.reference.seq
        assert self.heap.last_price == self.reference.last_price


BookMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookMatchesReference = BookMachine.TestCase
