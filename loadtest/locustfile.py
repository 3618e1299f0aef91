"""Locust scenarios for Spot: the seed's behaviour model and an open-loop fixed rate.

Run by `python -m loadtest.run`, which starts the stack, seeds users u1..uN, writes the
JSON config named by LOADTEST_CONFIG (tokens, symbols, paces, client) and starts Locust
with `--processes`. This file imports nothing from Spot: it runs under gevent, in
Locust's processes only.

One paced iteration is one order command (place, cancel or replace): "an order every
10 s" of the seed is an iteration every 10 s. Some iterations first look at the book, an
own order, the balances or recent trades, as a trader's screen does.

Users (the seed's model, 0.2 orders/s per user on average):
  OrdinaryUser  an order every 10 s   weight 75
  ActiveTrader  an order every 3 s    weight 18
  DayTrader     an order every 1 s    weight 7
The runner compresses the model's clock (`speed`) when the users the rate needs would
outnumber the connections one machine can hold: 5,000 orders/s is 25,000 model users.

MaxUser offers `pace_s` per iteration on a timer and does not wait for the answer
(a gevent pool per user), so the rate offered does not fall when responses slow down.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from bisect import bisect
from collections import deque
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import gevent  # type: ignore[import-untyped]  # gevent ships no stubs
import msgspec
from gevent.pool import Pool  # type: ignore[import-untyped]  # likewise
from locust import FastHttpUser, task

from loadtest.lean_http import LeanHttpUser

CONFIG: dict[str, Any] = (
    json.loads(Path(os.environ["LOADTEST_CONFIG"]).read_text())
    if os.environ.get("LOADTEST_CONFIG")
    else {"tokens": [""], "symbols": {"AAPL": 19_000}, "speed": 1.0, "pace_s": 1.0}
)
TOKENS: list[str] = CONFIG["tokens"]
SYMBOLS: list[str] = sorted(CONFIG["symbols"])
# Mid prices (quote minor units) this process last saw, from the symbol's reference price
# until a book query says otherwise. Shared by the users of one process.
MIDS: dict[str, int] = dict(CONFIG["symbols"])
SPEED: float = CONFIG.get("speed", 1.0)
# Which HTTP client the users send with: "lean" (loadtest/lean_http.py) or Locust's own
# "fasthttp" (FastHttpUser), which costs this machine 3–4 times more CPU per request.
CLIENT: str = CONFIG.get("client", "lean")

NOTIONAL = 500_000  # an order is worth up to $5,000 (in cents)
MAX_OPEN = 20  # a trader keeps at most this many orders working; past it, cancels the oldest
IN_FLIGHT = 16  # MaxUser: requests one user may have waiting before its timer blocks

# Which order command an iteration sends.
ACTIONS = (
    ("passive", 45),  # a limit that rests: 0.05..1% away from the mid, on its side
    ("cross", 15),  # a limit 0.1..0.5% through the mid: trades, IOC half of the time
    ("market", 5),
    ("cancel", 20),  # the oldest open order
    ("replace", 15),  # an open order: a new price near the mid, or a smaller size
)
ACTION_NAMES = ["order_" + name for name, _ in ACTIONS]
ACTION_CUMULATIVE = list(itertools.accumulate(weight for _, weight in ACTIONS))
ACTION_TOTAL = ACTION_CUMULATIVE[-1]
# Probability that an iteration first runs each query.
QUERIES = (("book", 0.10), ("order", 0.05), ("balances", 0.02), ("trades", 0.02))
QUERY_METHODS = tuple(("query_" + name, probability) for name, probability in QUERIES)
_json = msgspec.json.Encoder().encode  # bodies as bytes: a fifth of json.dumps' cost
# Replies from the bytes: FastResponse.json() decodes them to text first, guessing the
# charset from the headers, then runs json.loads.
_parse = msgspec.json.decode

_numbers = itertools.count()


def phased_pacing(pace: float) -> Callable[[Any], float]:
    """One iteration every `pace` seconds, each user on its own random phase.

    Locust's constant_pacing counts from when the user was spawned, so a random sleep in
    on_start only delays the first iteration: every later one fires `pace` after the
    spawn, and users spawned in the same second fire in the same instant. At 1,000
    orders/s that sent bursts of hundreds of requests at once, and the HTTP p95 measured
    the bursts (hundreds of ms with the machine a third idle), not the exchange. Here
    the schedule starts when the user's first iteration does (after its random sleep);
    a user that falls behind starts its next iteration at once, without catching up.
    """

    def wait(user: Any) -> float:
        now = perf_counter()
        next_at: float = max(getattr(user, "next_at", now) + pace, now)
        user.next_at = next_at
        return next_at - now

    return wait


class Trader(LeanHttpUser if CLIENT == "lean" else FastHttpUser):  # type: ignore[misc]
    """One seeded user (u1..uN, by token) trading the demo symbols."""

    abstract = True

    def on_start(self) -> None:
        runner = self.environment.runner
        # Locust users of all processes draw distinct tokens: process k takes k, k+P, ...
        index = next(_numbers) * CONFIG.get("processes", 1) + max(runner.worker_index, 0)
        self.token = TOKENS[index % len(TOKENS)]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}
        if CLIENT == "fasthttp":
            # The API sets no cookies: http.cookiejar's per-request bookkeeping (pure
            # Python, ~3% of this process) buys nothing here.
            self.client.client.cookiejar = None
        self.open: deque[list[Any]] = deque()  # [order_id, symbol, side, price, quantity]
        self.cids = itertools.count()
        self.cid_prefix = f"{random.getrandbits(40):x}-"
        self.random = random.Random()

    # -- one iteration ------------------------------------------------------------------

    def iteration(self) -> None:
        for method, probability in QUERY_METHODS:
            if self.random.random() < probability:
                getattr(self, method)()
        # random.choices(ACTION_NAMES, cum_weights=ACTION_CUMULATIVE)[0], without its list
        action = ACTION_NAMES[bisect(ACTION_CUMULATIVE, self.random.random() * ACTION_TOTAL)]
        if len(self.open) >= MAX_OPEN:
            action = "order_cancel"
        elif not self.open and action in ("order_cancel", "order_replace"):
            action = "order_passive"
        getattr(self, action)()

    # -- order commands -----------------------------------------------------------------

    def order_passive(self) -> None:
        symbol, side, mid = self.pick()
        away = mid * self.random.randint(5, 100) // 10_000 + 1
        price = mid - away if side == "BUY" else mid + away
        self.place("POST /v1/orders [passive]", symbol, side, "LIMIT", price, "GTC")

    def order_cross(self) -> None:
        symbol, side, mid = self.pick()
        through = mid * self.random.randint(10, 50) // 10_000 + 1
        price = mid + through if side == "BUY" else mid - through
        tif = "IOC" if self.random.random() < 0.5 else "GTC"
        self.place("POST /v1/orders [cross]", symbol, side, "LIMIT", price, tif)

    def order_market(self) -> None:
        symbol, side, _ = self.pick()
        self.place("POST /v1/orders [market]", symbol, side, "MARKET", None, "IOC")

    def order_cancel(self) -> None:
        order = self.open.popleft()
        with self.client.delete(
            f"/v1/orders/{order[0]}",
            headers=self.headers,
            name="DELETE /v1/orders/{id}",
            catch_response=True,
        ) as resp:
            expected_409(resp)

    def order_replace(self) -> None:
        order = self.open[self.random.randrange(len(self.open))]
        order_id, symbol, side, price, quantity = order
        if quantity > 1 and self.random.random() < 0.3:
            change = {"quantity": self.random.randint(1, quantity - 1)}  # keeps its priority
        else:
            mid = MIDS[symbol]
            away = mid * self.random.randint(5, 100) // 10_000 + 1
            change = {"price": mid - away if side == "BUY" else mid + away}
        with self.client.patch(
            f"/v1/orders/{order_id}",
            data=_json(change),
            headers=self.json_headers,
            name="PATCH /v1/orders/{id}",
            catch_response=True,
        ) as resp:
            if resp.status_code == 202:
                order[3] = change.get("price", price)
                order[4] = change.get("quantity", quantity)
            elif expected_409(resp) == "ORDER_NOT_OPEN":
                self.forget(order_id)

    def place(
        self, name: str, symbol: str, side: str, kind: str, price: int | None, tif: str
    ) -> None:
        quantity = self.random.randint(1, max(1, NOTIONAL // MIDS[symbol]))
        body = {
            "symbol": symbol,
            "side": side,
            "type": kind,
            "quantity": quantity,
            "time_in_force": tif,
            "client_order_id": f"{self.cid_prefix}{next(self.cids)}",
        }
        if price is not None:
            body["price"] = price
        with self.client.post(
            "/v1/orders",
            data=_json(body),
            headers=self.json_headers,
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"{resp.status_code} {error_code(resp)}")
            elif tif == "GTC":
                self.open.append([_parse(resp.content)["order_id"], symbol, side, price, quantity])

    def pick(self) -> tuple[str, str, int]:
        symbol = self.random.choice(SYMBOLS)
        return symbol, "BUY" if self.random.random() < 0.5 else "SELL", MIDS[symbol]

    def forget(self, order_id: int) -> None:
        for order in self.open:
            if order[0] == order_id:
                self.open.remove(order)
                return

    # -- queries ------------------------------------------------------------------------

    def query_book(self) -> None:
        symbol = self.random.choice(SYMBOLS)
        with self.client.get(
            f"/v1/book/{symbol}?depth=5",
            name="GET /v1/book/{symbol}",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code} {error_code(resp)}")
                return
            book = _parse(resp.content)
            if book["bids"] and book["asks"]:
                MIDS[symbol] = (book["bids"][0][0] + book["asks"][0][0]) // 2

    def query_order(self) -> None:
        if self.open:
            order_id = self.open[-1][0]
            self.client.get(
                f"/v1/orders/{order_id}", headers=self.headers, name="GET /v1/orders/{id}"
            )

    def query_balances(self) -> None:
        self.client.get("/v1/balances", headers=self.headers, name="GET /v1/balances")

    def query_trades(self) -> None:
        symbol = self.random.choice(SYMBOLS)
        self.client.get(f"/v1/trades/{symbol}", name="GET /v1/trades/{symbol}")


def error_code(resp: Any) -> str:
    """The body's error code; for a 401 its message too (why the token was refused), which
    names no order, so Locust's failure table still groups them."""
    try:
        body = _parse(resp.content)
    except (ValueError, AttributeError):
        return "-"
    if resp.status_code == 401:
        return f"{body.get('error')}: {body.get('message')}"
    return str(body.get("error"))


def expected_409(resp: Any) -> str | None:
    """A cancel or replace of an order that filled meanwhile, or a replace while an earlier
    one is queued, is the exchange working: counted under its own name, not as an error."""
    if resp.status_code == 202:
        return None
    code = error_code(resp)
    if resp.status_code == 409 and code in ("ORDER_NOT_OPEN", "REPLACE_PENDING"):
        resp.request_meta["name"] += f" [409 {code}]"
        resp.success()
        return code
    resp.failure(f"{resp.status_code} {code}")
    return code


class ModelTrader(Trader):
    abstract = True
    pace = 1.0

    def on_start(self) -> None:
        super().on_start()
        gevent.sleep(self.random.random() * self.pace)  # arrivals spread over one pace
        self.next_at = perf_counter()  # phased_pacing's schedule starts here

    @task
    def act(self) -> None:
        self.iteration()


class OrdinaryUser(ModelTrader):
    weight = 75
    pace = 10.0 / SPEED
    wait_time = phased_pacing(pace)


class ActiveTrader(ModelTrader):
    weight = 18
    pace = 3.0 / SPEED
    wait_time = phased_pacing(pace)


class DayTrader(ModelTrader):
    weight = 7
    pace = 1.0 / SPEED
    wait_time = phased_pacing(pace)


class MaxUser(Trader):
    """Open loop: the timer fires every `pace_s` whatever the answers take; up to
    IN_FLIGHT iterations of one user run at once over that many connections."""

    concurrency = IN_FLIGHT
    wait_time = phased_pacing(CONFIG.get("pace_s", 1.0))

    def on_start(self) -> None:
        super().on_start()
        self.pool = Pool(IN_FLIGHT)
        gevent.sleep(self.random.random() * CONFIG.get("pace_s", 1.0))
        self.next_at = perf_counter()

    @task
    def act(self) -> None:
        self.pool.spawn(self.iteration)  # blocks only when IN_FLIGHT are waiting

    def on_stop(self) -> None:
        self.pool.kill(block=False)
        super().on_stop()
