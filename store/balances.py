"""Users' balances as Redis holds them (`balance:{user}`, schema/keys.py), read back as
absolute amounts, and which users' balances a run of stream entries moved.

Every change to a balance in Redis is followed by a stream entry that names it: a worker
batch's settlement writes the balances and its `events:{shard}` entry in one script, and
that entry's `balances` (schema/streams.py EventsEntry) lists, with the router's holds
counted in, each (user, asset) whose available or locked moved, the placements' and
replaces' holds at the door included; a deposit or withdrawal writes the balance and its
`ledger` entry in one script (store/lua/transfer-2.lua). So a reader of those streams that
reads the balances after each entry it saw never ends on a stale value: the last read
after a change comes after it. A hold shows once its order's batch is settled, not at the
door (the PLACE's entry is in `orders:{shard}`, which no balance reader follows).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from schema import keys
from schema.streams import EventsEntry, Fields, LedgerEntry, decode_balances
from schema.wire import Balance

_AVAILABLE = keys.available("").encode()
_LOCKED = keys.locked("").encode()


def by_asset(fields: Mapping[bytes, bytes]) -> dict[str, list[int]]:
    """A `balance:{user}` hash (HGETALL) as asset -> [available, locked]; the hash's other
    fields (the open-order counts) are not balances."""
    out: dict[str, list[int]] = {}
    for field, value in fields.items():
        if field.startswith(_AVAILABLE):
            out.setdefault(field[len(_AVAILABLE) :].decode(), [0, 0])[0] = int(value)
        elif field.startswith(_LOCKED):
            out.setdefault(field[len(_LOCKED) :].decode(), [0, 0])[1] = int(value)
    return out


def balance_list(fields: Mapping[bytes, bytes]) -> list[Balance]:
    """A `balance:{user}` hash as GET /v1/balances lists it: by asset."""
    return [
        Balance(asset=a, available=v[0], locked=v[1]) for a, v in sorted(by_asset(fields).items())
    ]


class Moves:
    """Which users' balances a run of stream entries moved, in which assets, of the users
    `add` is told to watch; then their absolute amounts, all read in one round trip.

    A fan-out adds each `events:{shard}` and `ledger` entry of a read and, if anything
    moved, reads once: one message per user however many entries named them."""

    __slots__ = ("assets", "transfers")

    def __init__(self) -> None:
        self.assets: dict[str, set[str]] = {}  # user -> assets moved
        # The watched users' deposits and withdrawals among them, in stream order, for a
        # feed that reports each with its amount (Binance's balanceUpdate).
        self.transfers: list[LedgerEntry] = []

    def __bool__(self) -> bool:
        return bool(self.assets)

    def add(self, stream: str, fields: Fields, watched: Container[str]) -> None:
        """One entry of `events:{shard}` or `ledger` (any other stream's entries, and the
        control entries, move no balance)."""
        if stream == keys.LEDGER:
            entry = LedgerEntry.from_fields(fields)
            if entry.user in watched:
                self.transfers.append(entry)
            self._add(((entry.user, entry.asset),), watched)
            return
        raw = fields.get(EventsEntry.BALANCES)
        if raw:
            # Every (user, asset) listed, even one whose deltas sum to 0: an order refused
            # by its worker was held at the door, and a read in between saw the hold.
            self._add(((user, asset) for user, asset, _, _ in decode_balances(raw)), watched)

    def _add(self, moved: Iterable[tuple[str, str]], watched: Container[str]) -> None:
        for user, asset in moved:
            if user in watched:
                self.assets.setdefault(user, set()).add(asset)

    async def read(self, redis: Any) -> dict[str, list[Balance]]:
        """Each user's moved assets as they are now, by asset: one pipeline of HMGETs."""
        users = [(user, sorted(assets)) for user, assets in self.assets.items()]
        pipe = redis.pipeline(transaction=False)
        for user, assets in users:
            fields = [f(asset) for asset in assets for f in (keys.available, keys.locked)]
            pipe.hmget(keys.balance(user), fields)
        replies = await pipe.execute()
        out: dict[str, list[Balance]] = {}
        for (user, assets), values in zip(users, replies, strict=True):
            out[user] = [
                Balance(asset=asset, available=int(values[2 * n] or 0),
                        locked=int(values[2 * n + 1] or 0))
                for n, asset in enumerate(assets)
            ]  # fmt: skip
        return out
