"""The batcher's row changes, alone: one flush's events aggregated per order, statuses
as the transition table says, balance deltas and transfers summed."""

from __future__ import annotations

import pytest

from batcher.changes import Changes
from schema.codes import CancelReason, RejectReason
from schema.messages import (
    Accepted,
    Action,
    Canceled,
    Done,
    OrderType,
    Rejected,
    Replaced,
    Side,
    TimeInForce,
    Trade,
    Triggered,
)
from schema.orders import (
    TERMINAL,
    InvalidTransition,
    OrderEvent,
    OrderStatus,
    advance,
    next_status,
)

S = "AAPL"


def accepted(seq: int, order_id: int, quantity: int = 10, price: int = 100) -> Accepted:
    return Accepted(
        S, seq, order_id, "alice", Side.BUY, OrderType.LIMIT, price, quantity, TimeInForce.GTC,
        False, None,
    )  # fmt: skip


def trade(seq: int, maker: int, taker: int, quantity: int, price: int = 100) -> Trade:
    return Trade(S, seq, price, quantity, maker, taker, "bob", "alice", Side.BUY)


def done(seq: int, order_id: int) -> Done:
    return Done(S, seq, order_id, "alice", Side.BUY)


def canceled(seq: int, order_id: int, reason: CancelReason = CancelReason.USER) -> Canceled:
    return Canceled(S, seq, order_id, "alice", Side.BUY, 100, 3, reason)


def test_an_order_accepted_and_filled_in_one_flush_is_one_filled_row():
    changes = Changes()
    changes.add_events([accepted(1, 7, quantity=10), trade(2, 3, 7, 4), trade(3, 4, 7, 6, 101)])
    changes.add_events([done(4, 7)])
    assert list(changes.new_orders) == [7]
    row = changes.orders[7]
    assert (row.status, row.remaining, row.filled, row.notional) == (
        OrderStatus.FILLED, 0, 10, 4 * 100 + 6 * 101
    )  # fmt: skip
    assert changes.events == 4
    assert len(changes.trades) == 2


def test_an_order_accepted_and_partly_filled_rests_partially_filled():
    changes = Changes()
    changes.add_events([accepted(1, 7, quantity=10), trade(2, 3, 7, 4)])
    row = changes.orders[7]
    assert (row.status, row.remaining, row.filled) == (OrderStatus.PARTIALLY_FILLED, 6, 4)


def test_an_order_accepted_alone_is_open_with_its_quantity():
    changes = Changes()
    changes.add_events([accepted(1, 7, quantity=10)])
    row = changes.orders[7]
    assert (row.status, row.remaining, row.filled) == (OrderStatus.OPEN, 10, 0)


def test_a_fill_of_an_order_from_an_earlier_flush_starts_from_open():
    # The maker's accept was flushed before: the row counts its remaining down itself.
    changes = Changes()
    changes.add_events([trade(5, 3, 7, 4)])
    maker = changes.orders[3]
    assert (maker.status, maker.remaining, maker.filled, maker.notional) == (
        OrderStatus.PARTIALLY_FILLED, None, 4, 400
    )  # fmt: skip
    assert not changes.new_orders


def test_done_and_canceled_of_orders_from_earlier_flushes():
    changes = Changes()
    changes.add_events([trade(5, 3, 7, 4), done(6, 3), canceled(7, 8, CancelReason.SELF_TRADE)])
    assert (changes.orders[3].status, changes.orders[3].remaining) == (OrderStatus.FILLED, 0)
    row = changes.orders[8]
    assert (row.status, row.remaining, row.reason) == (OrderStatus.CANCELED, 0, "SELF_TRADE")


def test_a_partly_filled_order_canceled_in_the_flush():
    changes = Changes()
    changes.add_events(
        [accepted(1, 7), trade(2, 3, 7, 4), canceled(3, 7, CancelReason.IOC_REMAINDER)]
    )
    row = changes.orders[7]
    assert (row.status, row.remaining, row.filled) == (OrderStatus.CANCELED, 0, 4)


def test_a_replace_sets_price_and_remaining_and_no_status():
    changes = Changes()
    changes.add_events([Replaced(S, 9, 3, "alice", Side.BUY, 105, 8, 100, 10, False)])
    row = changes.orders[3]
    assert (row.status, row.price, row.remaining) == (None, 105, 8)


def test_a_rejected_place_is_kept_apart_and_other_rejections_change_nothing():
    changes = Changes()
    place = Rejected(S, 1, 7, "alice", Action.PLACE, RejectReason.PRICE_OUT_OF_BAND)
    cancel = Rejected(S, 2, 8, "alice", Action.CANCEL, RejectReason.UNKNOWN_ORDER)
    replace = Rejected(S, 3, 9, "alice", Action.REPLACE, RejectReason.UNKNOWN_ORDER)
    changes.add_events([place, cancel, replace])
    assert changes.rejected_places == {7: place}
    assert changes.orders == {}
    assert changes.events == 3


def test_every_status_is_the_tables():
    """What each order ends as is the table's walk over its events, from where the flush
    found it: NEW for an accept, OPEN for an order accepted in an earlier flush."""
    changes = Changes()
    changes.add_events([accepted(1, 1), trade(2, 9, 1, 2), trade(3, 1, 10, 1), done(4, 9)])
    walk = next_status(next_status(next_status(OrderStatus.NEW, OrderEvent.ACCEPT),
                                   OrderEvent.FILL), OrderEvent.FILL)  # fmt: skip
    assert changes.orders[1].status is walk
    assert changes.orders[9].status is next_status(
        next_status(OrderStatus.OPEN, OrderEvent.FILL), OrderEvent.DONE
    )
    assert changes.orders[9].status in TERMINAL
    assert changes.orders[10].status is next_status(OrderStatus.OPEN, OrderEvent.FILL)


def test_an_event_the_table_forbids_is_a_bug_and_raises():
    changes = Changes()
    changes.add_events([accepted(1, 7), done(2, 7)])
    with pytest.raises(InvalidTransition):
        changes.add_events([trade(3, 7, 8, 1)])  # a filled order cannot trade again


@pytest.mark.parametrize("event", [OrderEvent.FILL, OrderEvent.DONE, OrderEvent.CANCEL])
def test_starting_an_unknown_open_order_from_open_loses_nothing(event):
    # Why a batch may start an order it has not seen from OPEN: every open status moves alike.
    assert advance(None, event) is next_status(OrderStatus.PARTIALLY_FILLED, event)
    assert advance(None, event) is next_status(OrderStatus.OPEN, event)


def test_accept_and_reject_of_an_unknown_order_start_from_new():
    assert advance(None, OrderEvent.ACCEPT) is OrderStatus.OPEN
    assert advance(None, OrderEvent.REJECT) is OrderStatus.REJECTED


# -- stops --------------------------------------------------------------------------------


def stop_accepted(seq: int, order_id: int, quantity: int = 10) -> Accepted:
    return Accepted(
        S, seq, order_id, "alice", Side.BUY, OrderType.STOP_LIMIT, 105, quantity, TimeInForce.GTC,
        False, None, 104,
    )  # fmt: skip


def triggered(seq: int, order_id: int, quantity: int = 10) -> Triggered:
    return Triggered(
        S, seq, order_id, "alice", Side.BUY, OrderType.STOP_LIMIT, 104, 105, quantity,
        TimeInForce.GTC, 104, None,
    )  # fmt: skip


def test_a_stop_accepted_waits_untriggered_with_its_whole_quantity():
    changes = Changes()
    changes.add_events([stop_accepted(1, 7)])
    row = changes.orders[7]
    assert (row.status, row.remaining, row.triggered) == (OrderStatus.UNTRIGGERED, 10, None)
    assert changes.new_orders[7].stop_price == 104


def test_a_stop_triggered_and_filled_in_its_own_flush():
    changes = Changes()
    changes.add_events([stop_accepted(1, 7), trade(2, 3, 9, 1, 104), triggered(3, 7)])
    assert (changes.orders[7].status, changes.orders[7].triggered) == (OrderStatus.OPEN, True)
    changes.add_events([trade(4, 5, 7, 4, 105)])
    row = changes.orders[7]
    assert (row.status, row.remaining, row.filled, row.triggered) == (
        OrderStatus.PARTIALLY_FILLED, 6, 4, True
    )  # fmt: skip


def test_a_stop_from_an_earlier_flush_is_triggered_from_untriggered():
    changes = Changes()
    changes.add_events([triggered(3, 7), done(4, 7)])
    row = changes.orders[7]
    assert (row.status, row.remaining, row.triggered) == (OrderStatus.FILLED, 0, True)
    assert not changes.new_orders


def test_an_untriggered_stop_canceled_later_is_canceled_and_not_triggered():
    changes = Changes()
    changes.add_events([canceled(5, 7, CancelReason.EXPIRED)])
    row = changes.orders[7]
    assert (row.status, row.reason, row.triggered) == (OrderStatus.CANCELED, "EXPIRED", None)


def test_a_stop_triggers_once():
    changes = Changes()
    changes.add_events([stop_accepted(1, 7), triggered(2, 7)])
    with pytest.raises(InvalidTransition):
        changes.add_events([triggered(3, 7)])


def test_accept_stop_and_trigger_of_an_unknown_order_start_from_new_and_untriggered():
    assert advance(None, OrderEvent.ACCEPT_STOP) is OrderStatus.UNTRIGGERED
    assert advance(None, OrderEvent.TRIGGER) is next_status(
        OrderStatus.UNTRIGGERED, OrderEvent.TRIGGER
    )
    for status in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
        with pytest.raises(InvalidTransition):
            next_status(status, OrderEvent.TRIGGER)
    with pytest.raises(InvalidTransition):  # an untriggered stop never trades
        next_status(OrderStatus.UNTRIGGERED, OrderEvent.FILL)


def test_balances_sum_per_user_and_asset_and_transfers_count_as_available():
    changes = Changes()
    changes.add_balances([("alice", "USD", -100, 100), ("bob", "USD", 50, 0)])
    changes.add_balances([("alice", "USD", 30, -100), ("alice", "AAPL", 1, 0)])
    changes.add_transfer("1-0", "bob", "USD", 1_000, "dep-1")
    changes.add_transfer("2-0", "alice", "AAPL", -1, "wd-1")
    assert changes.balances == {
        ("alice", "USD"): [-70, 0],
        ("bob", "USD"): [1_050, 0],
        ("alice", "AAPL"): [0, 0],
    }
    assert changes.ledger == [
        ("1-0", "bob", "USD", 1_000, "dep-1"),
        ("2-0", "alice", "AAPL", -1, "wd-1"),
    ]
