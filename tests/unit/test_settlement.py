"""Settlement keeps money conserved: random trading through the real book, with holds
taken the way the router takes them, must never create or lose a unit of any asset,
never drive a balance negative, and leave every user's locked funds equal to what
their resting orders need. With fees, the fee account joins the users: per asset, the
users and the fee account together hold what was funded, and the fee account holds
exactly the fees the trades charged less the rebates they paid."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schema.fees import FEE_ACCOUNT, fee_asset
from schema.messages import (
    Cancel,
    OrderType,
    Place,
    Replace,
    SelfTrade,
    Side,
    TimeInForce,
    Trade,
)
from schema.orders import OrderStatus
from schema.symbols import MAX_FEE_BPS, SymbolSpec
from workers.book import OrderBook
from workers.settlement import Settlement

SPEC = SymbolSpec(
    symbol="BTC-USD", base="BTC", quote="USD", band_bps=500, reference_price=1000, lot=1
)
USERS = ["alice", "bob", "carol"]
FUNDS = {"BTC": 400, "USD": 400_000}
ACCOUNTS = [*USERS, FEE_ACCOUNT]


class Exchange:
    """The book plus a toy router that holds funds exactly as the real one does."""

    def __init__(self, spec: SymbolSpec = SPEC) -> None:
        self.spec = spec
        self.book = OrderBook(spec)
        self.available = {(u, a): FUNDS[a] if u in USERS else 0 for u in ACCOUNTS for a in FUNDS}
        self.locked = {(u, a): 0 for u in ACCOUNTS for a in FUNDS}
        # The database's view: funded, then only what settlements say, holds included.
        self.database = {k: [n, 0] for k, n in self.available.items()}
        self.fees = dict.fromkeys(FUNDS, 0)  # per asset: the trades' fees less their rebates

    def hold_for(self, command) -> tuple[Side | None, int]:
        if isinstance(command, Place):
            if command.side is Side.SELL:
                return Side.SELL, command.quantity
            price = command.price if command.type is OrderType.LIMIT else command.protection_price
            return Side.BUY, (price or 0) * command.quantity
        if isinstance(command, Replace):
            order = self.book.order(command.order_id)
            if order is None:
                return None, 0
            side = Side.BUY if order in self.book.resting(Side.BUY) else Side.SELL
            quantity = order.remaining if command.quantity is None else command.quantity
            price = order.price if command.price is None else command.price
            return side, price * quantity if side is Side.BUY else quantity
        return None, 0

    def submit(self, command) -> None:
        spec = self.spec
        side, hold = self.hold_for(command)
        asset = spec.quote if side is Side.BUY else spec.base
        if hold < 0 or (hold and self.available[(command.user_id, asset)] < hold):
            return  # the router refuses it: insufficient balance or nonsense
        if hold:
            self.available[(command.user_id, asset)] -= hold
            self.locked[(command.user_id, asset)] += hold
        events = self.book.apply(command)
        resting = self.book.order(command.order_id)
        settlement = Settlement()
        settlement.add(
            spec,
            command,
            side,
            hold,
            events,
            None if resting is None else (resting.price, resting.remaining),
        )
        for event in events:
            if isinstance(event, Trade):
                maker_side = Side.SELL if event.taker_side is Side.BUY else Side.BUY
                self.fees[fee_asset(spec, event.taker_side)] += event.taker_fee
                self.fees[fee_asset(spec, maker_side)] += event.maker_fee
        for (user, asset), (d_avail, d_locked) in settlement.balances.items():
            self.available[(user, asset)] += d_avail
            self.locked[(user, asset)] += d_locked
        for key, (d_avail, d_locked) in settlement.with_holds().items():
            self.database[key][0] += d_avail
            self.database[key][1] += d_locked

    def check(self) -> None:
        for asset, per_user in FUNDS.items():
            total = sum(self.available[(u, asset)] + self.locked[(u, asset)] for u in ACCOUNTS)
            assert total == per_user * len(USERS), f"{asset} not conserved"
            assert self.available[(FEE_ACCOUNT, asset)] == self.fees[asset]
            assert self.locked[(FEE_ACCOUNT, asset)] == 0
        users = [(u, a) for u in USERS for a in FUNDS]
        assert min(self.available[k] for k in users) >= 0
        assert min(self.locked[k] for k in users) >= 0
        needed = {key: 0 for key in self.locked}
        for side in Side:
            for order in self.book.resting(side):
                if side is Side.BUY:
                    needed[(order.user_id, self.spec.quote)] += order.price * order.remaining
                else:
                    needed[(order.user_id, self.spec.base)] += order.remaining
        assert self.locked == needed
        assert self.database == {k: [self.available[k], self.locked[k]] for k in self.locked}


PRICES = st.integers(940, 1060)
commands = st.one_of(
    st.builds(
        lambda user, side, price, qty, tif, stp: Place(
            order_id=0,
            user_id=user,
            symbol="BTC-USD",
            side=side,
            price=price,
            quantity=qty,
            time_in_force=tif,
            self_trade=stp,
        ),
        st.sampled_from(USERS),
        st.sampled_from(Side),
        PRICES,
        st.integers(1, 40),
        st.sampled_from(TimeInForce),
        st.sampled_from(SelfTrade),
    ),
    st.builds(
        lambda user, side, qty, protection: Place(
            order_id=0,
            user_id=user,
            symbol="BTC-USD",
            side=side,
            type=OrderType.MARKET,
            quantity=qty,
            time_in_force=TimeInForce.IOC,
            protection_price=protection if side is Side.BUY else None,
        ),
        st.sampled_from(USERS),
        st.sampled_from(Side),
        st.integers(1, 40),
        PRICES,
    ),
    st.tuples(st.just("cancel"), st.integers(1, 60)),
    st.tuples(
        st.just("replace"),
        st.integers(1, 60),
        st.one_of(st.none(), PRICES),
        st.one_of(st.none(), st.integers(1, 40)),
    ),
)


REPLACE_WITHOUT_CHANGE = [
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.BUY, price=950, quantity=1),
    ("replace", 1, None, None),  # rejected: its hold goes back, the order keeps its own
]


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=60))
@example(REPLACE_WITHOUT_CHANGE)
def test_money_is_conserved_and_locks_match_resting_orders(script):
    _run(Exchange(), script)


def _run(exchange: Exchange, script, tiers: dict[str, tuple[int, int]] | None = None) -> None:
    """Number the places, aim cancels and replaces at their orders' users, give each place
    its user's fee tier (if any), and check the exchange after every command."""
    for number, item in enumerate(script, 1):
        if isinstance(item, Place):
            fields = {**_fields(item), "order_id": number}
            tier = (tiers or {}).get(item.user_id)
            if tier is not None:
                fields["maker_fee_bps"], fields["taker_fee_bps"] = tier
            command = Place(**fields)
        else:
            order = exchange.book.order(item[1])
            user = order.user_id if order is not None else USERS[0]
            if item[0] == "cancel":
                command = Cancel(order_id=item[1], user_id=user, symbol="BTC-USD")
            else:
                command = Replace(
                    order_id=item[1],
                    user_id=user,
                    symbol="BTC-USD",
                    price=item[2],
                    quantity=item[3],
                )
        exchange.submit(command)
        exchange.check()


# Valid (maker, taker) pairs: the taker's 0..100%, the maker's from a rebate as large as the
# taker's fee up to 100%; the small rates exchanges use drawn as often as the whole range.
_TAKER = st.one_of(st.integers(0, 50), st.integers(0, MAX_FEE_BPS))
RATES = _TAKER.flatmap(
    lambda taker: st.tuples(
        st.one_of(st.integers(-taker, min(taker, 50)), st.integers(-taker, MAX_FEE_BPS)),
        st.just(taker),
    )
)
# Everyone takes and makes at a rebate: buyers take, so the fee account gains base and pays
# its rebates in quote - it ends short of USD, and the assets are conserved all the same.
REBATES_IN_QUOTE = [
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.SELL, price=1000, quantity=7),
    Place(order_id=0, user_id="bob", symbol="BTC-USD", side=Side.BUY, price=1000, quantity=7),
]


@settings(max_examples=300, deadline=None)
@given(RATES, st.dictionaries(st.sampled_from(USERS), RATES), st.lists(commands, max_size=60))
@example((-5, 5), {}, REBATES_IN_QUOTE)
@example((10_000, 10_000), {"carol": (-3, 3)}, REBATES_IN_QUOTE)
def test_settlement_with_fees_conserves_every_asset(rates, tiers, script):
    maker, taker = rates
    spec = SymbolSpec(
        symbol="BTC-USD",
        base="BTC",
        quote="USD",
        band_bps=500,
        reference_price=1000,
        maker_fee_bps=maker,
        taker_fee_bps=taker,
    )
    _run(Exchange(spec), script, tiers)


def test_each_side_pays_its_fee_in_what_it_receives_and_the_fee_account_gets_it():
    spec = SymbolSpec(symbol="BTC-USD", base="BTC", quote="USD", maker_fee_bps=-2, taker_fee_bps=30)
    exchange = Exchange(spec)
    exchange.submit(Place(order_id=1, user_id="alice", symbol="BTC-USD", side=Side.SELL,
                          price=1_000, quantity=100))  # fmt: skip
    exchange.submit(Place(order_id=2, user_id="bob", symbol="BTC-USD", side=Side.BUY,
                          price=1_000, quantity=100))  # fmt: skip
    exchange.check()
    # bob took: 30 bps of the 100 BTC he receives, 0.3 -> 1 (rounded up); alice made: a
    # rebate of 2 bps of the 100_000 USD she receives, 20.
    assert exchange.available[("bob", "BTC")] == 400 + 100 - 1
    assert exchange.available[("bob", "USD")] == 400_000 - 100_000
    assert exchange.available[("alice", "USD")] == 400_000 + 100_000 + 20
    assert exchange.available[("alice", "BTC")] == 400 - 100
    assert exchange.available[(FEE_ACCOUNT, "BTC")] == 1
    assert exchange.available[(FEE_ACCOUNT, "USD")] == -20  # the rebate, paid in quote


def _fields(struct) -> dict:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}


# -- statuses: what SETTLE writes, as the transition table says ----------------------------


def _settle(book: OrderBook, command, hold: int, settlement: Settlement) -> None:
    side = command.side if isinstance(command, Place) else None
    if isinstance(command, Replace):
        side = Side.BUY  # the only replaces here are of buys
    events = book.apply(command)
    resting = book.order(command.order_id)
    after = None if resting is None else (resting.price, resting.remaining)
    settlement.add(SPEC, command, side, hold, events, after)


def _place(order_id: int, user: str, side: Side, price: int, quantity: int, **kw) -> Place:
    return Place(order_id=order_id, user_id=user, symbol="BTC-USD", side=side, price=price,
                 quantity=quantity, **kw)  # fmt: skip


def test_statuses_of_one_batch_come_from_the_table():
    book, batch = OrderBook(SPEC), Settlement()
    _settle(book, _place(1, "bob", Side.SELL, 1000, 5), 5, batch)
    _settle(book, _place(2, "alice", Side.BUY, 1000, 3), 3000, batch)
    # 1: accepted, then partly filled; 2: accepted and filled
    assert batch.orders[1].status is OrderStatus.PARTIALLY_FILLED
    assert batch.orders[2].status is OrderStatus.FILLED
    assert (batch.orders[1].finished, batch.orders[2].finished) == (False, True)
    assert batch.orders[1].remaining == 2 and batch.orders[2].remaining == 0


def test_a_batch_that_did_not_see_the_accept_starts_from_open():
    book = OrderBook(SPEC)
    _settle(book, _place(1, "bob", Side.SELL, 1000, 5), 5, Settlement())
    later = Settlement()  # the maker's accept was settled by an earlier batch
    _settle(book, _place(2, "alice", Side.BUY, 1000, 2), 2000, later)
    maker = later.orders[1]
    assert (maker.status, maker.remaining, maker.filled) == (OrderStatus.PARTIALLY_FILLED, None, 2)
    last = Settlement()
    _settle(book, Cancel(order_id=1, user_id="bob", symbol="BTC-USD"), 0, last)
    assert (last.orders[1].status, last.orders[1].reason) == (OrderStatus.CANCELED, "USER")
    assert last.orders[1].finished and last.orders[1].settled


def test_a_rejected_place_is_rejected_and_a_rejected_cancel_changes_no_status():
    book, batch = OrderBook(SPEC), Settlement()
    _settle(book, _place(1, "alice", Side.BUY, 5000, 1), 5000, batch)  # far out of band
    _settle(book, Cancel(order_id=9, user_id="alice", symbol="BTC-USD"), 0, batch)
    assert batch.orders[1].status is OrderStatus.REJECTED and batch.orders[1].finished
    assert 9 not in batch.orders


def test_a_replace_alone_leaves_the_status_to_the_record():
    book = OrderBook(SPEC)
    _settle(book, _place(1, "alice", Side.BUY, 990, 4), 3960, Settlement())
    batch = Settlement()
    _settle(book, Replace(order_id=1, user_id="alice", symbol="BTC-USD", quantity=2), 1980, batch)
    state = batch.orders[1]
    assert (state.status, state.remaining, state.settled, state.finished) == (None, 2, True, False)
