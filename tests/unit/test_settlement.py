"""Settlement keeps money conserved: random trading through the real book, with holds
taken the way the router takes them, must never create or lose a unit of any asset,
never drive a balance negative, and leave every user's locked funds equal to what
their resting orders and untriggered stops need. Stops (and their cascades), GTD expiry
and cancel-all are in the mix. With fees, the fee account joins the users: per asset, the
users and the fee account together hold what was funded, and the fee account holds
exactly the fees the trades charged less the rebates they paid."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from api.order_gateway import hold_for
from schema.fees import FEE_ACCOUNT, fee_asset
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
    Trade,
)
from schema.orders import OrderStatus, hold
from schema.symbols import MAX_FEE_BPS, SymbolSpec
from workers.book import OrderBook
from workers.settlement import Settlement, SettlementError

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
            return command.side, hold_for(self.spec, command)[1]
        if isinstance(command, Replace):
            # The REPLACE script sizes the hold from the order record: a resting order's, or
            # an untriggered STOP_LIMIT's (the book refuses that one: STOP_NOT_REPLACEABLE).
            order, stop = self.book.order(command.order_id), self.book.stop(command.order_id)
            if order is not None:
                side = Side.BUY if order in self.book.resting(Side.BUY) else Side.SELL
                price, remaining = order.price, order.remaining
            elif stop is not None and stop.type is OrderType.STOP_LIMIT:
                side, price, remaining = stop.side, stop.price, stop.quantity
            else:
                return None, 0
            quantity = remaining if command.quantity is None else command.quantity
            price = price if command.price is None else command.price
            return side, price * quantity if side is Side.BUY else quantity
        return None, 0

    def submit(self, command) -> list:
        spec = self.spec
        side, hold = self.hold_for(command)
        asset = spec.quote if side is Side.BUY else spec.base
        if hold < 0 or (hold and self.available[(command.user_id, asset)] < hold):
            return []  # the router refuses it: insufficient balance or nonsense
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
        return events

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
        for stop in self.book.stops():  # held from placement as the order each becomes
            asset = self.spec.quote if stop.side is Side.BUY else self.spec.base
            needed[(stop.user_id, asset)] += hold(
                stop.side, stop.type, stop.price, stop.protection_price, stop.quantity
            )
        assert self.locked == needed
        assert self.database == {k: [self.available[k], self.locked[k]] for k in self.locked}


PRICES = st.integers(980, 1020)  # mostly inside the band (950..1050 at first): trades, triggers
EXPIRIES = st.one_of(st.none(), st.integers(1, 30))  # None: GTC, else GTD at that clock
limits = st.builds(
    lambda user, side, price, qty, tif, stp, expiry: Place(
        order_id=0,
        user_id=user,
        symbol="BTC-USD",
        side=side,
        price=price,
        quantity=qty,
        time_in_force=tif if expiry is None else TimeInForce.GTD,
        self_trade=stp,
        expire_at_ms=expiry,
    ),
    st.sampled_from(USERS),
    st.sampled_from(Side),
    PRICES,
    st.integers(1, 40),
    st.sampled_from([TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
    st.sampled_from(SelfTrade),
    EXPIRIES,
)
markets = st.builds(
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
)
# Stops: a STOP_MARKET buy is held at its protection price, as the API sets it.
stops = st.builds(
    lambda user, side, kind, stop, price, qty, tif, stp, expiry: Place(
        order_id=0,
        user_id=user,
        symbol="BTC-USD",
        side=side,
        type=kind,
        stop_price=stop,
        price=price if kind is OrderType.STOP_LIMIT else None,
        quantity=qty,
        time_in_force=tif if expiry is None else TimeInForce.GTD,
        self_trade=stp,
        protection_price=1050 if kind is OrderType.STOP_MARKET and side is Side.BUY else None,
        expire_at_ms=expiry,
    ),
    st.sampled_from(USERS),
    st.sampled_from(Side),
    st.sampled_from([OrderType.STOP_LIMIT, OrderType.STOP_MARKET]),
    PRICES,
    PRICES,
    st.integers(1, 40),
    st.sampled_from([TimeInForce.GTC, TimeInForce.IOC]),
    st.sampled_from(SelfTrade),
    EXPIRIES,
)
# one_of picks a branch evenly: places twice, so that books fill, trades print, stops fire
commands = st.one_of(
    limits,
    limits,
    markets,
    stops,
    stops,
    st.tuples(st.just("cancel"), st.integers(1, 30)),
    st.tuples(
        st.just("replace"),
        st.integers(1, 30),
        st.one_of(st.none(), PRICES),
        st.one_of(st.none(), st.integers(1, 40)),
    ),
    st.tuples(st.just("expire"), st.integers(1, 5)),  # the clock moves on this much
    st.tuples(st.just("cancel_all"), st.sampled_from(USERS)),
)


REPLACE_WITHOUT_CHANGE = [
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.BUY, price=950, quantity=1),
    ("replace", 1, None, None),  # rejected: its hold goes back, the order keeps its own
]


# A cascade: carol's buy trades at 1005 and sets off bob's STOP_LIMIT buy, which buys at
# 1010 and sets off his STOP_MARKET buy, which buys up the rest. Carol's sell stop waits,
# until the clock passes its expiry; then alice cancels what is left of her asks.
CASCADE = [
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.SELL, price=1005, quantity=1),
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.SELL, price=1010, quantity=5),
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.SELL, price=1020, quantity=5),
    Place(order_id=0, user_id="alice", symbol="BTC-USD", side=Side.SELL, price=1030, quantity=5),
    Place(order_id=0, user_id="bob", symbol="BTC-USD", side=Side.BUY, type=OrderType.STOP_LIMIT,
          stop_price=1005, price=1010, quantity=5),
    Place(order_id=0, user_id="bob", symbol="BTC-USD", side=Side.BUY, type=OrderType.STOP_MARKET,
          stop_price=1010, quantity=8, protection_price=1050, time_in_force=TimeInForce.GTD,
          expire_at_ms=9),
    Place(order_id=0, user_id="carol", symbol="BTC-USD", side=Side.SELL,
          type=OrderType.STOP_LIMIT, stop_price=990, price=990, quantity=3,
          time_in_force=TimeInForce.GTD, expire_at_ms=4),
    Place(order_id=0, user_id="carol", symbol="BTC-USD", side=Side.BUY, price=1005, quantity=1),
    ("expire", 5),
    ("cancel_all", "alice"),
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(commands, min_size=5, max_size=60))
@example(REPLACE_WITHOUT_CHANGE)
@example(CASCADE)
def test_money_is_conserved_and_locks_match_resting_orders(script):
    _run(Exchange(), script)


def _run(exchange: Exchange, script, tiers: dict[str, tuple[int, int]] | None = None) -> None:
    """Number the places, aim cancels and replaces at their orders' users, give each place
    its user's fee tier (if any), and check the exchange after every command."""
    for number, item in enumerate(script, 1):
        exchange.submit(_command(exchange, number, item, tiers))
        exchange.check()
    exchange.book.validate()


def _command(exchange: Exchange, number: int, item, tiers: dict | None = None):
    if isinstance(item, Place):
        fields = {**_fields(item), "order_id": number}
        tier = (tiers or {}).get(item.user_id)
        if tier is not None:
            fields["maker_fee_bps"], fields["taker_fee_bps"] = tier
        return Place(**fields)
    if item[0] == "expire":
        return Expire(symbol="BTC-USD", now_ms=exchange.book.now_ms + item[1])
    if item[0] == "cancel_all":
        return CancelAll(user_id=item[1], symbol="BTC-USD")
    order = exchange.book.order(item[1]) or exchange.book.stop(item[1])
    user = order.user_id if order is not None else USERS[0]
    if item[0] == "cancel":
        return Cancel(order_id=item[1], user_id=user, symbol="BTC-USD")
    return Replace(
        order_id=item[1], user_id=user, symbol="BTC-USD", price=item[2], quantity=item[3]
    )


def test_the_cascade_example_triggers_a_cascade():
    """The example above does what it says: both of bob's stops trigger, one after the
    other, carol's expires, and the cancel-all takes alice's last ask."""
    exchange = Exchange()
    kinds = []
    for number, item in enumerate(CASCADE, 1):
        kinds.append([type(e).__name__ for e in exchange.submit(_command(exchange, number, item))])
        exchange.check()
    assert kinds[7].count("Triggered") == 2
    assert kinds[8] == ["Canceled"] and not exchange.book.stops()
    assert kinds[9] == ["Canceled"] and not exchange.book.resting(Side.SELL)


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


# -- stops, expiry and cancel-all in a denser flow ------------------------------------------


def _random_command(rng, exchange: Exchange, number: int):
    """Places near the last price on both sides, stops just beyond it, and now and then a
    cancel, an expiry or a cancel-all: Hypothesis's simplest values rarely cross."""
    user, side = rng.choice(USERS), rng.choice(list(Side))
    last = exchange.book.reference_price or 1000
    roll = rng.random()
    if roll < 0.45:
        gtd = rng.random() < 0.2
        return Place(order_id=number, user_id=user, symbol="BTC-USD", side=side,
                     price=last + rng.randint(-6, 6), quantity=rng.randint(1, 12),
                     time_in_force=TimeInForce.GTD if gtd else rng.choice(list(TimeInForce)[:3]),
                     expire_at_ms=exchange.book.now_ms + rng.randint(1, 20) if gtd else None,
                     self_trade=rng.choice(list(SelfTrade)))  # fmt: skip
    if roll < 0.8:
        kind = rng.choice([OrderType.STOP_LIMIT, OrderType.STOP_MARKET])
        beyond = rng.randint(1, 8) * (1 if side is Side.BUY else -1)
        limit = last + beyond + rng.randint(-3, 3) if kind is OrderType.STOP_LIMIT else None
        market_buy = kind is OrderType.STOP_MARKET and side is Side.BUY
        return Place(order_id=number, user_id=user, symbol="BTC-USD", side=side, type=kind,
                     stop_price=last + beyond, price=limit, quantity=rng.randint(1, 12),
                     time_in_force=rng.choice([TimeInForce.GTC, TimeInForce.IOC]),
                     protection_price=(exchange.book.reference_price or 1000) + 40
                     if market_buy else None)  # fmt: skip
    if roll < 0.92:
        return _command(exchange, number, ("cancel", rng.randint(max(1, number - 20), number)))
    if roll < 0.97:
        return _command(exchange, number, ("expire", rng.randint(1, 4)))
    return _command(exchange, number, ("cancel_all", user))


# Without fees, and with a taker fee and a maker rebate (the fee account in every check).
FEE_SPEC = SymbolSpec(symbol="BTC-USD", base="BTC", quote="USD", band_bps=500,
                      reference_price=1000, maker_fee_bps=-2, taker_fee_bps=25)  # fmt: skip


@pytest.mark.parametrize("spec", [SPEC, FEE_SPEC], ids=["no fees", "fees"])
def test_a_dense_flow_of_stops_conserves_money_through_cascades(spec: SymbolSpec):
    import random

    triggered, cascades, expired = 0, 0, 0
    for seed in range(60):
        rng, exchange = random.Random(seed), Exchange(spec)
        for number in range(1, 120):
            events = exchange.submit(_random_command(rng, exchange, number))
            exchange.check()
            fired = sum(type(e).__name__ == "Triggered" for e in events)
            triggered += fired
            cascades += fired >= 2
            expired += sum(getattr(e, "reason", None) == "EXPIRED" for e in events)
        exchange.book.validate()
    # The flow did what it is for: stops fired, some in cascades, GTD orders expired.
    # (805 triggered, 182 cascades, 67 expired when written)
    assert triggered > 400 and cascades > 90 and expired > 30, (triggered, cascades, expired)


def test_a_stop_waits_untriggered_keeping_its_hold_then_runs_as_an_incoming_order():
    book, placed = OrderBook(SPEC), Settlement()
    stop = Place(order_id=1, user_id="bob", symbol="BTC-USD", side=Side.BUY,
                 type=OrderType.STOP_LIMIT, stop_price=1010, price=1020, quantity=4)  # fmt: skip
    _settle(book, stop, 1020 * 4, placed)
    assert placed.orders[1].status is OrderStatus.UNTRIGGERED
    assert placed.balances == {}  # all of the hold stays locked, none moves
    ran = Settlement()
    _settle(book, _place(2, "alice", Side.SELL, 1010, 1), 1, ran)
    _settle(book, _place(3, "carol", Side.BUY, 1010, 1), 1010, ran)  # prints 1010: triggers
    state = ran.orders[1]
    # nothing to buy: it rests as its limit order, holding exactly that, and knows it fired
    assert (state.status, state.triggered, state.remaining) == (OrderStatus.OPEN, True, 4)
    assert ran.balances.get(("bob", "USD"), [0, 0]) == [0, 0]
    assert book.order(1) is not None and book.stop(1) is None


def test_an_untriggered_stop_market_buy_gives_back_what_its_protection_price_held():
    book = OrderBook(SPEC)
    stop = Place(order_id=1, user_id="bob", symbol="BTC-USD", side=Side.BUY,
                 type=OrderType.STOP_MARKET, stop_price=1010, quantity=4,
                 protection_price=1050)  # fmt: skip
    _settle(book, stop, 1050 * 4, Settlement())
    canceled = Settlement()
    _settle(book, Cancel(order_id=1, user_id="bob", symbol="BTC-USD"), 0, canceled)
    assert canceled.balances == {("bob", "USD"): [4200, -4200]}
    assert (canceled.orders[1].status, canceled.orders[1].reason) == (OrderStatus.CANCELED, "USER")
    assert canceled.orders[1].finished and not canceled.orders[1].triggered


def test_an_expiry_and_a_cancel_all_release_and_name_no_order_of_their_own():
    book, batch = OrderBook(SPEC), Settlement()
    gtd = _place(1, "bob", Side.BUY, 990, 2, time_in_force=TimeInForce.GTD, expire_at_ms=5)
    _settle(book, gtd, 1980, batch)
    _settle(book, _place(2, "bob", Side.SELL, 1030, 3), 3, batch)
    _settle(book, Expire(symbol="BTC-USD", now_ms=5), 0, batch)
    _settle(book, CancelAll(user_id="bob", symbol="BTC-USD"), 0, batch)
    assert (batch.orders[1].status, batch.orders[1].reason) == (OrderStatus.CANCELED, "EXPIRED")
    assert (batch.orders[2].status, batch.orders[2].reason) == (OrderStatus.CANCELED, "USER")
    assert 0 not in batch.orders
    assert batch.balances == {("bob", "USD"): [1980, -1980], ("bob", "BTC"): [3, -3]}


def test_events_that_disagree_with_the_book_about_the_incoming_order_are_a_bug():
    book = OrderBook(SPEC)
    place = _place(1, "bob", Side.BUY, 990, 2)
    events = book.apply(place)
    with pytest.raises(SettlementError, match="rests as"):
        Settlement().add(SPEC, place, Side.BUY, 1980, events, (990, 1))
