"""Rates with reset handling and Prometheus's histogram_quantile, on worked examples."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from wfdash.collect.derive import (
    CounterHistory,
    Ring,
    SeriesLayout,
    histogram_quantile,
    histogram_quantiles,
    merge_buckets,
)

INF = math.inf
NAN = math.nan

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
    elapsed, increase, _ = history.window(now=30, seconds=60)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (30, 60)
    elapsed, increase, _ = history.window(now=30, seconds=15)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (10, 30)  # from t=20 (first point inside the window)


def test_counter_reset_counts_the_new_value_not_a_negative_delta() -> None:
    # The replica restarted between t=20 and t=30: 130 → 5 means 5 new requests.
    history = _history([(0, 100), (10, 110), (20, 130), (30, 5), (40, 25)])
    elapsed, increase, _ = history.window(now=40, seconds=60)  # type: ignore[misc]
    assert (elapsed, increase[0]) == (40, 30 + 5 + 20)


def test_forced_reset_when_created_timestamp_changes() -> None:
    # Counter restarted and grew past its old value between scrapes: only _created tells.
    history = _history([(0, 100), (10, 150)], reset_at={10})
    _, increase, _ = history.window(now=10, seconds=60)  # type: ignore[misc]
    assert increase[0] == 150


def test_window_needs_two_points() -> None:
    assert _history([(0, 1)]).window(now=0, seconds=60) is None
    assert _history([(0, 1), (100, 2)]).window(now=100, seconds=60) is None


def test_out_of_order_points_are_ignored() -> None:
    history = _history([(0, 10), (10, 20), (5, 1000)])
    _, increase, _ = history.window(now=10, seconds=60)  # type: ignore[misc]
    assert increase[0] == 10


def test_history_is_bounded() -> None:
    history = CounterHistory(SeriesLayout(("x",)), max_points=5)
    for t in range(100):
        history.add(float(t), [float(t)])
    assert len(history) == 5


def test_a_series_that_appears_counts_from_its_first_sample() -> None:
    history = CounterHistory(SeriesLayout(("a",)), max_points=100)
    for t in range(0, 40, 10):
        history.add(float(t), [float(t)])
    history.relayout(SeriesLayout(("a", "b")))  # b arrives with a big lifetime total
    history.add(40.0, [40.0, 1e6])
    span = history.window(now=40, seconds=60)
    assert span is not None
    assert (span.elapsed, span.increase[0], span.seconds(0)) == (40, 40, 40)
    assert math.isnan(span.increase[1])  # one sample of b: no increase yet
    history.add(50.0, [50.0, 1e6 + 5])
    span = history.window(now=50, seconds=60)
    assert span is not None
    assert (span.increase[0], span.seconds(0)) == (50, 50)
    assert (span.increase[1], span.seconds(1)) == (5, 10)


def test_a_series_missing_from_some_scrapes_counts_its_samples_on_either_side() -> None:
    """The backend's families drop out of the agent's answer now and then: its counters'
    rates use the samples they have, as PromQL's do, and the others are not disturbed."""
    history = CounterHistory(SeriesLayout(("a", "b")), max_points=100)
    history.add(0.0, [0.0, 100.0])
    history.add(10.0, [10.0, 110.0])
    history.relayout(SeriesLayout(("a",)))
    assert history.layout.keys == ("a", "b")  # b has samples: kept
    history.add(20.0, [25.0, NAN])
    span = history.window(now=20, seconds=60)
    assert span is not None
    assert (span.increase[0], span.seconds(0)) == (25, 20)
    assert (span.increase[1], span.seconds(1)) == (10, 10)  # up to its last sample
    history.add(30.0, [30.0, 190.0])  # back: its growth while missing counts
    span = history.window(now=30, seconds=60)
    assert span is not None and span.spans == {}
    assert list(span.increase) == [30.0, 90.0]
    history.add(40.0, [31.0, 5.0])  # restarted while no one looked: counted as a reset
    span = history.window(now=40, seconds=60)
    assert span is not None and span.increase[1] == 95.0


def test_a_series_with_no_sample_left_is_forgotten() -> None:
    history = CounterHistory(SeriesLayout(("a", "b")), max_points=3)
    history.add(0.0, [0.0, 7.0])
    for t in (1.0, 2.0):
        history.add(t, [t, NAN])
    assert history.layout.keys == ("a", "b")
    history.add(3.0, [3.0, NAN])  # the last point with a sample of b has left
    assert history.layout.keys == ("a",)
    history.add(4.0, [4.0])
    span = history.window(now=4, seconds=60)
    assert span is not None and list(span.increase) == [2.0]


def test_values_must_match_the_series() -> None:
    history = CounterHistory(SeriesLayout(("a", "b")), max_points=3)
    with pytest.raises(ValueError, match="1 values for 2 series"):
        history.add(0.0, [1.0])


def _reference_increase(
    samples: list[tuple[float, float, bool]], start: float
) -> tuple[float, float] | None:
    """One series' (increase, span) from its own samples (t, raw, reset), as PromQL's
    ``increase`` without extrapolation: between its first and last sample from ``start``."""
    inside = [sample for sample in samples if sample[0] >= start]
    if len(inside) < 2:
        return None
    total = 0.0
    for (_, before, _), (_, value, reset) in itertools.pairwise(inside):
        total += value if reset or value < before else value - before
    return total, inside[-1][0] - inside[0][0]


@pytest.mark.parametrize("seed", range(100))
def test_series_coming_and_going_match_a_per_series_reference(seed: int) -> None:
    """Each series' increase is what its own samples give, whatever the others do, through
    gaps, restarts, series that appear late and series forgotten after a long absence."""
    rng = random.Random(seed)
    keys = ["a", "b", "c", "d"]
    capacity = rng.choice([4, 8, 100])
    history: CounterHistory | None = None
    raw = {key: rng.uniform(0, 1e6) for key in keys}
    samples: dict[str, list[tuple[float, float, bool]]] = {key: [] for key in keys}
    scrapes: list[float] = []
    t = 1000.0
    for step in range(40):
        t += rng.choice([1.0, 2.0, 2.5])
        scrapes.append(t)
        present = [key for key in keys if rng.random() < rng.choice([0.3, 0.85, 1.0])]
        reset = rng.random() < 0.05
        for key in keys:
            # Forgotten once no point the history holds has a sample of it.
            held = scrapes[-capacity:]
            if samples[key] and samples[key][-1][0] < held[0]:
                samples[key] = []
            if key not in present:
                continue
            raw[key] = rng.uniform(0, 10) if reset or rng.random() < 0.03 else raw[key]
            raw[key] += rng.choice([0.0, 1.0, rng.uniform(0, 50)])
            samples[key].append((t, raw[key], reset))
        layout = SeriesLayout(tuple(present))
        if history is None:
            history = CounterHistory(layout, max_points=capacity)
        history.relayout(layout)
        history.add(t, [raw[key] if key in present else NAN for key in history.layout.keys], reset)
        span = history.window(now=t, seconds=15.0)
        start = max(t - 15.0, scrapes[-capacity:][0])  # the window, within what is held
        for key in keys:
            want = _reference_increase(samples[key], start)
            position = history.layout.positions.get(key)
            if span is None or position is None or math.isnan(span.increase[position]):
                assert want is None, (step, key)
            else:
                assert want is not None, (step, key)
                assert span.increase[position] == pytest.approx(want[0], rel=1e-9, abs=1e-6)
                assert span.seconds(position) == want[1]


def test_ring_keeps_gaps_and_bounds() -> None:
    ring = Ring(3)
    for t, v in [(1, 1.0), (2, None), (3, 3.0), (4, 4.0)]:
        ring.append(t, v)
    assert ring.values() == (None, 3.0, 4.0)
    assert ring.latest == 4.0


# ------------------------------------------------- the fast paths against plain references


def reference_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """histogram_quantile as first written: one loop, no shared preparation."""
    if math.isnan(q):
        return None
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(buckets, key=lambda b: b[0])
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    fixed: list[tuple[float, float]] = []
    running_max = 0.0
    for bound, count in ordered:
        running_max = max(running_max, count)
        fixed.append((bound, running_max))
    observations = fixed[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end = 0.0, fixed[index][0]
    count = fixed[index][1]
    if index > 0:
        start = fixed[index - 1][0]
        count -= fixed[index - 1][1]
        rank -= fixed[index - 1][1]
    if count <= 0:
        return end
    return start + (end - start) * (rank / count)


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("seed", range(300))
def test_quantiles_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    bounds = sorted(
        rng.sample([-1.0, 0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 10.0], rng.randint(0, 6))
    )
    if rng.random() < 0.9:
        bounds.append(INF)
    counts = [rng.choice([0.0, 1.0, 3.0, 7.5, 100.0, math.nan, -2.0]) for _ in bounds]
    if rng.random() < 0.5:
        counts.sort()
    buckets = list(zip(bounds, counts, strict=True))
    rng.shuffle(buckets)
    qs = [0.0, 0.25, 0.5, 0.95, 0.99, 1.0, -0.1, 1.1, math.nan, rng.random()]
    together = histogram_quantiles(qs, buckets)
    for q, value in zip(qs, together, strict=True):
        expected = reference_quantile(q, buckets)
        assert _same(value, expected), (q, buckets)
        assert _same(histogram_quantile(q, iter(buckets)), expected)


def test_layout_reads_what_its_keys_say() -> None:
    layout = SeriesLayout(("errors", "requests", "ttft@0.1", "ttft@1.0", "ttft@inf", "x@-0.5"))
    assert layout.series == (
        ("errors", None),
        ("requests", None),
        ("ttft", 0.1),
        ("ttft", 1.0),
        ("ttft", INF),
        ("x", -0.5),
    )
    assert layout.buckets == {"ttft": ((0.1, 2), (1.0, 3), (INF, 4)), "x": ((-0.5, 5),)}
    assert layout.positions == layout.index() == {k: i for i, k in enumerate(layout.keys)}
    assert layout == SeriesLayout(layout.keys) and hash(layout) == hash(SeriesLayout(layout.keys))
