"""The batcher's sequencer, alone: each symbol's events admitted in seq order whichever
entry brings them; gaps wait, repeats are dropped, an entry goes whole or not at all."""

from __future__ import annotations

from batcher.sequencing import Gap, Sequencer
from schema.codes import CancelReason, RejectReason
from schema.messages import Action, Canceled, Event, Rejected, Side


def ev(symbol: str, seq: int, order_id: int = 1) -> Event:
    return Canceled(symbol, seq, order_id, "alice", Side.BUY, 100, 1, CancelReason.USER)


def outside(symbol: str = "AAPL") -> Event:
    # seq 0: an event no book stamped (a STALE_ROUTE or UNKNOWN_SYMBOL rejection)
    return Rejected(symbol, 0, 9, "alice", Action.PLACE, RejectReason.STALE_ROUTE)


def test_a_new_symbol_starts_at_seq_1_and_advances():
    sequencer, before = Sequencer(), {}
    events = [ev("AAPL", 1), ev("AAPL", 2), ev("AAPL", 3)]
    assert sequencer.admit(events, before) is events
    assert sequencer.applied == {"AAPL": 3}
    assert before == {"AAPL": 0}
    assert sequencer.admit([ev("AAPL", 4)], before) == [ev("AAPL", 4)]
    assert before == {"AAPL": 0}  # the seq before the flush, kept from the first admit


def test_a_gap_waits_and_changes_nothing():
    sequencer = Sequencer()
    sequencer.load({"AAPL": 5})
    before: dict[str, int | None] = {}
    assert sequencer.admit([ev("AAPL", 8)], before) == Gap("AAPL", 6, 8)
    assert sequencer.applied == {"AAPL": 5} and before == {}
    assert sequencer.admit([ev("AAPL", 6), ev("AAPL", 7)], before) is not None
    assert sequencer.admit([ev("AAPL", 8)], before) == [ev("AAPL", 8)]
    assert sequencer.applied == {"AAPL": 8}


def test_a_gap_within_an_entry_waits_too():
    sequencer = Sequencer()
    assert sequencer.admit([ev("AAPL", 1), ev("AAPL", 3)], {}) == Gap("AAPL", 2, 3)
    assert sequencer.applied == {}


def test_an_entry_goes_whole_or_not_at_all():
    sequencer = Sequencer()
    sequencer.load({"AAPL": 1, "MSFT": 1})
    before: dict[str, int | None] = {}
    entry = [ev("AAPL", 2), ev("MSFT", 3)]  # AAPL could go, MSFT misses seq 2
    assert sequencer.admit(entry, before) == Gap("MSFT", 2, 3)
    assert sequencer.applied == {"AAPL": 1, "MSFT": 1} and before == {}


def test_repeats_are_dropped_counted_and_the_rest_applies():
    sequencer = Sequencer()
    sequencer.load({"AAPL": 2})
    admitted = sequencer.admit([ev("AAPL", 1), ev("AAPL", 2), ev("AAPL", 3)], {})
    assert admitted == [ev("AAPL", 3)]
    assert sequencer.refused == 2
    assert sequencer.last_refused == ("AAPL", 2, 2)
    assert sequencer.applied == {"AAPL": 3}


def test_each_symbol_keeps_its_own_order_when_interleaved():
    sequencer, before = Sequencer(), {}
    entry = [ev("AAPL", 1), ev("MSFT", 1), ev("AAPL", 2), ev("MSFT", 2), ev("AAPL", 3)]
    assert sequencer.admit(entry, before) is entry
    assert sequencer.applied == {"AAPL": 3, "MSFT": 2}
    assert before == {"AAPL": 0, "MSFT": 0}
    assert sequencer.admit([ev("MSFT", 4)], before) == Gap("MSFT", 3, 4)


def test_events_outside_any_book_always_go():
    sequencer = Sequencer()
    sequencer.load({"AAPL": 7})
    entry = [outside(), outside("NEW")]
    assert sequencer.admit(entry, {}) is entry
    assert sequencer.applied == {"AAPL": 7} and sequencer.refused == 0


def test_a_symbol_of_unknown_progress_starts_where_its_events_are():
    sequencer = Sequencer()
    sequencer.load({"AAPL": None})
    before: dict[str, int | None] = {}
    assert sequencer.admit([ev("AAPL", 40), ev("AAPL", 41)], before) is not None
    assert sequencer.applied == {"AAPL": 41} and before == {"AAPL": None}
    assert not sequencer.unknown
    assert sequencer.admit([ev("AAPL", 43)], before) == Gap("AAPL", 42, 43)


def test_an_unknown_symbol_gets_one_baseline_per_entry():
    sequencer = Sequencer()
    sequencer.load({"AAPL": None})
    assert sequencer.admit([ev("AAPL", 40), ev("MSFT", 1), ev("AAPL", 45)], {}) == Gap(
        "AAPL", 41, 45
    )


def test_undo_forgets_what_an_uncommitted_flush_admitted():
    sequencer = Sequencer()
    sequencer.load({"AAPL": 3, "OLD": None})
    before: dict[str, int | None] = {}
    sequencer.admit([ev("AAPL", 4), ev("OLD", 10), ev("MSFT", 1)], before)
    assert before == {"AAPL": 3, "OLD": None, "MSFT": 0}
    sequencer.undo(before)
    assert sequencer.applied == {"AAPL": 3, "MSFT": 0}
    assert sequencer.unknown == {"OLD"}
    assert sequencer.admit([ev("AAPL", 4)], {}) == [ev("AAPL", 4)]


def test_load_never_moves_a_symbol_back():
    sequencer = Sequencer()
    sequencer.admit([ev("AAPL", 1), ev("AAPL", 2)], {})
    sequencer.load({"AAPL": 1, "MSFT": None})
    assert sequencer.applied == {"AAPL": 2}
    assert sequencer.unknown == {"MSFT"}
    sequencer.load({"AAPL": None, "MSFT": 5})
    assert sequencer.applied == {"AAPL": 2, "MSFT": 5}
    assert sequencer.unknown == set()
