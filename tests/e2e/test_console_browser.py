"""The operator console in a real headless browser (Debian's chromium, driven by Playwright)
against a running exchange: `spot up --seed` with the rebalancer, and traders placing
crossing orders over HTTP meanwhile. The page loads, asks for a token and shows nothing
before it gets an admin's; a user's token is refused with the API's 403; signed in, it
shows every shard and follows the exchange while orders flow; a migration started from the
page is seen through to DONE, and the API's refusal of a second one is shown as it is.

Screenshots go to artifacts/console/ (git-ignored): CI keeps them beside its log.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.auth import make_token
from schema import keys
from spot.seed import DEMO_SYMBOLS
from spot.stack import ensure_database

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "console"
SECRET = "console-e2e-secret-long-enough-for-hs256"
SHARDS = 10
START_TIMEOUT_S = 120.0
WAIT_MS = 30_000  # for the page to show a thing: the machine is shared
MIGRATION_WAIT_MS = 90_000
TRADED = {s.symbol: s.reference_price or 100 for s in DEMO_SYMBOLS if s.symbol in ("AAPL", "MSFT")}

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def stack() -> Iterator[int]:
    """`spot up --seed` with the rebalancer, on embedded servers or the machine's (a Redis
    DB and a database of this module's own); yields the API's port."""
    # Not under tmp_path_factory: as root the embedded PostgreSQL runs as an unprivileged
    # user, locked out of /tmp/pytest-of-root (tests/conftest.py says more).
    folder = Path(tempfile.mkdtemp(prefix="spot-console-e2e-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")}
    env |= {
        "SPOT_DATA_DIR": str(folder / "data"),
        "SPOT_API_PORT": str(port),
        "SPOT_JWT_SECRET": SECRET,
        "SPOT_REBALANCER": "1",
    }
    if os.environ.get("SPOT_REDIS_URL"):
        url = os.environ["SPOT_REDIS_URL"].rsplit("/", 1)[0] + "/13"
        subprocess.run(["redis-cli", "-u", url, "flushdb"], check=False, capture_output=True)
        env["SPOT_REDIS_URL"] = url
    if os.environ.get("SPOT_DATABASE_URL"):
        # A loop of its own in a thread: Playwright's sync API runs one in this thread
        # already when the browser fixture came first (aio.run refuses inside it).
        made: list[str] = []
        worker = threading.Thread(
            target=lambda: made.append(
                asyncio.run(ensure_database(os.environ["SPOT_DATABASE_URL"], "spot_console_e2e"))
            )
        )
        worker.start()
        worker.join()
        url = made[0]
        env["SPOT_DATABASE_URL"] = url
    log = (folder / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "spot.cli", "up", "--seed", "--users", "20"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _get(port, "/readyz") != 200:
            assert up.poll() is None, (folder / "up.log").read_text()
            assert time.monotonic() < deadline, "spot up never became ready"
            time.sleep(0.3)
        yield port
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


class Traders(threading.Thread):
    """Users u1..u10 placing limit orders around the reference price on two symbols, both
    sides, so that some cross: ~`rate` orders a second until stopped."""

    def __init__(self, port: int, rate: float = 40.0) -> None:
        super().__init__(daemon=True)
        self.port, self.pause_s = port, 1 / rate
        self.tokens = [make_token(f"u{n}", secret=SECRET) for n in range(1, 11)]
        self.stopped = threading.Event()
        self.accepted = 0
        self.refused: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        chance = random.Random(18)
        while not self.stopped.is_set():
            symbol = chance.choice(list(TRADED))
            body = {
                "symbol": symbol,
                "side": chance.choice(["BUY", "SELL"]),
                "price": TRADED[symbol] + chance.randint(-10, 10),
                "quantity": chance.randint(1, 5),
            }
            headers = {"Authorization": f"Bearer {chance.choice(self.tokens)}"}
            try:
                conn.request("POST", "/v1/orders", json.dumps(body), headers)
                reply = conn.getresponse()
                text = reply.read()
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            if reply.status == 202:
                self.accepted += 1
            else:
                self.refused.append(text.decode())
            self.stopped.wait(self.pause_s)
        conn.close()


@pytest.fixture(scope="module")
def traders(stack: int) -> Iterator[Traders]:
    flow = Traders(stack)
    flow.start()
    yield flow
    flow.stopped.set()
    flow.join(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium())
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, stack: int, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab (its own context: nothing carried over from another test) on /console;
    a screenshot of how it ended goes to artifacts/console/<test>.png, pass or fail."""
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    # Chromium logs each HTTP error status it loads; the page expects some (a refusal).
    tab.on("console", lambda m: tab.errors.append(m.text) if _script_error(m) else None)
    tab.goto(f"http://127.0.0.1:{stack}/console")
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()


def _script_error(message: Any) -> bool:
    return bool(message.type == "error" and not message.text.startswith("Failed to load resource"))


def sign_in(page: Any, token: str) -> None:
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def admin() -> str:
    return make_token("ops", secret=SECRET, admin=True)


def shard_of(page: Any, symbol: str) -> int:
    row = page.locator("#shards tbody tr", has=page.locator(".chip", has_text=symbol))
    return int(row.get_attribute("data-shard"))


# -- the tests ---------------------------------------------------------------------------------


def test_an_anonymous_page_asks_for_a_token_and_reads_nothing_private(page: Any) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()
    page.wait_for_timeout(1500)  # long enough for any poll to have started

    expect(page.locator("#console")).to_be_hidden()
    assert page.locator("#shards tbody tr").count() == 0
    assert [u for u in asked if "/v1/" in u] == []  # it asks for no data, public or private
    assert page.errors == []


def test_a_user_token_is_refused_with_the_apis_403(page: Any) -> None:
    sign_in(page, make_token("u1", secret=SECRET))

    refusal = page.locator("#login-error")
    expect(refusal).to_have_text("403 FORBIDDEN: an admin token is needed", timeout=WAIT_MS)
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#token")).to_have_value("")  # the token is not left in the page
    assert page.locator("#shards tbody tr").count() == 0


def test_signed_in_it_shows_every_shard_and_follows_the_orders(page: Any, traders: Traders) -> None:
    sign_in(page, admin())

    expect(page.locator("#console")).to_be_visible(timeout=WAIT_MS)
    rows = page.locator("#shards tbody tr")
    expect(rows).to_have_count(SHARDS, timeout=WAIT_MS)
    for spec in DEMO_SYMBOLS:  # seeded on their home shards; nothing has moved yet
        assert shard_of(page, spec.symbol) == keys.home_shard(spec.symbol, SHARDS), spec.symbol
    expect(page.locator("#shards tbody tr[data-level='NORMAL']")).to_have_count(
        SHARDS, timeout=WAIT_MS
    )  # the rebalancer has weighed every shard
    expect(page.locator("#status")).to_have_attribute("data-state", "live")

    # It updates while orders flow: the chart gains a point a second, the rates move off 0;
    # one short request a snapshot, each just after the API made it (not a long poll).
    polls: list[float] = []
    page.on(
        "requestfinished",
        lambda r: (
            polls.append(r.timing["responseEnd"] - r.timing["requestStart"])
            if "/v1/admin/console" in r.url
            else None
        ),
    )
    chart = page.locator("#rates-chart")
    before = int(chart.get_attribute("data-points"))
    page.wait_for_function(
        "n => Number(document.getElementById('rates-chart').dataset.points) >= n + 3",
        arg=before,
        timeout=WAIT_MS,
    )
    page.wait_for_function(
        "() => Number(document.getElementById('t-accepted').textContent) > 0", timeout=WAIT_MS
    )
    page.wait_for_function(
        "() => Number(document.getElementById('t-persisted').textContent) > 0", timeout=WAIT_MS
    )
    # A long poll would last until the next snapshot, nearly the interval (1 s) each time.
    assert len(polls) >= 3 and statistics.median(polls) < 500, polls  # in milliseconds
    hot = page.locator(f"#shards tbody tr[data-shard='{shard_of(page, 'AAPL')}'] td.orders")
    page.wait_for_function("el => Number(el.textContent) > 0", arg=hot.element_handle())
    assert page.locator("#rates-chart path.line.accepted").count() == 1

    # The market view follows AAPL from the public routes: trades seen live, and a book.
    expect(page.locator("#market-state")).to_contain_text("updated", timeout=WAIT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#trades tbody td:last-child')]"
        ".some(td => td.textContent.includes(':'))",
        timeout=WAIT_MS,
    )
    # The batcher's minute candles, through /api/v3/klines (the stack has a database).
    expect(page.locator("#candles-chart")).to_have_attribute("data-source", "stored")
    expect(page.locator("#candles-chart rect.candle")).not_to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#best-bid")).not_to_have_text("–", timeout=WAIT_MS)
    assert traders.accepted > 0 and not traders.refused[:1], traders.refused[:3]
    assert page.errors == []


def test_a_migration_started_from_the_page_is_seen_to_done(page: Any, traders: Traders) -> None:
    sign_in(page, admin())
    expect(page.locator("#shards tbody tr")).to_have_count(SHARDS, timeout=WAIT_MS)
    source = shard_of(page, "MSFT")
    target = (source + 1) % SHARDS

    page.select_option("#migrate-symbol", "MSFT")
    page.select_option("#migrate-shard", str(target))
    page.click("#migrate-start")

    result = page.locator("#migrate-result")
    expect(result).to_have_attribute("data-state", "accepted", timeout=WAIT_MS)
    expect(result.locator("p")).to_contain_text("202: migration MSFT-", timeout=WAIT_MS)
    migration_id = json.loads(result.locator("pre").text_content())["id"]
    row = page.locator(f"#migrations tbody tr[data-migration='{migration_id}']")
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_have_attribute("data-state", "DONE", timeout=MIGRATION_WAIT_MS)
    expect(row).to_contain_text(f"{source} → {target}")
    expect(row.locator("td.steps")).to_contain_text("SWITCH")
    page.wait_for_function(
        "([shard]) => [...document.querySelectorAll("
        "`#shards tbody tr[data-shard='${shard}'] .chip`)].some(c => c.textContent === 'MSFT')",
        arg=[target],
        timeout=WAIT_MS,
    )

    # Again to the same shard: the API's refusal, as it said it.
    page.click("#migrate-start")
    expect(result).to_have_attribute("data-state", "refused", timeout=WAIT_MS)
    expect(result.locator("p")).to_contain_text("409 ALREADY_ON_SHARD: ")
    refused = json.loads(result.locator("pre").text_content())
    assert refused["error"] == "ALREADY_ON_SHARD"
    assert page.errors == []


def test_signing_out_forgets_the_token(page: Any, stack: int) -> None:
    sign_in(page, admin())
    expect(page.locator("#console")).to_be_visible(timeout=WAIT_MS)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.click("#sign-out")

    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()
    asked.clear()
    page.wait_for_timeout(2500)
    assert [u for u in asked if "/v1/admin/" in u] == []  # no poll goes on without a token
    # Nothing of it was stored where it would outlive the tab.
    stored = page.evaluate(
        "() => [document.cookie, JSON.stringify({...localStorage}), "
        "JSON.stringify({...sessionStorage}), location.href]"
    )
    assert stored[:3] == ["", "{}", "{}"] and stored[3].endswith("/console"), stored
