"""Settlement keeps money conserved: random trading through the real book, with holds
taken the way the router takes them, must never create or lose a unit of any asset,
never drive a balance negative, and leave every user's locked funds equal to what
their resting orders need."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schema.messages import Cancel, OrderType, Place, Replace, SelfTrade, Side, TimeInForce
from schema.orders import OrderStatus
from schema.symbols import SymbolSpec
from workers.book import OrderBook
from workers.settlement import Settlement

SPEC = SymbolSpec(
    symbol="BTC-USD", base="BTC", quote="USD", band_bps=500, reference_price=1000, lot=1
)
USERS = ["alice", "bob", "carol"]
FUNDS = {"BTC": 400, "USD": 400_000}


class Exchange:
    """The book plus a toy router that holds funds exactly as the real one does."""

    def __init__(self) -> None:
        self.book = OrderBook(SPEC)
        self.available = {(u, a): n for u in USERS for a, n in FUNDS.items()}
        self.locked = {(u, a): 0 for u in USERS for a in FUNDS}
        # The database's view: funded, then only what settlements say, holds included.
        self.database = {(u, a): [n, 0] for u in USERS for a, n in FUNDS.items()}

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
        side, hold = self.hold_for(command)
        asset = SPEC.quote if side is Side.BUY else SPEC.base
        if hold < 0 or (hold and self.available[(command.user_id, asset)] < hold):
            return  # the router refuses it: insufficient balance or nonsense
        if hold:
            self.available[(command.user_id, asset)] -= hold
            self.locked[(command.user_id, asset)] += hold
        events = self.book.apply(command)
        resting = self.book.order(command.order_id)
        settlement = Settlement()
        settlement.add(
            SPEC,
            command,
            side,
            hold,
            events,
            None if resting is None else (resting.price, resting.remaining),
        )
        for (user, asset), (d_avail, d_locked) in settlement.balances.items():
            self.available[(user, asset)] += d_avail
            self.locked[(user, asset)] += d_locked
        for key, (d_avail, d_locked) in settlement.with_holds().items():
            self.database[key][0] += d_avail
            self.database[key][1] += d_locked

    def check(self) -> None:
        for asset, per_user in FUNDS.items():
            total = sum(self.available[(u, asset)] + self.locked[(u, asset)] for u in USERS)
            assert total == per_user * len(USERS), f"{asset} not conserved"
        assert min(self.available.values()) >= 0 and min(self.locked.values()) >= 0
        needed = {key: 0 for key in self.locked}
        for side in Side:
            for order in self.book.resting(side):
                if side is Side.BUY:
                    needed[(order.user_id, SPEC.quote)] += order.price * order.remaining
                else:
                    needed[(order.user_id, SPEC.base)] += order.remaining
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
    exchange = Exchange()
    for number, item in enumerate(script, 1):
        if isinstance(item, Place):
            command = Place(**{**_fields(item), "order_id": number})
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
