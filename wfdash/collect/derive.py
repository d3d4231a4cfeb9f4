"""Client-side PromQL: counter rates and histogram quantiles over a window.

CPU replicas see well under one request per second, so rates and quantiles are taken
over a window (default 60 s) of scrapes, the way a Grafana panel's ``rate(x[1m])`` and
``histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m])))`` would.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import add, itemgetter, sub
from typing import NamedTuple

INF = math.inf
NAN = math.nan

Buckets = Iterable[tuple[float, float]]
"""Cumulative histogram buckets as ``(upper bound, count)``, in any order (one is ``+Inf``)."""


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus's ``histogram_quantile`` on cumulative buckets, or None for no data.

    Follows promql/quantile.go (``bucketQuantile``): linear interpolation inside the
    bucket holding the rank, the first bucket starting at 0 (unless its bound is ≤ 0),
    a rank in the ``+Inf`` bucket answering the highest finite bound. Where Prometheus
    returns NaN (no observations in the window, no ``+Inf`` bucket, fewer than two
    buckets), this returns None: an empty window has no quantile, and it is not 0.
    """
    return histogram_quantiles((q,), buckets)[0]


def histogram_quantiles(qs: Sequence[float], buckets: Buckets) -> list[float | None]:
    """:func:`histogram_quantile` for each of ``qs``, the buckets sorted and fixed once."""
    fixed = _monotonic(buckets)
    return [_bucket_quantile(q, fixed) for q in qs]


def _monotonic(buckets: Buckets) -> list[tuple[float, float]] | None:
    """The buckets by bound with counts forced monotonic, or None if they hold no quantile."""
    ordered = sorted(buckets, key=itemgetter(0))
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    # Prometheus forces monotonic counts (scrapes are not atomic across buckets): each
    # count becomes max(0, the counts up to it), as a running max from 0.
    bounds, counts = zip(*ordered, strict=True)
    running = accumulate(counts, max, initial=0.0)
    next(running)
    return list(zip(bounds, running, strict=True))


def _bucket_quantile(q: float, fixed: list[tuple[float, float]] | None) -> float | None:
    if math.isnan(q):
        return None
    if q < 0:
        return -INF
    if q > 1:
        return INF
    if fixed is None:
        return None
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


def merge_buckets(histograms: Iterable[Mapping[float, float]]) -> list[tuple[float, float]]:
    """``sum by (le)`` over several windowed histograms (e.g. all replicas of a service)."""
    total: dict[float, float] = {}
    for histogram in histograms:
        for bound, count in histogram.items():
            total[bound] = total.get(bound, 0.0) + count
    return sorted(total.items())


@dataclass(frozen=True, slots=True)
class SeriesLayout:
    """The order of the counter series stored in each history point of one replica.

    A key is a counter's name, or ``"<histogram>@<le>"`` for a histogram bucket (``le`` as
    ``repr`` of the bound). What reading a point needs is worked out once per layout.
    """

    keys: tuple[str, ...]
    # (name, bound): a counter's name and None, or a histogram's name and a bucket bound.
    series: tuple[tuple[str, float | None], ...] = field(init=False, repr=False, compare=False)
    # histogram name → ((bound, position), ...) in key order
    buckets: Mapping[str, tuple[tuple[float, int], ...]] = field(
        init=False, repr=False, compare=False
    )
    positions: Mapping[str, int] = field(init=False, repr=False, compare=False)  # key → index

    def __post_init__(self) -> None:
        series: list[tuple[str, float | None]] = []
        buckets: dict[str, list[tuple[float, int]]] = {}
        for pos, key in enumerate(self.keys):
            name, _, le = key.partition("@")
            if le:
                bound = float(le)
                series.append((name, bound))
                buckets.setdefault(name, []).append((bound, pos))
            else:
                series.append((name, None))
        object.__setattr__(self, "series", tuple(series))
        object.__setattr__(self, "buckets", {k: tuple(v) for k, v in buckets.items()})
        object.__setattr__(self, "positions", self.index())

    def index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}


class Span(NamedTuple):
    """Counter increases over a window of scrapes, from :meth:`CounterHistory.window`."""

    elapsed: float  # seconds from the window's first scrape to its last
    increase: array[float]  # per series; NaN where a series has no two samples in the window
    # Series with samples in only part of the window (they appeared later, or were missing
    # from its first or last scrape): position → the span their increase was taken over.
    spans: Mapping[int, float]

    def seconds(self, position: int) -> float:
        """The span series ``position``'s increase was taken over."""
        return self.spans.get(position, self.elapsed)


class CounterHistory:
    """Bounded history of one replica's counters, reset-corrected as they arrive.

    Each point stores, per series, a monotonic "adjusted" total: a decrease (the
    replica restarted) adds the new value instead of a negative delta, like PromQL's
    ``increase``. A window's increase is then a subtraction of two points, and
    histogram bucket deltas come out of the same arrays. Points are ``array('d')``s,
    so 1000 replicas × a few dozen series × a window of points stay a few MB.

    Series come and go (the backend's families missing from the agent's answer while the
    backend is busy, a counter's first label set) without disturbing the others. A scrape
    without a series stores NaN for it, and its samples on either side still count, as
    PromQL's ``increase`` uses whatever samples a series has in the window; a new series
    counts from its first sample. A series is forgotten once no point holds a sample of it.
    """

    __slots__ = ("_last_adjusted", "_last_raw", "_missing", "_points", "layout")

    def __init__(self, layout: SeriesLayout, max_points: int) -> None:
        self.layout = layout
        self._points: deque[tuple[float, array[float]]] = deque(maxlen=max(2, max_points))
        # Per series: its last sample and its adjusted total then (NaN: no sample yet).
        self._last_raw = array("d", [NAN] * len(layout.keys))
        self._last_adjusted = array("d", [NAN] * len(layout.keys))
        self._missing = [0] * len(layout.keys)  # scrapes in a row without the series

    def __len__(self) -> int:
        return len(self._points)

    def relayout(self, layout: SeriesLayout) -> None:
        """Go on with ``layout``'s series, and those it lacks that still have samples here.

        Series already here keep their history; a new one starts empty.
        """
        lingering = tuple(key for key in self._sampled() if key not in layout.positions)
        if lingering:
            layout = SeriesLayout(layout.keys + lingering)
        if layout == self.layout:
            return
        held = len(self._points)
        moves = [self.layout.positions.get(key) for key in layout.keys]

        def remap(values: array[float]) -> array[float]:
            return array("d", (NAN if i is None else values[i] for i in moves))

        self._points = deque(
            ((t, remap(values)) for t, values in self._points), maxlen=self._points.maxlen
        )
        self._last_raw = remap(self._last_raw)
        self._last_adjusted = remap(self._last_adjusted)
        self._missing = [held if i is None else self._missing[i] for i in moves]
        self.layout = layout

    def _sampled(self) -> tuple[str, ...]:
        """The series with a sample in at least one point held."""
        held = len(self._points)
        return tuple(
            key for key, m in zip(self.layout.keys, self._missing, strict=True) if m < held
        )

    def add(self, t: float, raw: Sequence[float], reset: bool = False) -> None:
        """Append a scrape taken at ``t`` (NaN: the series was not in it); ``reset`` forces
        restart handling on every series in it."""
        if self._points and t <= self._points[-1][0]:
            return  # out of order or duplicate scrape: ignore
        current = array("d", raw)
        if len(current) != len(self._last_raw):
            raise ValueError(f"{len(current)} values for {len(self._last_raw)} series")
        deltas = array("d", map(sub, current, self._last_raw))
        # The usual case, in C: every series present before and now, none went down.
        # (A NaN delta makes the sum NaN; min() of deltas with a NaN is unreliable.)
        if not reset and not math.isnan(sum(deltas)) and (not deltas or min(deltas) >= 0):
            adjusted = array("d", map(add, self._last_adjusted, deltas))
            self._last_raw, self._last_adjusted = current, adjusted
            self._points.append((t, adjusted))
            if any(self._missing):
                self._missing = [0] * len(current)
            return
        last_raw, last_adjusted = array("d", self._last_raw), array("d", self._last_adjusted)
        adjusted = array("d", current)
        missing = self._missing
        for i, value in enumerate(current):
            if math.isnan(value):  # not in this scrape
                missing[i] += 1
                continue
            missing[i] = 0
            before = last_raw[i]
            if not math.isnan(before):  # (else its first sample: its total starts here)
                delta = value - before
                adjusted[i] = last_adjusted[i] + (value if (reset or delta < 0) else delta)
            last_raw[i], last_adjusted[i] = value, adjusted[i]
        self._last_raw, self._last_adjusted = last_raw, last_adjusted
        self._points.append((t, adjusted))
        if max(missing, default=0) >= len(self._points):
            # A series with no sample left in any point: forget it.
            self.relayout(SeriesLayout(self._sampled()))

    def window(self, now: float, seconds: float) -> Span | None:
        """Increases over the points within ``seconds`` of ``now``.

        A series' increase runs from its first to its last sample among those points;
        None with fewer than two points.
        """
        if len(self._points) < 2:
            return None
        start_limit = now - seconds
        latest_t, latest = self._points[-1]
        oldest = None
        for t, values in self._points:
            if t >= start_limit:
                oldest = (t, values)
                break
        if oldest is None or oldest[0] >= latest_t:
            return None
        oldest_t = oldest[0]
        increase = array("d", map(sub, latest, oldest[1]))
        spans: dict[int, float] = {}
        if math.isnan(sum(increase)):  # rare: some series lack a sample at an end
            inside = [(t, values) for t, values in self._points if t >= oldest_t]
            for i, value in enumerate(increase):
                if not math.isnan(value):
                    continue
                samples = [(t, values[i]) for t, values in inside if not math.isnan(values[i])]
                if len(samples) >= 2:
                    (first_t, first), (last_t, last) = samples[0], samples[-1]
                    increase[i] = last - first
                    spans[i] = last_t - first_t
        return Span(latest_t - oldest_t, increase, spans)


class Ring:
    """A bounded series of ``(t, value)`` for sparklines and plots; None is a gap."""

    __slots__ = ("_items",)

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[float, float | None]] = deque(maxlen=max(1, capacity))

    def append(self, t: float, value: float | None) -> None:
        self._items.append((t, value))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> tuple[tuple[float, float | None], ...]:
        return tuple(self._items)

    def values(self) -> tuple[float | None, ...]:
        return tuple(v for _, v in self._items)

    @property
    def latest(self) -> float | None:
        return self._items[-1][1] if self._items else None
