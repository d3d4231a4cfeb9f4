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
    increase: array[float]  # per series; NaN where a series has no two points in the window
    # Series that began inside the window (they appeared in a later scrape): position →
    # seconds since their first point, the span their increase was taken over.
    late: Mapping[int, float]

    def seconds(self, position: int) -> float:
        """The span series ``position``'s increase was taken over."""
        return self.late.get(position, self.elapsed)


class CounterHistory:
    """Bounded history of one replica's counters, reset-corrected as they arrive.

    Each point stores, per series, a monotonic "adjusted" total: a decrease (the
    replica restarted) adds the new value instead of a negative delta, like PromQL's
    ``increase``. A window's increase is then a subtraction of two points, and
    histogram bucket deltas come out of the same arrays. Points are ``array('d')``s,
    so 1000 replicas × a few dozen series × a window of points stay a few MB.

    When the set of series changes, :meth:`relayout` keeps the history of the series that
    stay; a series that appears has NaN in the points before its first scrape.
    """

    __slots__ = ("_fresh", "_index", "_last_raw", "_points", "layout")

    def __init__(self, layout: SeriesLayout, max_points: int) -> None:
        self.layout = layout
        self._index = layout.positions
        self._points: deque[tuple[float, array[float]]] = deque(maxlen=max(2, max_points))
        self._last_raw: array[float] | None = None
        self._fresh: list[int] = []  # positions of series not scraped yet (NaN so far)

    def __len__(self) -> int:
        return len(self._points)

    def relayout(self, layout: SeriesLayout) -> None:
        """Go on with ``layout``'s series: those already here keep their points.

        A new series counts from its first scrape on, as PromQL's ``increase`` counts a
        series from its first sample. Starting every series over instead would blank each
        rate for a scrape and shorten its window whenever one series came or went: a
        counter's first label set, the backend's families coming back behind the agent.
        """
        if layout == self.layout:
            return
        moves = [self._index.get(key) for key in layout.keys]

        def remap(values: array[float]) -> array[float]:
            return array("d", (NAN if i is None else values[i] for i in moves))

        self._points = deque(
            ((t, remap(values)) for t, values in self._points), maxlen=self._points.maxlen
        )
        if self._last_raw is not None:
            self._last_raw = remap(self._last_raw)
        self._fresh = [position for position, i in enumerate(moves) if i is None]
        self.layout = layout
        self._index = layout.positions

    def add(self, t: float, raw: Sequence[float], reset: bool = False) -> None:
        """Append a scrape taken at ``t``; ``reset`` forces restart handling on all series."""
        if self._points and t <= self._points[-1][0]:
            return  # out of order or duplicate scrape: ignore
        current = array("d", raw)
        fresh = self._fresh
        if not self._points or self._last_raw is None:
            adjusted = array("d", current)
        else:
            last_raw = self._last_raw
            for i in fresh:  # a new series: no delta at its first scrape
                last_raw[i] = current[i]
            previous = self._points[-1][1]
            deltas = array("d", map(sub, current, last_raw))
            # min() is NaN or negative if any delta is negative (NaN only sticks when first).
            if not reset and (not deltas or min(deltas) >= 0):
                adjusted = array("d", map(add, previous, deltas))  # the usual case, in C
            else:
                adjusted = array("d", previous)
                for i, value in enumerate(current):
                    delta = deltas[i]
                    adjusted[i] += value if (reset or delta < 0) else delta
            for i in fresh:  # its total starts here (it was NaN before)
                adjusted[i] = current[i]
        self._fresh = []
        self._last_raw = current
        self._points.append((t, adjusted))

    def window(self, now: float, seconds: float) -> Span | None:
        """Increases over the points within ``seconds`` of ``now``.

        Uses the oldest point inside the window as the start (for a series that appeared
        later, its own first point); None with fewer than two points.
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
        increase = array("d", map(sub, latest, oldest[1]))
        late: dict[int, float] = {}
        if math.isnan(sum(increase)):  # rare: some series are younger than the window
            for i, value in enumerate(increase):
                if not math.isnan(value) or math.isnan(latest[i]):
                    continue
                for t, values in self._points:
                    if oldest[0] <= t < latest_t and not math.isnan(values[i]):
                        increase[i] = latest[i] - values[i]
                        late[i] = latest_t - t
                        break
        return Span(latest_t - oldest[0], increase, late)

    def position(self, key: str) -> int | None:
        return self._index.get(key)


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
