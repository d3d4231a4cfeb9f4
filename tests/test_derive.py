"""Rates with reset handling and Prometheus's histogram_quantile, on worked examples."""

from __future__ import annotations

import math

import pytest

from wfdash.collect.derive import (
    CounterHistory,
    Ring,
    SeriesLayout,
    histogram_quantile,
    merge_buckets,
)

INF = math.inf

# The example from the Prometheus docs ("Histograms and summaries"): request durations.
DOCS_BUCKETS = [
    (0.05, 24054.0),
    (0.1, 33444.0),
    (0.2, 100392.0),
    (0.5, 129389.0),
    (1.0, 133988.0),
    (INF, 144320.0),
]


def test_median_interpolates_inside_the_bucket() -> None:
    # rank 72160 falls in (0.1, 0.2]: 0.1 + 0.1 * (72160 - 33444) / (100392 - 33444)
    assert histogram_quantile(0.5, DOCS_BUCKETS) == pytest.approx(0.1 + 0.1 * 38716 / 66948)


def test_rank_in_inf_bucket_returns_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, DOCS_BUCKETS) == 1.0


def test_first_bucket_starts_at_zero() -> None:
    assert histogram_quantile(0.1, DOCS_BUCKETS) == pytest.approx(0.05 * (0.1 * 144320) / 24054)


def test_bucket_order_does_not_matter() -> None:
    assert histogram_quantile(0.5, list(reversed(DOCS_BUCKETS))) == histogram_quantile(
        0.5, DOCS_BUCKETS
    )


@pytest.mark.parametrize(
    "buckets",
    [
        [(0.1, 0.0), (1.0, 0.0), (INF, 0.0)],  # empty window: no value, not 0
        [(0.1, 3.0), (1.0, 5.0)],  # no +Inf bucket
        [(INF, 4.0)],  # fewer than two buckets
        [],
    ],
)
def test_no_value_cases(buckets: list[tuple[float, float]]) -> None:
    assert histogram_quantile(0.5, buckets) is None


def test_out_of_range_q_like_prometheus() -> None:
    assert histogram_quantile(-0.1, DOCS_BUCKETS) == -INF
    assert histogram_quantile(1.1, DOCS_BUCKETS) == INF
    assert histogram_quantile(math.nan, DOCS_BUCKETS) is None


def test_non_monotonic_counts_are_fixed_up() -> None:
    # A scrape is not atomic across buckets; Prometheus takes the running maximum.
    wobbly = [(0.1, 10.0), (0.5, 9.0), (1.0, 20.0), (INF, 20.0)]
    fixed = [(0.1, 10.0), (0.5, 10.0), (1.0, 20.0), (INF, 20.0)]
    assert histogram_quantile(0.75, wobbly) == histogram_quantile(0.75, fixed)


def test_all_observations_in_first_bucket() -> None:
    assert histogram_quantile(0.95, [(0.5, 10.0), (1.0, 10.0), (INF, 10.0)]) == pytest.approx(0.475)


def test_merged_buckets_give_the_service_quantile_not_an_average() -> None:
    fast = {0.1: 90.0, 1.0: 100.0, INF: 100.0}
    slow = {0.1: 0.0, 1.0: 10.0, INF: 10.0}
    merged = merge_buckets([fast, slow])
    assert merged == [(0.1, 90.0), (1.0, 110.0), (INF, 110.0)]
    p50 = histogram_quantile(0.5, merged)
    assert p50 == pytest.approx(0.1 * 55 / 90)
    average_of_p50s = (
        histogram_quantile(0.5, sorted(fast.items()))
        + histogram_quantile(0.5, sorted(slow.items()))
    ) / 2  # type: ignore[operator]
    assert p50 != pytest.approx(average_of_p50s)


def _history(
    points: list[tuple[float, float]], reset_at: set[float] | None = None
) -> CounterHistory:
    history = CounterHistory(SeriesLayout(("requests",)), max_points=100)
    for t, value in points:
        history.add(t, [value], reset=t in (reset_at or set()))
    return history


def test_rate_over_window() -> None:
    history = _history([(0, 100), (10, 110), (20, 130), (30, 160)])
    elapsed, increase = history.window(now=30, seconds=60)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (30, 60)
    elapsed, increase = history.window(now=30, seconds=15)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (10, 30)  # from t=20 (first point inside the window)


def test_counter_reset_counts_the_new_value_not_a_negative_delta() -> None:
    # The replica restarted between t=20 and t=30: 130 → 5 means 5 new requests.
    history = _history([(0, 100), (10, 110), (20, 130), (30, 5), (40, 25)])
    elapsed, increase = history.window(now=40, seconds=60)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (40, 30 + 5 + 20)


def test_forced_reset_when_created_timestamp_changes() -> None:
    # Counter restarted and grew past its old value between scrapes: only _created tells.
    history = _history([(0, 100), (10, 150)], reset_at={10})
    _, increase = history.window(now=10, seconds=60)  # type: ignore[misc]
    assert increase[0] == 150


def test_window_needs_two_points() -> None:
    assert _history([(0, 1)]).window(now=0, seconds=60) is None
    assert _history([(0, 1), (100, 2)]).window(now=100, seconds=60) is None


def test_out_of_order_points_are_ignored() -> None:
    history = _history([(0, 10), (10, 20), (5, 1000)])
    _, increase = history.window(now=10, seconds=60)  # type: ignore[misc]
    assert increase[0] == 10


def test_history_is_bounded() -> None:
    history = CounterHistory(SeriesLayout(("x",)), max_points=5)
    for t in range(100):
        history.add(float(t), [float(t)])
    assert len(history) == 5


def test_ring_keeps_gaps_and_bounds() -> None:
    ring = Ring(3)
    for t, v in [(1, 1.0), (2, None), (3, 3.0), (4, 4.0)]:
        ring.append(t, v)
    assert ring.values() == (None, 3.0, 4.0)
    assert ring.latest == 4.0
