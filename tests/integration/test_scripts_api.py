"""The API's Redis scripts (store/lua/place-6, cancel-1, replace-2, transfer-2) held to
their headers on real Redis, independent of the Python that calls them: keys and
arguments are built here as each header lists them, and what a script writes is read
back through the schema's decoders (CommandEntry, OrderRecord, LedgerEntry), the same
the worker, the API and the batcher use."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from schema import keys
from schema.messages import Cancel, CancelAll, OrderType, Place, Replace, Side, TimeInForce
from schema.orders import (
    ORDER_RECORD_DEFAULTED,
    ORDER_RECORD_FIELDS,
    ORDER_RECORD_OPTIONAL,
    ORDER_RECORD_SETTLED,
    TERMINAL,
    OrderRecord,
    OrderStatus,
)
from schema.streams import CommandEntry, LedgerEntry
from schema.wire import MAX_INTEGER
from store.pipeline import PipelinedRedis
from store.scripts import API_SCRIPTS, CANCEL, CANCEL_ALL, LUA, PLACE, REPLACE, TRANSFER, Script

SYMBOL = "AAPL"
SHARD = 3
EPOCH = 7
USER = "alice"
CREATED_MS = 1_700_000_000_123


def _text(reply: list[bytes | int]) -> list[str]:
    return [r.decode() if isinstance(r, bytes) else str(r) for r in reply]


async def _route(redis: Redis, status: str = "ACTIVE") -> None:
    await redis.hset(keys.route(SYMBOL), mapping={"shard": SHARD, "status": status, "epoch": EPOCH})


async def _fund(redis: Redis, asset: str, available: int, user: str = USER) -> None:
    await redis.hset(keys.balance(user), keys.available(asset), available)


async def _balance(redis: Redis, asset: str, user: str = USER) -> tuple[int, int]:
    avail, locked = await redis.hmget(keys.balance(user), keys.available(asset), keys.locked(asset))
    return int(avail or 0), int(locked or 0)


async def _entries(redis: Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await redis.xrange(stream)]


def _place(order_id: int = 11, **changes: object) -> Place:
    fields: dict[str, object] = {
        "order_id": order_id,
        "user_id": USER,
        "symbol": SYMBOL,
        "side": Side.BUY,
        "quantity": 5,
        "price": 100,
        "client_order_id": "c-1",
    } | changes
    return Place(**fields)  # type: ignore[arg-type]


def _run_place(
    redis: Redis,
    place: Place,
    hold: int,
    asset: str = "USD",
    second: int = 1_700_000_000,
    max_open: tuple[int, int] = (200, 1000),
) -> Awaitable[Any]:
    cid = "" if place.client_order_id is None else keys.client_order(USER, place.client_order_id)
    return PLACE.run(
        redis,
        [
            keys.route(place.symbol),
            keys.balance(place.user_id),
            keys.order(place.order_id),
            cid,
            f"{keys.RATE}{second}",
            keys.user_orders(place.user_id),
        ],
        [
            keys.ORDERS,
            keys.PENDING,
            msgspec.msgpack.encode(place),
            hold,
            keys.available(asset),
            keys.locked(asset),
            asset,
            CREATED_MS,
            keys.open_orders(place.symbol),
            keys.OPEN_ORDERS,
            *max_open,
            3_600,
        ],
    )


# -- the files themselves --------------------------------------------------------------


@pytest.mark.parametrize("script", API_SCRIPTS, ids=lambda s: s.name)
def test_each_header_lists_every_key_and_argument_and_the_replies(script: Script) -> None:
    """BullMQ's convention: KEYS[1..N] for the N in the file name, every ARGV the script
    reads, and what it returns."""
    text = (LUA / f"{script.name}-{script.numkeys}.lua").read_text()
    assert text.startswith("--[[")
    header, body = text.split("]]", 1)
    listed = [int(n) for n in re.findall(r"^    KEYS\[(\d+)\]", header, re.MULTILINE)]
    assert listed == list(range(1, script.numkeys + 1))
    argv = [int(n) for n in re.findall(r"^    ARGV\[(\d+)\]", header, re.MULTILINE)]
    assert argv == sorted({int(n) for n in re.findall(r"ARGV\[(\d+)\]", body)})
    assert "Returns:" in header
    for status in re.findall(r"return \{'(\w+)'", body):
        assert f"{{'{status}'" in header


def test_place_reads_the_command_by_field_name() -> None:
    """PLACE unpacks Place as a msgpack map and reads `c.NAME`: every name it reads is a
    field of Place, and Place is encoded as a map (array_like would break the script)."""
    code = re.sub(r"--.*", "", PLACE.source.rpartition("]]")[2])
    read = set(re.findall(r"\bc\.(\w+)", code))
    assert read and read <= set(Place.__struct_fields__)
    assert not Place.__struct_config__.array_like
    assert isinstance(msgspec.msgpack.decode(msgspec.msgpack.encode(_place())), dict)


# -- PLACE ------------------------------------------------------------------------------


async def test_place_without_a_route_is_refused_and_writes_nothing(redis: Redis) -> None:
    await _fund(redis, "USD", 1_000)
    assert _text(await _run_place(redis, _place(), 500)) == ["NO_ROUTE"]
    assert await _balance(redis, "USD") == (1_000, 0)
    assert not await redis.exists(keys.order(11), keys.client_order(USER, "c-1"))


async def test_place_with_a_taken_client_order_id_names_the_earlier_order(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    await redis.set(keys.client_order(USER, "c-1"), "4")
    assert _text(await _run_place(redis, _place(), 500)) == ["DUPLICATE", "4"]
    assert await _balance(redis, "USD") == (1_000, 0)
    assert await _entries(redis, keys.orders(SHARD)) == []


async def test_place_over_the_balance_says_what_is_available(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 499)
    assert _text(await _run_place(redis, _place(), 500)) == ["INSUFFICIENT_BALANCE", "499"]
    assert await _balance(redis, "USD") == (499, 0)
    assert await _entries(redis, keys.orders(SHARD)) == []
    assert not await redis.exists(keys.order(11))


async def test_place_holds_enqueues_and_records_the_order(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    place = _place()
    assert _text(await _run_place(redis, place, 500, second=42)) == ["OK", str(SHARD)]
    assert await _balance(redis, "USD") == (500, 500)

    [fields] = await _entries(redis, keys.orders(SHARD))
    entry = CommandEntry.from_fields(fields)
    assert (entry.epoch, entry.hold, entry.side) == (EPOCH, 500, Side.BUY)
    assert entry.decode_command() == place

    raw = await redis.hgetall(keys.order(11))
    # A client order id is there, no fill and no post-only (their defaults are left out).
    left_out = ORDER_RECORD_SETTLED + ORDER_RECORD_OPTIONAL + ("filled", "notional", "post_only")
    assert set(raw) == {f.encode() for f in ORDER_RECORD_FIELDS} - {f.encode() for f in left_out}
    assert OrderRecord.from_hash(raw) == OrderRecord(
        user_id=USER,
        symbol=SYMBOL,
        side=Side.BUY,
        type=OrderType.LIMIT,
        price=100,
        quantity=5,
        remaining=5,
        filled=0,
        notional=0,
        time_in_force=TimeInForce.GTC,
        post_only=False,
        client_order_id="c-1",
        status=OrderStatus.NEW,
        pays_with="USD",
        created_ms=CREATED_MS,
    )
    assert await redis.get(keys.client_order(USER, "c-1")) == b"11"
    assert 0 < await redis.ttl(keys.client_order(USER, "c-1")) <= 3_600
    assert await redis.hget(f"{keys.RATE}42", SYMBOL) == b"1"
    assert 0 < await redis.ttl(f"{keys.RATE}42") <= 120
    assert await redis.lrange(keys.user_orders(USER), 0, -1) == [b"11"]


async def test_place_counts_open_orders_and_refuses_past_either_cap(redis: Redis) -> None:
    """Caps of 2 per symbol and 3 in all: a refusal writes nothing (no hold, no entry)."""
    await _route(redis)
    await redis.hset(keys.route("MSFT"), mapping={"shard": SHARD, "status": "ACTIVE", "epoch": 1})
    await _fund(redis, "USD", 10_000)
    caps = (2, 3)
    for n in (1, 2):
        place = _place(n, client_order_id=None)
        assert _text(await _run_place(redis, place, 10, max_open=caps))[0] == "OK"
    refused = await _run_place(redis, _place(3, client_order_id=None), 10, max_open=caps)
    assert _text(refused) == ["TOO_MANY_OPEN", "SYMBOL"]
    msft = _place(4, symbol="MSFT", client_order_id=None)
    assert _text(await _run_place(redis, msft, 10, max_open=caps))[0] == "OK"
    another = _place(5, symbol="MSFT", client_order_id=None)
    assert _text(await _run_place(redis, another, 10, max_open=caps)) == ["TOO_MANY_OPEN", "ALL"]
    counts = await redis.hmget(
        keys.balance(USER), keys.open_orders(SYMBOL), keys.open_orders("MSFT"), keys.OPEN_ORDERS
    )
    assert counts == [b"2", b"1", b"3"]
    assert await _balance(redis, "USD") == (10_000 - 30, 30)  # three holds, not five
    assert await redis.xlen(keys.orders(SHARD)) == 3
    assert not await redis.exists(keys.order(3), keys.order(5))


async def test_place_of_a_market_order_without_client_id_records_no_price(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "AAPL", 5)
    place = _place(side=Side.SELL, type=OrderType.MARKET, price=None, client_order_id=None)
    assert _text(await _run_place(redis, place, 5, asset="AAPL"))[0] == "OK"
    raw = await redis.hgetall(keys.order(11))
    record = OrderRecord.from_hash(raw)
    assert (record.price, record.client_order_id, record.type) == (None, None, OrderType.MARKET)
    assert not {f.encode() for f in ORDER_RECORD_DEFAULTED} & set(raw)
    assert await _balance(redis, "AAPL") == (0, 5)


async def test_place_of_a_post_only_order_records_it(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    assert _text(await _run_place(redis, _place(post_only=True), 500))[0] == "OK"
    raw = await redis.hgetall(keys.order(11))
    assert raw[b"post_only"] == b"1"
    record = OrderRecord.from_hash(raw)
    assert (record.post_only, record.filled, record.notional) == (True, 0, 0)


@pytest.mark.parametrize(
    ("changes", "written"),
    [
        (
            {"type": OrderType.STOP_LIMIT, "stop_price": 120},
            {"stop_price": 120},
        ),
        (
            {
                "type": OrderType.STOP_MARKET,
                "price": None,
                "stop_price": 120,
                "protection_price": 130,
            },
            {"stop_price": 120, "protection_price": 130},
        ),  # fmt: skip
        (
            {"time_in_force": TimeInForce.GTD, "expire_at_ms": CREATED_MS + 60_000},
            {"expire_at_ms": CREATED_MS + 60_000},
        ),
        (
            {"type": OrderType.MARKET, "price": None, "protection_price": 130},
            {"protection_price": 130},
        ),
    ],
)
async def test_place_records_what_only_some_orders_carry(
    redis: Redis, changes: dict[str, Any], written: dict[str, int]
) -> None:
    """A stop's stop price, a GTD order's expiry, a market buy's protection price: in the
    record when the order has them, and only then (a plain LIMIT's record is as before)."""
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    place = _place(**changes)
    assert _text(await _run_place(redis, place, 650))[0] == "OK"
    raw = await redis.hgetall(keys.order(11))
    optional = {f.encode() for f in ORDER_RECORD_OPTIONAL}
    assert {k.decode(): int(v) for k, v in raw.items() if k in optional} == written
    record = OrderRecord.from_hash(raw)
    assert (record.type, record.status, record.triggered) == (
        place.type,
        OrderStatus.NEW,
        False,
    )
    assert (record.stop_price, record.expire_at_ms, record.protection_price) == (
        place.stop_price,
        place.expire_at_ms,
        place.protection_price,
    )
    [fields] = await _entries(redis, keys.orders(SHARD))
    assert CommandEntry.from_fields(fields).decode_command() == place


async def test_place_while_migrating_goes_to_the_pending_stream(redis: Redis) -> None:
    await _route(redis, "MIGRATING")
    await _fund(redis, "USD", 1_000)
    assert _text(await _run_place(redis, _place(), 500))[0] == "OK"
    assert await _entries(redis, keys.orders(SHARD)) == []
    [fields] = await _entries(redis, keys.pending(SYMBOL))
    assert CommandEntry.from_fields(fields).epoch == EPOCH


@pytest.mark.parametrize(("before", "after"), [(399, 400), (400, 200)])
async def test_place_trims_the_recent_list_once_it_holds_twice_the_readers(
    redis: Redis, before: int, after: int
) -> None:
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    if before:
        await redis.rpush(keys.user_orders(USER), *range(1_000, 1_000 + before))
    assert _text(await _run_place(redis, _place(), 500))[0] == "OK"
    recent = await redis.lrange(keys.user_orders(USER), 0, -1)
    assert len(recent) == after and recent[0] == b"11"


# -- CANCEL -----------------------------------------------------------------------------


async def _record(redis: Redis, order_id: int = 11, **fields: str) -> None:
    await redis.hset(
        keys.order(order_id),
        mapping={
            "user_id": USER,
            "symbol": SYMBOL,
            "status": "OPEN",
            "side": "BUY",
            "type": "LIMIT",
            "price": "100",
            "remaining": "5",
            "pays_with": "USD",
        }
        | fields,
    )


def _run_cancel(redis: Redis, user: str = USER, order_id: int = 11) -> Awaitable[Any]:
    return CANCEL.run(
        redis, [keys.order(order_id)], [keys.ORDERS, keys.PENDING, keys.ROUTE, user, order_id]
    )


async def test_cancel_of_another_users_or_no_order_is_not_found(redis: Redis) -> None:
    await _route(redis)
    await _record(redis)
    assert _text(await _run_cancel(redis, user="bob")) == ["NOT_FOUND"]
    assert _text(await _run_cancel(redis, order_id=12)) == ["NOT_FOUND"]
    assert await _entries(redis, keys.orders(SHARD)) == []


@pytest.mark.parametrize("status", list(OrderStatus))
async def test_cancel_refuses_exactly_the_terminal_statuses(redis: Redis, status) -> None:
    """The Lua's TERMINAL table agrees with schema.orders.TERMINAL."""
    await _route(redis)
    await _record(redis, status=status.value)
    reply = _text(await _run_cancel(redis))
    assert reply == (["NOT_OPEN", status.value] if status in TERMINAL else ["OK"])


async def test_cancel_enqueues_a_cancel_for_the_records_symbol(redis: Redis) -> None:
    await _route(redis)
    await _record(redis)
    assert _text(await _run_cancel(redis)) == ["OK"]
    [fields] = await _entries(redis, keys.orders(SHARD))
    entry = CommandEntry.from_fields(fields)
    assert (entry.epoch, entry.hold, entry.side) == (EPOCH, 0, None)
    assert entry.decode_command() == Cancel(order_id=11, user_id=USER, symbol=SYMBOL)


async def test_cancel_while_migrating_goes_to_the_pending_stream(redis: Redis) -> None:
    await _route(redis, "MIGRATING")
    await _record(redis)
    assert _text(await _run_cancel(redis)) == ["OK"]
    assert len(await _entries(redis, keys.pending(SYMBOL))) == 1


# -- CANCEL_ALL -------------------------------------------------------------------------


def _run_cancel_all(redis: Redis, *symbols: str) -> Awaitable[Any]:
    return CANCEL_ALL.run(redis, [], [keys.ORDERS, keys.PENDING, keys.ROUTE, USER, *symbols])


async def test_cancel_all_enqueues_one_cancel_all_per_symbol_on_its_route(redis: Redis) -> None:
    await _route(redis)  # AAPL on shard 3
    await redis.hset(keys.route("MSFT"), mapping={"shard": 5, "status": "MIGRATING", "epoch": 2})
    assert _text(await _run_cancel_all(redis, SYMBOL, "MSFT")) == ["OK", "2"]
    [aapl] = await _entries(redis, keys.orders(SHARD))
    [msft] = await _entries(redis, keys.pending("MSFT"))  # paused: it waits with the rest
    for fields, symbol, epoch in ((aapl, SYMBOL, EPOCH), (msft, "MSFT", 2)):
        entry = CommandEntry.from_fields(fields)
        assert (entry.epoch, entry.hold, entry.side) == (epoch, 0, None)
        assert entry.decode_command() == CancelAll(user_id=USER, symbol=symbol)


async def test_cancel_all_with_a_symbol_without_a_route_queues_none(redis: Redis) -> None:
    await _route(redis)
    assert _text(await _run_cancel_all(redis, SYMBOL, "NOPE")) == ["NO_ROUTE", "NOPE"]
    assert await _entries(redis, keys.orders(SHARD)) == []


# -- REPLACE ----------------------------------------------------------------------------


def _run_replace(
    redis: Redis, price: int | None, quantity: int | None, user: str = USER
) -> Awaitable[Any]:
    return REPLACE.run(
        redis,
        [keys.order(11), keys.balance(user)],
        [
            keys.ORDERS,
            keys.PENDING,
            keys.ROUTE,
            user,
            11,
            "" if price is None else price,
            "" if quantity is None else quantity,
            keys.available(""),
            keys.locked(""),
        ],
    )


async def test_replace_of_another_users_order_is_not_found(redis: Redis) -> None:
    await _route(redis)
    await _record(redis)
    assert _text(await _run_replace(redis, 101, None, user="bob")) == ["NOT_FOUND"]


@pytest.mark.parametrize("status", list(OrderStatus))
async def test_replace_refuses_exactly_the_terminal_statuses(redis: Redis, status) -> None:
    await _route(redis)
    await _fund(redis, "USD", 10_000)
    await _record(redis, status=status.value)
    reply = _text(await _run_replace(redis, 101, None))
    assert reply == (["NOT_OPEN", status.value] if status in TERMINAL else ["OK"])


@pytest.mark.parametrize("kind", ["MARKET", "STOP_MARKET"])
async def test_replace_of_a_market_order_is_not_open(redis: Redis, kind: str) -> None:
    await _route(redis)
    await _record(redis, type=kind)
    assert _text(await _run_replace(redis, 101, None)) == ["NOT_OPEN", "OPEN"]


async def test_replace_while_one_is_queued_is_pending(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 10_000)
    await _record(redis, pending="1")
    assert _text(await _run_replace(redis, 101, None)) == ["PENDING"]
    assert await _balance(redis, "USD") == (10_000, 0)


async def test_replace_past_what_doubles_hold_is_too_large(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 10_000)
    await _record(redis, remaining="2")
    assert _text(await _run_replace(redis, MAX_INTEGER // 2, None)) == ["TOO_LARGE"]
    assert _text(await _run_replace(redis, MAX_INTEGER // 2 - 1, None)) == [
        "INSUFFICIENT_BALANCE",
        "10000",
    ]
    assert await _balance(redis, "USD") == (10_000, 0)


@pytest.mark.parametrize(
    ("side", "asset", "price", "quantity", "hold"),
    [
        ("BUY", "USD", 120, None, 120 * 5),  # the new price times the remaining quantity
        ("BUY", "USD", None, 3, 100 * 3),  # the current price times the new quantity
        ("BUY", "USD", 90, 8, 90 * 8),
        ("SELL", "AAPL", 120, None, 5),  # a sell holds its quantity, whatever the price
        ("SELL", "AAPL", None, 3, 3),
    ],
)
async def test_replace_holds_for_the_order_as_it_will_be(
    redis: Redis, side: str, asset: str, price: int | None, quantity: int | None, hold: int
) -> None:
    await _route(redis)
    await _fund(redis, asset, 1_000)
    await _record(redis, side=side, pays_with=asset)
    assert _text(await _run_replace(redis, price, quantity)) == ["OK"]
    assert await _balance(redis, asset) == (1_000 - hold, hold)
    assert await redis.hget(keys.order(11), "pending") == b"1"
    [fields] = await _entries(redis, keys.orders(SHARD))
    entry = CommandEntry.from_fields(fields)
    assert (entry.epoch, entry.hold, entry.side) == (EPOCH, hold, Side(side))
    assert entry.decode_command() == Replace(
        order_id=11, user_id=USER, symbol=SYMBOL, price=price, quantity=quantity
    )


async def test_replace_over_the_balance_says_what_is_available(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 599)
    await _record(redis)
    assert _text(await _run_replace(redis, 120, None)) == ["INSUFFICIENT_BALANCE", "599"]
    assert await redis.hget(keys.order(11), "pending") is None
    assert await _entries(redis, keys.orders(SHARD)) == []


# -- TRANSFER ---------------------------------------------------------------------------


def _run_transfer(redis: Redis, amount: int, reference: str = "ref-1") -> Awaitable[Any]:
    return TRANSFER.run(
        redis,
        [keys.balance(USER), keys.LEDGER],
        [keys.available("USD"), amount, USER, "USD", reference, keys.locked("USD"), MAX_INTEGER],
    )


async def test_transfer_moves_available_funds_and_writes_the_ledger(redis: Redis) -> None:
    status, after, deposit_id = _text(await _run_transfer(redis, 1_000))
    assert (status, after) == ("OK", "1000")
    assert _text(await _run_transfer(redis, -400, "out"))[:2] == ["OK", "600"]
    assert await _balance(redis, "USD") == (600, 0)
    ledger = await redis.xrange(keys.LEDGER)
    assert ledger[0][0].decode() == deposit_id
    assert [LedgerEntry.from_fields(fields) for _, fields in ledger] == [
        LedgerEntry(user=USER, asset="USD", amount=1_000, reference="ref-1"),
        LedgerEntry(user=USER, asset="USD", amount=-400, reference="out"),
    ]


async def test_transfer_refuses_an_overdraft_and_writes_nothing(redis: Redis) -> None:
    await _fund(redis, "USD", 300)
    assert _text(await _run_transfer(redis, -301)) == ["INSUFFICIENT_BALANCE", "300"]
    assert await _balance(redis, "USD") == (300, 0)
    assert await redis.xlen(keys.LEDGER) == 0


async def test_transfer_refuses_a_deposit_past_the_exact_integer_limit(redis: Redis) -> None:
    # available + locked may reach 2^53, not pass it: past it Lua's doubles skip integers.
    await _fund(redis, "USD", MAX_INTEGER - 1_000)
    await redis.hset(keys.balance(USER), keys.locked("USD"), 900)
    assert _text(await _run_transfer(redis, 101)) == ["TOO_LARGE", str(MAX_INTEGER - 1_000)]
    assert await _balance(redis, "USD") == (MAX_INTEGER - 1_000, 900)
    assert await redis.xlen(keys.LEDGER) == 0
    assert _text(await _run_transfer(redis, 100))[:2] == ["OK", str(MAX_INTEGER - 900)]
    # A withdrawal is never refused for it: it only shrinks the balance.
    assert _text(await _run_transfer(redis, -1))[:2] == ["OK", str(MAX_INTEGER - 901)]


# -- through the pipelined client ---------------------------------------------------------


async def test_the_pipeline_reloads_scripts_redis_lost(redis: Redis) -> None:
    await _route(redis)
    await _fund(redis, "USD", 1_000)
    pipeline = PipelinedRedis(redis)
    assert _text(await pipeline.call(TRANSFER, *_transfer_call(500)))[:2] == ["OK", "1500"]
    await redis.script_flush()
    replies = await asyncio.gather(
        pipeline.call(TRANSFER, *_transfer_call(1)),
        pipeline.call(CANCEL, keys.order(99), keys.ORDERS, keys.PENDING, keys.ROUTE, USER, 99),
    )
    assert [_text(r)[0] for r in replies] == ["OK", "NOT_FOUND"]
    assert await redis.script_exists(TRANSFER.sha, CANCEL.sha) == [True, True]


def _transfer_call(amount: int) -> tuple[object, ...]:
    return (
        keys.balance(USER),
        keys.LEDGER,
        keys.available("USD"),
        amount,
        USER,
        "USD",
        "p",
        keys.locked("USD"),
        MAX_INTEGER,
    )
