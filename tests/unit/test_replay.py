"""`spot replay`: deterministic output, clear errors, symbol specs."""

import json
import random
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from spot.bench.engine import realistic

EXAMPLES = Path(__file__).parents[2] / "spot" / "examples"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "spot.cli", "replay", *args], capture_output=True, check=False
    )


def write_commands(path: Path, commands: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in commands))
    return path


def place(order_id: int, side: str, price: int, quantity: int, user: str = "u1") -> dict:
    return {
        "action": "PLACE",
        "order_id": order_id,
        "user_id": user,
        "symbol": "AAPL",
        "side": side,
        "type": "LIMIT",
        "price": price,
        "quantity": quantity,
        "time_in_force": "GTC",
        "post_only": False,
    }


def test_a_trade_comes_out_with_its_fields(tmp_path):
    path = write_commands(
        tmp_path / "in.jsonl",
        [place(1, "SELL", 15000, 100, "u1"), place(2, "BUY", 15010, 40, "u2")],
    )
    result = run(str(path))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["ACCEPTED", "ACCEPTED", "TRADE", "DONE"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[2] == {
        "type": "TRADE",
        "symbol": "AAPL",
        "seq": 3,
        "price": 15000,
        "quantity": 40,
        "maker_order_id": 1,
        "taker_order_id": 2,
        "maker_user_id": "u1",
        "taker_user_id": "u2",
        "taker_side": "BUY",
    }


def test_same_input_gives_byte_identical_output(tmp_path):
    # A long random mix, written out through the same JSON the CLI reads.
    path = tmp_path / "mix.jsonl"
    commands = realistic(5_000, seed=random.randrange(1000))
    path.write_bytes(b"".join(msgspec.json.encode(c) + b"\n" for c in commands))
    first, second = run(str(path)), run(str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.splitlines()) > len(commands)


def test_symbol_specs_apply_their_rules():
    result = run(str(EXAMPLES / "demo.jsonl"), "--symbols", str(EXAMPLES / "symbols.json"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    rejected = [e for e in events if e["type"] == "REJECTED"]
    assert {(e["symbol"], e["reason"]) for e in rejected} >= {("BTC-USD", "PRICE_OFF_TICK")}


def test_unknown_symbol_with_specs_is_rejected_outside_any_book(tmp_path):
    command = place(1, "BUY", 100, 1) | {"symbol": "NOPE"}
    path = write_commands(tmp_path / "in.jsonl", [command])
    result = run(str(path), "--symbols", str(EXAMPLES / "symbols.json"))
    assert result.returncode == 0, result.stderr
    (event,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (event["type"], event["reason"], event["seq"]) == ("REJECTED", "UNKNOWN_SYMBOL", 0)


@pytest.mark.parametrize(
    "bad_line, words",
    [
        ("{not json", ["in.jsonl:2", "JSON"]),
        ('{"action": "SELL_ALL", "order_id": 3}', ["in.jsonl:2", "action"]),
        (json.dumps(place(2, "BUY", 100, 1) | {"price": 1.5}), ["in.jsonl:2", "price"]),
        (json.dumps({"action": "CANCEL", "order_id": 2}), ["in.jsonl:2", "user_id"]),
        (json.dumps(place(2, "SIDEWAYS", 100, 1)), ["in.jsonl:2", "side"]),
    ],
)
def test_a_bad_line_is_named_and_fails_the_run(tmp_path, bad_line, words):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(place(1, "BUY", 100, 1)) + "\n" + bad_line + "\n")
    result = run(str(path))
    assert result.returncode == 1
    message = result.stderr.decode()
    for word in words:
        assert word in message


def test_missing_file_and_bad_specs_are_clear_errors(tmp_path):
    result = run(str(tmp_path / "absent.jsonl"))
    assert result.returncode == 1 and b"absent.jsonl" in result.stderr
    specs = tmp_path / "specs.json"
    specs.write_text('[{"symbol": "X", "base": "X", "quote": "USD", "tick": 0}]')
    path = write_commands(tmp_path / "in.jsonl", [place(1, "BUY", 100, 1)])
    result = run(str(path), "--symbols", str(specs))
    assert result.returncode == 1 and b"tick" in result.stderr


def test_a_stop_cascade_replays_byte_for_byte():
    """spot/examples/stops.jsonl: order 8's trade fires stop 4, whose trade at 15_020
    fires stop 5; a stop already reached is refused; EXPIRE and CANCEL_ALL clear the rest."""
    args = (str(EXAMPLES / "stops.jsonl"), "--symbols", str(EXAMPLES / "symbols.json"))
    first, second = run(*args), run(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["order_id"] for e in events if e["type"] == "TRIGGERED"] == [4, 5]
    fired = next(e for e in events if e["type"] == "TRIGGERED")
    assert fired == {
        "type": "TRIGGERED",
        "symbol": "AAPL",
        "seq": 11,
        "order_id": 4,
        "user_id": "u4",
        "side": "BUY",
        "order_type": "STOP_LIMIT",
        "stop_price": 15005,
        "price": 15020,
        "quantity": 15,
        "time_in_force": "GTC",
        "last_price": 15010,
        "protection_price": None,
    }
    after = events[events.index(fired) :]
    assert [(e["type"], e.get("taker_order_id", e.get("order_id"))) for e in after[:8]] == [
        ("TRIGGERED", 4),
        ("TRADE", 4),
        ("DONE", 1),
        ("TRADE", 4),
        ("DONE", 2),
        ("DONE", 4),
        ("TRIGGERED", 5),
        ("TRADE", 5),
    ]
    # u1 rests with its own rebate of 1 bps: 15_010 × 5 = 75_050 of quote, 7.505 -> 7
    assert (after[1]["maker_fee"], after[1]["taker_fee"]) == (-7, 1)
    ends = {(e["order_id"], e["reason"]) for e in events if e["type"] in ("REJECTED", "CANCELED")}
    assert ends == {
        (6, "STOP_WOULD_TRIGGER"),
        (7, "STOP_NOT_REPLACEABLE"),
        (7, "EXPIRED"),
        (3, "USER"),
    }


def test_stops_expiry_and_cancel_all_decode_from_their_json_fields(tmp_path):
    path = write_commands(
        tmp_path / "in.jsonl",
        [
            place(1, "SELL", 100, 5, "u1")
            | {"type": "STOP_LIMIT", "stop_price": 99, "price": 98, "time_in_force": "IOC"},
            place(2, "BUY", 100, 5, "u2") | {"time_in_force": "GTD", "expire_at_ms": 10},
            {"action": "EXPIRE", "symbol": "AAPL", "now_ms": 10},
            {"action": "CANCEL_ALL", "user_id": "u1", "symbol": "AAPL"},
        ],
    )
    result = run(str(path))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["order_id"], e.get("reason")) for e in events] == [
        ("ACCEPTED", 1, None),
        ("ACCEPTED", 2, None),
        ("CANCELED", 2, "EXPIRED"),
        ("CANCELED", 1, "USER"),
    ]
    assert events[0]["stop_price"] == 99 and events[1]["expire_at_ms"] == 10
