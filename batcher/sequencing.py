"""Each symbol's events applied in sequence order, whichever stream they come from. Pure.

A hot-shard migration moves a symbol's book to another shard; its events go on, with the
same gap-free per-symbol `seq`, in another `events:{shard}` stream. Order records do not
commute (an ACCEPTED sets OPEN and the full quantity, a later CANCELED sets CANCELED), so
the batcher must not apply the newer stream's events before the older stream's: it admits
an entry only when each of its events is its symbol's next one. An entry that would skip
a seq waits (the missing events are in a stream not read that far yet); an entry is
admitted whole or not at all, since its balance deltas go with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from schema.messages import Event


@dataclass(frozen=True, slots=True)
class Gap:
    """Why an entry waits: `symbol`'s next event is `expected`, the entry has `found`."""

    symbol: str
    expected: int
    found: int


class Sequencer:
    def __init__(self) -> None:
        # symbol -> last seq applied (committed, or admitted into the flush in hand)
        self.applied: dict[str, int] = {}
        # Symbols whose last seq is not known (a database upgraded with history): the next
        # event read is taken as where the symbol is.
        self.unknown: set[str] = set()
        self.refused = 0  # repeats dropped since start: it must not happen
        self.last_refused: tuple[str, int, int] | None = None  # (symbol, seq, applied)

    def load(self, progress: dict[str, int | None]) -> None:
        """Stored progress; a symbol never seen has no row and starts at 0 (its first
        event is seq 1). Never moves a symbol back: what this batcher applied stands."""
        for symbol, seq in progress.items():
            if seq is None:
                if symbol not in self.applied:
                    self.unknown.add(symbol)
            elif seq > self.applied.get(symbol, 0):
                self.applied[symbol] = seq
                self.unknown.discard(symbol)

    def admit(self, events: list[Event], before: dict[str, int | None]) -> list[Event] | Gap:
        """The entry's events to apply (repeats dropped), or the Gap it waits on.

        Admitting advances `applied`; `before` gets each symbol's seq before the flush
        (the first time the flush moves it; None if it was not known), to write the
        progress and to undo a flush that did not commit. Seq 0 marks an event outside
        any book (a STALE_ROUTE or UNKNOWN_SYMBOL rejection): it has no place in any
        symbol's order and always goes."""
        scanned = self._scan(events)
        if isinstance(scanned, Gap):
            return scanned
        advanced, refused = scanned
        unknown = self.unknown
        for symbol, seq in advanced.items():
            if symbol not in before:
                before[symbol] = None if symbol in unknown else self.applied.get(symbol, 0)
            self.applied[symbol] = seq
        if unknown:
            unknown.difference_update(advanced)
        if not refused:
            return events
        self.refused += len(refused)
        dropped = {id(event) for event in refused}
        return [event for event in events if id(event) not in dropped]

    def _scan(self, events: list[Event]) -> tuple[dict[str, int], list[Event]] | Gap:
        """Where each symbol of the entry gets to, and the repeats; or the first gap."""
        applied = self.applied
        advanced: dict[str, int] = {}
        refused: list[Event] = []
        # A worker's entry holds runs of one symbol's events, seq after seq: within a run
        # the next event is checked against the run alone, without a dict lookup.
        run_symbol: str | None = None
        run_seq = 0
        for event in events:
            seq = event.seq
            if not seq:
                continue
            symbol = event.symbol
            if seq == run_seq + 1 and symbol == run_symbol:
                run_seq = seq
                continue
            if run_symbol is not None:
                advanced[run_symbol] = run_seq
                run_symbol = None
            last = advanced.get(symbol)
            if last is None:
                last = applied.get(symbol, 0)
            if seq == last + 1:
                run_symbol, run_seq = symbol, seq
            elif seq > last:
                if symbol not in self.unknown or symbol in advanced:
                    return Gap(symbol, last + 1, seq)
                run_symbol, run_seq = symbol, seq  # the baseline of a symbol not known
            else:
                refused.append(event)
                self.last_refused = (symbol, seq, last)
        if run_symbol is not None:
            advanced[run_symbol] = run_seq
        return advanced, refused

    def undo(self, before: dict[str, int | None]) -> None:
        """Forget what a flush that did not commit admitted."""
        for symbol, seq in before.items():
            if seq is None:
                self.applied.pop(symbol, None)
                self.unknown.add(symbol)
            else:
                self.applied[symbol] = seq
