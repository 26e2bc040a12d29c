"""Alert events without I/O: the body and its one-line text, the once-only keys, the retry schedule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from tokenmeter_proxy import alerts
from tokenmeter_proxy.alerts import Alert, budget_key, describe, new_event, next_attempt, stored_key

NOW = dt.datetime(2026, 12, 6, 9, 30, 15, tzinfo=dt.UTC)
BUDGET = {"id": 3, "scope": "session", "subject": "s-1", "period": "day", "max_cost": Decimal("0.01"),
          "max_tokens": None, "warn_at": Decimal("0.8"), "currency": "USD", "spent_cost": Decimal("0.0052"),
          "spent_tokens": 2080, "reserved_cost": Decimal("0.001"), "reserved_tokens": 0,
          "remaining_cost": Decimal("0.0038"), "remaining_tokens": None,
          "resets_at": dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
          "forecast_exhausted_at": dt.datetime(2026, 12, 6, 14, 5, 30, tzinfo=dt.UTC)}


def test_the_body_is_the_contracts_shape_with_exact_decimals_and_utc_times() -> None:
    event = new_event("budget.warning", BUDGET, now=NOW)
    body = orjson.loads(event.body())
    assert list(body) == ["type", "timestamp", "text", "data"]
    assert body["type"] == "budget.warning" and body["timestamp"] == "2026-12-06T09:30:15Z"
    assert body["data"]["max_cost"] == 0.01 and b'"spent_cost":0.0052' in event.body()
    assert body["data"]["resets_at"] == "2026-12-07T00:00:00Z"
    assert event.id.startswith("msg_") and event.id != new_event("budget.warning", BUDGET, now=NOW).id


def test_texts_are_one_line_a_chat_shows_as_is() -> None:
    assert describe("budget.warning", BUDGET) == (
        "Budget session s-1 (day) reached 80% of 0.01 USD: 0.0052 spent; at this rate it runs out 2026-12-06 14:05 UTC")
    no_forecast = {**BUDGET, "forecast_exhausted_at": None, "warn_at": Decimal("0.5")}
    assert describe("budget.warning", no_forecast) == "Budget session s-1 (day) reached 50% of 0.01 USD: 0.0052 spent"
    tokens = {**BUDGET, "scope": "global", "subject": "*", "period": "month", "max_cost": None, "max_tokens": 2500}
    assert describe("budget.warning", tokens).startswith(
        "Budget everyone (month) reached 80% of 2500 tokens: 2080 spent")
    assert describe("budget.exhausted", BUDGET) == (
        "Budget session s-1 (day) is exhausted and refused a request: 0.0052 spent and 0.001 reserved of 0.01 USD; "
        "requests are refused until it resets 2026-12-07 00:00 UTC")
    assert describe("budget.exhausted", {**BUDGET, "period": "total", "resets_at": None}).endswith("it never resets")
    assert describe("model.unpriced", {"model": "acme-1", "provider": "openai"}).startswith(
        "Model acme-1 (openai) has no price")
    rejected = describe("config.rejected", {"file": "config/pricing.yaml", "errors": [
        "config/pricing.yaml:3: models.gpt-4o.input: not a number\n  input: abc", "config/pricing.yaml:9: x"]})
    assert rejected == ("config/pricing.yaml was refused on reload and the one in force stays: config/pricing.yaml:3: "
                        "models.gpt-4o.input: not a number input: abc (and 1 more)")
    for kind, data in (("storage.degraded", {"host": "h", "error": "OperationalError: gone\nSQL: ..."}),
                       ("storage.recovered", {"host": "h"})):
        assert "\n" not in describe(kind, data) and "tokenmeter-proxy on h" in describe(kind, data)


def test_a_budget_key_changes_with_the_budgets_version_and_period() -> None:
    day = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    version = dt.datetime(2026, 12, 6, 8, 0, 0, 123456)
    key = budget_key("budget.warning", budget_id=3, version=version, period_start=day)
    assert key == budget_key("budget.warning", budget_id=3, version=version, period_start=day)
    assert key != budget_key("budget.warning", budget_id=3, version=version + dt.timedelta(microseconds=1),
                             period_start=day)
    assert key != budget_key("budget.warning", budget_id=3, version=version, period_start=day + dt.timedelta(days=1))
    assert key != budget_key("budget.exhausted", budget_id=3, version=version, period_start=day)
    one, two = Alert("budget.warning", {}, key=key), Alert("budget.warning", {}, key=None)
    assert stored_key(one, "msg_a") == stored_key(one, "msg_b") and len(stored_key(one, "msg_a")) == 64
    assert stored_key(two, "msg_a") != stored_key(two, "msg_b")  # without a key, every event is its own


def test_retries_back_off_and_give_up_a_day_after_the_event() -> None:
    created = NOW
    now, waits = created, []
    failed = 0
    while True:
        failed += 1
        retry = next_attempt(failed, created_at=created, now=now)
        if retry is None:
            break
        waits.append((retry - now).total_seconds())
        now = retry
    assert waits[:8] == [5, 30, 120, 600, 1800, 3600, 3600, 3600]
    assert now == created + dt.timedelta(hours=24)  # the last try comes at the 24 h mark
    assert len(waits) == 6 + 22 + 1  # the climb, hourly to the mark, and the last, shortened one
    assert next_attempt(1, created_at=created, now=created + dt.timedelta(hours=24, seconds=1)) is None


@pytest.mark.parametrize("kind", alerts.EVENT_TYPES)
def test_every_event_type_has_a_text(kind: str) -> None:
    assert describe(kind, {}).strip()
