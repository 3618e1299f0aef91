"""The OpenAPI document and the server agree both ways (issue #19): schemathesis, every
check, its coverage, fuzzing and stateful phases, against a real API on the tests' Redis
and PostgreSQL, once with an admin token (which is a user's too) and once with an ordinary
user's, whom every admin route must refuse with a 403 the document declares. A bounded run,
to stay short; README has the long one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from api.order_gateway import OrderGateway
from schema.symbols import SymbolSpec
from store import db
from store.symbols import list_symbol
from tests.integration.http import Server, admin, start_api, stop_api, user_token

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 8
SEED = 19
USER = "fuzzer"  # the ordinary user's run; the admin token's user is "ops"
# With an ordinary user's token an admin route refuses every request the document allows
# with 403 (the 401s of a missing or forged token are the ignored_auth check's business).
USER_CONFIG = """
[[operations]]
include-path-regex = "^/v1/admin/"
checks.positive_data_acceptance.expected-statuses = ["403"]
"""
BTC = SymbolSpec(
    symbol="BTC-USD", base="BTC", quote="USD", tick=10, lot=5, min_qty=5, max_qty=1000,
    band_bps=1000, reference_price=50_000,
)  # fmt: skip


@pytest.fixture(scope="module")
def api(
    redis_url: str, database_url: str, aio: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    async def seed() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            await list_symbol(client, BTC, 4)
            gateway = OrderGateway(client)
            for user in ("ops", USER):
                for asset in ("BTC", "USD"):
                    await gateway.transfer(user, asset, 10**12, "seed")
        finally:
            await client.aclose()

    db.upgrade(database_url)
    aio.run(seed())
    server = start_api(
        tmp_path_factory.mktemp("api"),
        redis_url=redis_url,
        database_url=database_url,
        shards="4",
        # the fuzzer is one user sending as fast as it can: limits would answer most of it
        rate_limit_user="0",
        rate_limit_orders="0",
        rate_limit_ip="0",
    )
    try:
        yield server
    finally:
        stop_api(server)


@pytest.mark.parametrize("role", ["admin", "user"])
def test_schemathesis_finds_no_disagreement(api: Server, tmp_path: Path, role: str) -> None:
    token, config = admin(), CONFIG
    if role == "user":
        token, config = user_token(USER), tmp_path / CONFIG.name
        config.write_text(CONFIG.read_text() + USER_CONFIG)
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the dev extra"
    done = subprocess.run(
        [
            st, "--no-color", "--config-file", str(config), "run",
            f"http://127.0.0.1:{api.port}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", "all",
            "--exclude-path", "/v1/ws",  # WebSocket: not HTTP's to fuzz (426 for a GET)
            # Binance's v3: the document names its operations, not their parameters (they
            # are Binance's); tests/integration/test_api_binance.py sweeps those instead
            "--exclude-path-regex", "^/api/v3/",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED),
            "--workers", "1",
        ],
        cwd=tmp_path,  # its .schemathesis/ cache of crashes goes there
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
