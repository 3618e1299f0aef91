"""The console's figures from counters (api/console.py): a latency percentile from one
interval's histogram buckets, and a rate from two readings of a running total."""

from __future__ import annotations

import pytest

from api.console import STALE_MS, RunningRate, quantile
from api.metrics import BUCKETS

BOUNDS = (0.001, 0.005, 0.01, 0.1)


def test_no_observation_has_no_quantile() -> None:
    assert quantile([0, 0, 0, 0, 0], BOUNDS, 0.99) is None


def test_a_quantile_is_interpolated_inside_its_bucket() -> None:
    # 100 observations: 90 under 1 ms, 10 between 5 and 10 ms. The 99th is the 9th of those
    # 10, 90% of the way through the bucket (Prometheus' histogram_quantile).
    assert quantile([90, 0, 10, 0, 0], BOUNDS, 0.99) == pytest.approx(0.0095)
    assert quantile([90, 0, 10, 0, 0], BOUNDS, 0.5) == pytest.approx(0.001 * 50 / 90)


def test_the_first_bucket_starts_at_zero_and_the_last_answers_its_bound() -> None:
    assert quantile([4, 0, 0, 0, 0], BOUNDS, 0.5) == pytest.approx(0.0005)
    assert quantile([0, 0, 0, 0, 7], BOUNDS, 0.99) == 0.1  # all past the last bound: "> 100 ms"


def test_the_api_histogram_has_a_bucket_past_its_bounds() -> None:
    counts = [0] * len(BUCKETS) + [1]
    assert quantile(counts, BUCKETS, 0.99) == BUCKETS[-1]


def test_a_rate_from_two_readings_of_a_running_total() -> None:
    rate = RunningRate()
    assert rate.update((1_500, 100), 1_600) is None  # one reading is no rate
    assert rate.update((2_000, 150), 2_100) == 100.0


def test_a_reading_no_newer_keeps_the_rate_until_it_is_stale() -> None:
    rate = RunningRate()
    rate.update((1_000, 0), 1_000)
    assert rate.update((2_000, 50), 2_000) == 50.0
    # A publisher a little slower than the reader: the same reading again is no stop.
    assert rate.update((2_000, 50), 3_000) == 50.0
    assert rate.update((2_000, 50), 2_000 + STALE_MS + 1) == 0.0  # nothing published: idle
    assert rate.update((10_000, 90), 10_000) == 5.0  # 40 over the 8 s since


@pytest.mark.parametrize(
    ("second", "then"),
    [
        (None, None),  # no reading at all (the hash is gone): the next one starts over
        ((2_000, 3), 17.0),  # the total went down (its hash made anew): counted from there
        ((900, 10), 4.8),  # a reading older than the last (a clock stepped back): likewise
    ],
)
def test_no_rate_without_two_comparable_readings(second, then) -> None:
    rate = RunningRate()
    rate.update((1_000, 5), 1_000)
    assert rate.update(second, 2_000) is None
    assert rate.update((3_000, 20), 3_000) == then


def test_a_reset_rate_starts_over() -> None:
    rate = RunningRate()
    rate.update((1_000, 5), 1_000)
    rate.update((2_000, 10), 2_000)
    assert rate.update(None, 0) is None
    assert rate.update((3_000, 20), 3_000) is None
