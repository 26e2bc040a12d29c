"""The pure side of reconciliation: date ranges, the usage API's pages, and the comparison."""

from __future__ import annotations

import datetime as dt

import pytest

from tokenmeter_proxy.errors import BadRequest
from tokenmeter_proxy.pricing import parse_pricing
from tokenmeter_proxy.reconciliation import DayFigures, Figures, parse_range, reconcile, usage_page

D1, D2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)
PRICES = parse_pricing("models:\n  gpt-4o: {input: 2.5}\n  gpt-4o-mini: {input: 0.15}\n")


def test_a_range_is_two_dates_both_included() -> None:
    assert parse_range("2026-11-23", "2026-11-24") == (D1, D2)
    assert parse_range("2026-01-01", "2026-12-31") == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))  # 365 days


@pytest.mark.parametrize(("start", "end", "param", "says"), [
    ("2026-13-01", "2026-01-01", "start_date", "a real date"),
    ("yesterday", "2026-01-01", "start_date", "YYYY-MM-DD"),
    ("20260101", "2026-01-02", "start_date", "YYYY-MM-DD"),
    (None, "2026-01-02", "start_date", "required"),
    ("2026-01-01", "", "end_date", "required"),
    ("2026-01-02", "2026-01-01", "end_date", "must not be before"),
    ("2025-01-01", "2026-01-02", "end_date", "at most 366 days"),
    ("0001-01-01", "0001-01-02", "start_date", "between 1970-01-01"),
    ("2026-01-01", "9999-12-31", "end_date", "between"),
])
def test_a_bad_range_names_the_parameter(start: str | None, end: str, param: str, says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_range(start, end)
    assert caught.value.param == param and says in caught.value.message


def page(day: dt.date, results: list[dict[str, object]], *, next_page: str | None = None) -> dict[str, object]:
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    return {"object": "page", "data": [{"start_time": start, "end_time": start + 86400, "results": results}],
            "has_more": next_page is not None, "next_page": next_page}


def test_a_page_gives_figures_per_day_and_model_and_the_next_page() -> None:
    payload = page(D1, [{"model": "gpt-4o-2024-08-06", "num_model_requests": 10, "input_tokens": 1000,
                         "input_cached_tokens": 200, "output_tokens": 300, "project_id": None}], next_page="p2")
    rows, following = usage_page(payload, start=D1, end=D2)
    assert rows == [DayFigures(D1, "gpt-4o-2024-08-06", Figures(10, 1000, 200, 300))]
    assert following == "p2"
    assert usage_page(page(D1, []), start=D1, end=D2) == ([], None)


def test_buckets_outside_the_range_are_left_out() -> None:
    rows, _ = usage_page(page(dt.date(2026, 11, 25), [{"model": "gpt-4o", "num_model_requests": 1}]),
                         start=D1, end=D2)
    assert rows == []


@pytest.mark.parametrize("payload", [
    [], {"data": "no"}, {"data": [{"start_time": 0}]}, {"data": [{"start_time": "x", "results": []}]},
    {"data": [{"start_time": 0, "results": [{"model": 4}]}]},
    {"data": [{"start_time": 0, "results": [{"model": "m", "input_tokens": -1}]}]},
    {"data": [{"start_time": 0, "results": [{"model": "m", "input_tokens": True}]}]},
    {"data": [{"start_time": 10**20, "results": []}]},
    {"data": [], "has_more": True, "next_page": None},
])
def test_a_page_that_is_not_one_is_refused(payload: object) -> None:
    with pytest.raises(ValueError, match=r"expected|has_more"):
        usage_page(payload, start=D1, end=D2)


def test_names_fold_to_pricing_keys_and_one_sided_rows_keep_the_other_side_null() -> None:
    metered = [DayFigures(D1, "gpt-4o", Figures(2, 200, 10, 20)),
               DayFigures(D1, "gpt-4o-2024-08-06", Figures(1, 100, 0, 10)),
               DayFigures(D2, "homegrown-llm", Figures(1, 50, 0, 5))]
    provider = [DayFigures(D1, "gpt-4o-2024-08-06", Figures(10, 1000, 200, 300)),
                DayFigures(D1, "gpt-4o-mini-2024-07-18", Figures(5, 500, 0, 100))]
    report = reconcile(metered, provider, resolve=PRICES.resolve)
    assert report["days"] == [
        {"date": "2026-11-23", "model": "gpt-4o",
         "metered": {"requests": 3, "input_tokens": 300, "cached_input_tokens": 10, "output_tokens": 30},
         "provider": {"requests": 10, "input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 300},
         "difference": {"requests": -7, "input_tokens": -700, "cached_input_tokens": -190, "output_tokens": -270}},
        {"date": "2026-11-23", "model": "gpt-4o-mini",  # only the provider saw it: it bypassed the proxy
         "metered": {"requests": 0, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0},
         "provider": {"requests": 5, "input_tokens": 500, "cached_input_tokens": 0, "output_tokens": 100},
         "difference": {"requests": -5, "input_tokens": -500, "cached_input_tokens": 0, "output_tokens": -100}},
        {"date": "2026-11-24", "model": "homegrown-llm",  # unpriced: its name stays as it is
         "metered": {"requests": 1, "input_tokens": 50, "cached_input_tokens": 0, "output_tokens": 5},
         "provider": None, "difference": None},
    ]
    assert report["totals"] == {
        "metered": {"requests": 4, "input_tokens": 350, "cached_input_tokens": 10, "output_tokens": 35},
        "provider": {"requests": 15, "input_tokens": 1500, "cached_input_tokens": 200, "output_tokens": 400},
        "difference": {"requests": -11, "input_tokens": -1150, "cached_input_tokens": -190, "output_tokens": -365},
    }


def test_without_provider_figures_the_provider_totals_are_null() -> None:
    report = reconcile([DayFigures(D1, None, Figures(1, 0, 0, 0))], [], resolve=PRICES.resolve)
    assert report["days"][0]["model"] is None and report["days"][0]["provider"] is None
    assert report["totals"]["provider"] is None and report["totals"]["difference"] is None
    assert reconcile([], [], resolve=PRICES.resolve) == {"days": [], "totals": {
        "metered": {"requests": 0, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0},
        "provider": None, "difference": None}}
