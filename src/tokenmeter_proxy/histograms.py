"""Explicit-bucket histograms, aggregated in place the way OpenTelemetry exports them: bucket `i`
counts the values in (bounds[i-1], bounds[i]], the last one those above every bound. Pure: no SDK,
no I/O. A record is one bisect and a few additions under a lock (the exporter collects from its
own thread); the SDK's synchronous instruments validate and hash the attributes of every record,
which costs several times that, on every request."""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

Key = tuple[tuple[str, str | bool], ...]  # a point's attributes, as (name, value) pairs
# Past the limit, new attribute sets are counted here, as the SDK's cardinality limit does
OVERFLOW: Key = (("otel.metric.overflow", True),)


@dataclass(slots=True)
class Point:
    """One attribute set's figures."""

    counts: list[int]
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def copy(self) -> Point:
        return Point(list(self.counts), self.count, self.total, self.low, self.high)


@dataclass(frozen=True, slots=True)
class Collected:
    """What a collection found: the points, and since when they count (ns since the epoch)."""

    start: int
    points: dict[Key, Point]


class Histogram:
    """One histogram's points by attribute set, cumulative since `started`, or since the last
    collection when collections `reset` (delta temporality)."""

    def __init__(self, bounds: Sequence[float], *, started: int, limit: int = 2000) -> None:
        self.bounds = tuple(bounds)
        self.limit = limit
        self.start = started
        self.points: dict[Key, Point] = {}
        self.lock = threading.Lock()

    def record(self, value: float, key: Key) -> None:
        with self.lock:
            point = self.points.get(key)
            if point is None:
                key = key if len(self.points) < self.limit else OVERFLOW
                point = self.points.setdefault(key, Point([0] * (len(self.bounds) + 1)))
            point.counts[bisect_left(self.bounds, value)] += 1
            point.count += 1
            point.total += value
            if value < point.low:
                point.low = value
            if value > point.high:
                point.high = value

    def collect(self, now: int, *, reset: bool) -> Collected:
        """The points so far: copies, or (`reset`) the points themselves, which start anew."""
        with self.lock:
            if reset:
                collected = Collected(self.start, self.points)
                self.points, self.start = {}, now
                return collected
            return Collected(self.start, {key: point.copy() for key, point in self.points.items()})
