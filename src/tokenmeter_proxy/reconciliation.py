"""Reconciliation: what the provider says it served against what we metered, per UTC day and
model. Pure: date ranges, the usage API's pages and the comparison, no I/O.

Model names on both sides fold to their pricing key (`PriceTable.resolve`), so the provider's
`gpt-4o-2024-08-06` and our `gpt-4o` meet as `gpt-4o`; names the pricing file does not know
stay as they are. A day and model only we metered has `provider: null` (the provider's figures
for it were never synced, or it reported nothing); one only the provider reported has our
figures as zeros, and its difference shows the usage that bypassed the proxy.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest

MAX_DAYS = 366
UNKNOWN_MODEL = "(unknown)"  # the provider's name for a result without a model
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIRST_DAY, _LAST_DAY = dt.date(1970, 1, 1), dt.date(9998, 12, 31)


@dataclass(frozen=True, slots=True)
class Figures:
    """Requests and tokens on one side; cached input tokens are part of `input_tokens`."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.requests + other.requests, self.input_tokens + other.input_tokens,
                       self.cached_input_tokens + other.cached_input_tokens, self.output_tokens + other.output_tokens)

    def __sub__(self, other: Figures) -> Figures:
        return Figures(self.requests - other.requests, self.input_tokens - other.input_tokens,
                       self.cached_input_tokens - other.cached_input_tokens, self.output_tokens - other.output_tokens)

    def as_json(self) -> dict[str, int]:
        return {"requests": self.requests, "input_tokens": self.input_tokens,
                "cached_input_tokens": self.cached_input_tokens, "output_tokens": self.output_tokens}


ZERO = Figures()


@dataclass(frozen=True, slots=True)
class DayFigures:
    """The figures of one UTC day and model (None: records that name no model)."""

    day: dt.date
    model: str | None
    figures: Figures


def parse_day(text: object, name: str) -> dt.date:
    """A date written YYYY-MM-DD; `BadRequest` naming `name` otherwise."""
    if text is None or text == "":
        raise BadRequest(f"{name} is required, as YYYY-MM-DD", param=name)
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD, such as 2026-11-25; got {text!r}", param=name)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be a real date as YYYY-MM-DD; got {text!r}", param=name) from None
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise BadRequest(f"{name} must be between {_FIRST_DAY} and {_LAST_DAY}; got {text!r}", param=name)
    return day


def parse_range(start_text: object, end_text: object, *, names: tuple[str, str] = ("start_date", "end_date")
                ) -> tuple[dt.date, dt.date]:
    """Start and end dates, both included, in order and at most `MAX_DAYS` days apart;
    `BadRequest` naming the parameter (as `names` calls them) otherwise."""
    start_name, end_name = names
    start, end = parse_day(start_text, start_name), parse_day(end_text, end_name)
    if end < start:
        raise BadRequest(f"{end_name} ({end}) must not be before {start_name} ({start})", param=end_name)
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRequest(f"at most {MAX_DAYS} days at a time; {start} to {end} is {(end - start).days + 1}",
                         param=end_name)
    return start, end


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of `day`."""
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def usage_page(payload: object, *, start: dt.date, end: dt.date) -> tuple[list[DayFigures], str | None]:
    """One page of `GET /organization/usage/completions` (daily buckets grouped by model): its
    figures for days within [start, end], and the `next_page` cursor (None on the last page).
    Raises `ValueError` saying what is wrong with a page that does not look like one."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise ValueError("expected an object with a 'data' list of buckets")
    rows = []
    for bucket in payload["data"]:
        if not isinstance(bucket, Mapping) or not isinstance(bucket.get("results"), list):
            raise ValueError("expected each bucket to be an object with a 'results' list")
        day = _bucket_day(_count(bucket, "start_time"))
        for result in bucket["results"]:
            if not isinstance(result, Mapping):
                raise ValueError("expected each result to be an object")
            model = result.get("model")
            if model is not None and not isinstance(model, str):
                raise ValueError(f"expected a model name, got {model!r}")
            figures = Figures(_count(result, "num_model_requests"), _count(result, "input_tokens"),
                              _count(result, "input_cached_tokens"), _count(result, "output_tokens"))
            if start <= day <= end:
                rows.append(DayFigures(day, model or UNKNOWN_MODEL, figures))
    following = payload.get("next_page")
    if payload.get("has_more") is not True:
        return rows, None
    if not isinstance(following, str) or not following:
        raise ValueError("has_more is true but next_page names no page")
    return rows, following


def _bucket_day(start_time: int) -> dt.date:
    try:
        return dt.datetime.fromtimestamp(start_time, dt.UTC).date()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"expected start_time to be a unix time, got {start_time!r}") from None


def _count(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected {key} to be a whole number, got {value!r}")
    return value


def combine(rows: Iterable[DayFigures], fold: Callable[[str | None], str | None] = lambda model: model
            ) -> dict[tuple[dt.date, str | None], Figures]:
    """Figures summed per day and (folded) model name."""
    summed: dict[tuple[dt.date, str | None], Figures] = {}
    for row in rows:
        key = (row.day, fold(row.model))
        summed[key] = summed.get(key, ZERO) + row.figures
    return summed


def reconcile(metered: Iterable[DayFigures], provider: Iterable[DayFigures], *,
              resolve: Callable[[str], str | None]) -> dict[str, Any]:
    """`GET /api/usage/reconciliation`: one row per day and folded model seen on either side,
    oldest first, and totals. A difference is metered minus provider."""

    def fold(model: str | None) -> str | None:
        return None if model is None else resolve(model) or model

    ours, theirs = combine(metered, fold), combine(provider, fold)
    days = []
    for day, model in sorted(ours.keys() | theirs.keys(), key=lambda key: (key[0], key[1] or "")):
        mine, reported = ours.get((day, model), ZERO), theirs.get((day, model))
        days.append({"date": day.isoformat(), "model": model, "metered": mine.as_json(),
                     "provider": None if reported is None else reported.as_json(),
                     "difference": None if reported is None else (mine - reported).as_json()})
    metered_total = sum(ours.values(), ZERO)
    provider_total = sum(theirs.values(), ZERO) if theirs else None
    return {"days": days, "totals": {
        "metered": metered_total.as_json(),
        "provider": None if provider_total is None else provider_total.as_json(),
        "difference": None if provider_total is None else (metered_total - provider_total).as_json(),
    }}
