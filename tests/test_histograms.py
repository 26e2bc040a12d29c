"""Explicit-bucket histograms as OpenTelemetry exports them: bucket i counts (bounds[i-1], bounds[i]]."""

from __future__ import annotations

from tokenmeter_proxy.histograms import OVERFLOW, Histogram

KEY = (("gen_ai.request.model", "gpt-4o"),)


def test_buckets_sum_count_min_max() -> None:
    histogram = Histogram((1, 4, 16), started=100)
    for value in (0, 1, 2, 4, 5, 16, 17, 1000):
        histogram.record(value, KEY)
    point = histogram.collect(200, reset=False).points[KEY]
    assert point.counts == [2, 2, 2, 2]  # (-inf, 1], (1, 4], (4, 16], (16, +inf)
    assert (point.count, point.total, point.low, point.high) == (8, 1045, 0, 1000)


def test_cumulative_keeps_counting_and_delta_starts_anew() -> None:
    cumulative, delta = Histogram((1,), started=100), Histogram((1,), started=100)
    for histogram in (cumulative, delta):
        histogram.record(3, KEY)
    first = cumulative.collect(200, reset=False)
    cumulative.record(3, KEY)
    assert first.points[KEY].count == 1, "a collection is a copy"
    assert (cumulative.collect(300, reset=False).start, cumulative.collect(300, reset=False).points[KEY].count) == (
        100, 2)
    assert delta.collect(200, reset=True).points[KEY].count == 1
    delta.record(3, KEY)
    second = delta.collect(300, reset=True)
    assert (second.start, second.points[KEY].count) == (200, 1)
    assert not delta.collect(400, reset=True).points


def test_past_the_limit_new_attribute_sets_overflow() -> None:
    histogram = Histogram((1,), started=0, limit=2)
    for model in ("a", "b", "c", "d", "a"):
        histogram.record(1, (("gen_ai.request.model", model),))
    points = histogram.collect(1, reset=False).points
    assert {key: point.count for key, point in points.items()} == {
        (("gen_ai.request.model", "a"),): 2, (("gen_ai.request.model", "b"),): 1, OVERFLOW: 2}
