"""`python -m loadtest.consoles`: N operator consoles' worth of readers on a running API,
to measure what open consoles cost it (api/console.py), and a screenshot of the real page.

Each reader does what the page does (api/console_files/): it follows GET /v1/admin/console
on a keep-alive connection, asking with `?after=` once the reply's x-next-snapshot-ms has
passed, and reads one symbol's book and recent trades once a second and its minute candles
every 5 s (the market view).
Readers run until `--seconds` pass or the API goes away (a load test's stack stopping), then the
tool prints what they received. With `--screenshot PATH` one headless chromium tab
(Playwright, the dev extra) signs in and saves the page after `--screenshot-after` seconds.

    python -m loadtest.run --seconds 60 --rate 2000 &     # SPOT_API_PORT, SPOT_JWT_SECRET set
    python -m loadtest.consoles --port $SPOT_API_PORT --readers 20 --seconds 150

The token is made from SPOT_JWT_SECRET (an admin's, `ops`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from api.auth import make_token

START_WAIT_S = 180.0  # for the API to come up (a load test seeds first)


@dataclass
class Reader:
    port: int
    token: str
    symbol: str
    until: float
    snapshots: int = 0
    market_messages: int = 0
    errors: list[str] = field(default_factory=list)

    def follow(self) -> None:
        """A request a snapshot, each just after it is made, as the page's loop does."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {self.token}"}
        after = 0
        while time.monotonic() < self.until:
            try:
                conn.request("GET", f"/v1/admin/console?after={after}", headers=headers)
                reply = conn.getresponse()
                body = reply.read()
            except OSError as exc:  # the API stopped: the run is over
                self.errors.append(f"console: {exc!r}")
                return
            if reply.status != 200:
                self.errors.append(f"console: {reply.status} {body[:200]!r}")
                time.sleep(1)
                continue
            after = json.loads(body)["at_ms"]
            self.snapshots += 1
            next_ms = int(reply.getheader("x-next-snapshot-ms") or 0)
            time.sleep(min(next_ms + 60, 2000) / 1000)
        conn.close()

    def watch(self) -> None:
        """The market view: one symbol's book and recent trades once a second, its candles
        every fifth."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        paths = [f"/v1/book/{self.symbol}?depth=50", f"/v1/trades/{self.symbol}?limit=100"]
        candles = f"/api/v3/klines?symbol={self.symbol}&interval=1m&limit=30"
        second = 0
        while time.monotonic() < self.until:
            for path in paths + ([candles] if second % 5 == 0 else []):
                try:
                    conn.request("GET", path)
                    reply = conn.getresponse()
                    reply.read()
                except OSError as exc:
                    self.errors.append(f"market: {exc!r}")
                    return
                self.market_messages += reply.status == 200
            second += 1
            time.sleep(1)
        conn.close()


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no API ready on port {port}")


def screenshot(port: int, token: str, path: Path, after_s: float) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.goto(f"http://127.0.0.1:{port}/console")
            page.fill("#token", token)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#console:not([hidden])")
            page.wait_for_timeout(after_s * 1000)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.consoles", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("SPOT_API_PORT", 8000)))
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--symbol", default="AAPL", help="the market view's symbol")
    parser.add_argument(
        "--no-market", action="store_true", help="follow the snapshots only, no market view"
    )
    parser.add_argument("--screenshot", type=Path, help="save the page here (a PNG)")
    parser.add_argument("--screenshot-after", type=float, default=30.0, help="seconds signed in")
    args = parser.parse_args(argv)
    secret = os.environ.get("SPOT_JWT_SECRET")
    if not secret:
        raise SystemExit("set SPOT_JWT_SECRET to the API's secret")
    token = make_token("ops", secret=secret, admin=True)
    _wait_for(args.port)
    until = time.monotonic() + args.seconds
    readers = [Reader(args.port, token, args.symbol, until) for _ in range(args.readers)]
    threads = [threading.Thread(target=r.follow, daemon=True) for r in readers]
    if not args.no_market:
        threads += [threading.Thread(target=r.watch, daemon=True) for r in readers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    if args.screenshot is not None:
        screenshot(args.port, token, args.screenshot, args.screenshot_after)
        print(f"saved {args.screenshot}")
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    snapshots = sum(r.snapshots for r in readers)
    market = sum(r.market_messages for r in readers)
    print(
        f"{len(readers)} readers for {elapsed:.0f} s: {snapshots} snapshots "
        f"({snapshots / max(elapsed, 1) / max(len(readers), 1):.2f}/s each), "
        f"{market} market-data replies"
    )
    errors = [e for r in readers for e in r.errors]
    if errors:  # a load test's stack stopping ends every reader so
        print(f"{len(errors)} readers ended early or saw errors, the first: {errors[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
