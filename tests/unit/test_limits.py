"""The token buckets of api/limits.py, on a clock the test gives."""

from __future__ import annotations

import pytest

from api import limits
from api.errors import HTTPError
from api.limits import Buckets, Trusted


def test_a_bucket_holds_its_burst_and_refills_at_its_rate() -> None:
    bucket = Buckets(5.0, "requests")  # a burst of 10
    for _ in range(10):
        bucket.take("u", 100.0)
    with pytest.raises(HTTPError) as refused:
        bucket.take("u", 100.0)
    assert (refused.value.status, refused.value.code) == (429, "RATE_LIMITED")
    assert dict(refused.value.headers or [])["retry-after"] == "1"
    bucket.take("u", 100.2)  # 0.2 s at 5/s: one token back
    with pytest.raises(HTTPError):
        bucket.take("u", 100.2)
    bucket.take("other", 100.2)  # a key of its own
    for _ in range(10):  # idle long enough: full again, and never more than full
        bucket.take("u", 1_000.0)
    with pytest.raises(HTTPError):
        bucket.take("u", 1_000.0)


def test_retry_after_is_when_a_token_is_back() -> None:
    bucket = Buckets(0.25, "orders")  # one token every 4 s, a burst of 1 (at least one)
    bucket.take("u", 0.0)
    with pytest.raises(HTTPError) as refused:
        bucket.take("u", 1.0)
    assert dict(refused.value.headers or [])["retry-after"] == "3"


def test_buckets_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BUCKETS", 100)
    bucket = Buckets(1.0, "requests")
    for n in range(1_000):
        bucket.take(f"u{n}", float(n))  # one new key a second: the old ones refill
    assert len(bucket._buckets) <= 100
    for n in range(1_000):
        bucket.take(f"v{n}", 5_000.0)  # all at once: none is full, so all go
    assert len(bucket._buckets) <= 100


@pytest.mark.parametrize(
    "networks,address,trusted",
    [
        ("127.0.0.0/8,::1/128", "127.0.0.1", True),
        ("127.0.0.0/8,::1/128", "[::1]", True),
        ("127.0.0.0/8,::1/128", "10.1.2.3", False),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("none", "127.0.0.1", False),
        ("none", "not-an-address", True),  # a Unix socket: nobody to limit by
    ],
)
def test_trusted_networks(networks: str, address: str, trusted: bool) -> None:
    assert (address in Trusted(networks)) is trusted
