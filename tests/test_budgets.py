"""Budget arithmetic: which budgets apply, periods and resets, and the admit-or-refuse verdict."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from tokenmeter_proxy.budgets import (
    Applied,
    Budget,
    BudgetIndex,
    Estimate,
    Recent,
    Standing,
    e10,
    forecast_exhausted_at,
    grant,
    judge,
    parse_budget,
    period_start,
    recent_since,
    resets_at,
)
from tokenmeter_proxy.errors import BadRequest

NOW = dt.datetime(2026, 11, 25, 18, 30, 15, tzinfo=dt.UTC)
@dataclass(frozen=True)
class Identity:
    """A requester on its own (in the proxy, the metered exchange is one)."""

    session_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


DAY = Budget(scope="session", subject="s-1", period="day", max_cost=Decimal("0.01"), id=1)


def standing(budget: Budget, *, spent: str = "0", reserved: str = "0", tokens: int = 0) -> Standing:
    return Standing(Applied(budget, budget.subject or "s-1"), spent_cost=Decimal(spent),
                    reserved_cost=Decimal(reserved), spent_tokens=tokens)


def test_a_subjects_own_budgets_apply_and_defaults_fill_the_periods_it_lacks() -> None:
    own = {("session", "s-1"): [DAY], ("global", "*"): [Budget("global", "*", "month", max_cost=Decimal(100))]}
    defaults = [Budget("session", None, "day", max_cost=Decimal(1)),
                Budget("session", None, "month", max_cost=Decimal(5)), Budget("user", None, "day", max_tokens=1000)]
    found = BudgetIndex(own, defaults).applicable(Identity(session_id="s-1", user_id="u-1"))
    assert [(item.budget.scope, item.budget.period, item.subject, item.budget.max_cost) for item in found] == [
        ("session", "day", "s-1", Decimal("0.01")),      # its own day budget, not the default
        ("session", "month", "s-1", Decimal(5)),         # the default month budget
        ("user", "day", "u-1", None),                    # the user's default
        ("global", "month", "*", Decimal(100)),
    ]
    assert BudgetIndex(own, []).applicable(Identity()) == [Applied(own[("global", "*")][0], "*")]
    assert BudgetIndex({}, []).applicable(Identity(session_id="s-9")) == []
    assert BudgetIndex({}, defaults).applicable(Identity(session_id="s-9", user_id="u-1", tags={"a": "b"})) == [
        Applied(defaults[0], "s-9"), Applied(defaults[1], "s-9"), Applied(defaults[2], "u-1")]


@pytest.mark.parametrize(("period", "start", "reset"), [
    ("day", dt.datetime(2026, 11, 25, tzinfo=dt.UTC), dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
    ("month", dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
    ("total", dt.datetime(1970, 1, 1, tzinfo=dt.UTC), None),
])
def test_periods_are_utc_calendar_periods(period: str, start: dt.datetime, reset: dt.datetime | None) -> None:
    assert period_start(period, NOW) == start
    assert resets_at(period, NOW) == reset


def test_december_resets_into_january() -> None:
    new_years_eve = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
    assert resets_at("month", new_years_eve) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_a_request_that_fits_is_admitted_with_what_remains() -> None:
    decision = judge([standing(DAY, spent="0.002", reserved="0.001")], Estimate(Decimal("0.003"), 100),
                     now=NOW, currency="USD")
    assert decision.admitted and decision.remaining_cost == Decimal("0.004") and not decision.warnings


def test_spent_plus_reserved_plus_estimate_over_the_limit_is_refused_until_the_reset() -> None:
    decision = judge([standing(DAY, spent="0.008", reserved="0.001")], Estimate(Decimal("0.0015"), 100),
                     now=NOW, currency="USD")
    assert not decision.admitted and decision.refused_scopes == ["session"]
    assert decision.retry_after == 5 * 3600 + 29 * 60 + 45  # to midnight UTC, rounded up
    assert "session s-1 (day)" in decision.refusals[0] and "0.009 USD spent or reserved" in decision.refusals[0]


def test_retry_after_is_the_latest_reset_and_absent_for_a_total_budget() -> None:
    month = Budget("user", "u-1", "month", max_cost=Decimal("0.001"))
    total = Budget("key", "k-1", "total", max_tokens=10)
    over = Estimate(Decimal(1), 100)
    both = judge([standing(DAY), standing(month)], over, now=NOW, currency="USD")
    assert both.retry_after == int((dt.datetime(2026, 12, 1, tzinfo=dt.UTC) - NOW).total_seconds())
    assert judge([standing(DAY), standing(total)], over, now=NOW, currency="USD").retry_after is None


def test_token_budgets_count_tokens_only() -> None:
    tokens = Budget("session", "s-1", "total", max_tokens=1500)
    assert judge([standing(tokens, tokens=1000)], Estimate(None, 400), now=NOW, currency="USD").remaining_tokens == 100
    refused = judge([standing(tokens, tokens=1000)], Estimate(None, 501), now=NOW, currency="USD")
    assert not refused.admitted and "1000 tokens spent or reserved of its 1500 limit" in refused.refusals[0]


def test_a_warning_names_the_budget_once_spent_and_reserved_reach_warn_at() -> None:
    warned = Budget("user", "u-1", "month", max_cost=Decimal("0.01"), warn_at=Decimal("0.4"))
    assert not judge([standing(warned, spent="0.0039")], Estimate(Decimal(0), 1), now=NOW, currency="USD").warnings
    decision = judge([standing(warned, spent="0.003", reserved="0.001")], Estimate(Decimal(0), 1),
                     now=NOW, currency="USD")
    assert decision.warnings == ["user u-1 (month): 0.004 of 0.01 USD used"]


def test_an_unpriced_model_under_a_cost_budget_is_refused_unless_allowed() -> None:
    refused = judge([standing(DAY)], Estimate(None, 10, model="mystery-9"), now=NOW, currency="USD")
    assert not refused.admitted and "'mystery-9' has no price" in refused.refusals[0]
    assert judge([standing(DAY)], Estimate(None, 10), now=NOW, currency="USD", allow_unpriced=True).admitted


@pytest.mark.parametrize(("payload", "param"), [
    ({"scope": "planet", "subject": "x", "period": "day", "max_cost": 1}, "scope"),
    ({"scope": "session", "period": "day", "max_cost": 1}, "subject"),
    ({"scope": "session", "subject": "x", "period": "fortnight", "max_cost": 1}, "period"),
    ({"scope": "session", "subject": "x", "period": "day", "max_cost": -1}, "max_cost"),
    ({"scope": "session", "subject": "x", "period": "day", "max_cost": "lots"}, "max_cost"),
    ({"scope": "session", "subject": "x", "period": "day"}, "max_cost"),
    ({"scope": "session", "subject": "x", "period": "day", "max_tokens": 1.5}, "max_tokens"),
    ({"scope": "session", "subject": "x", "period": "day", "max_tokens": True}, "max_tokens"),
    ({"scope": "session", "subject": "x", "period": "day", "max_cost": 1, "warn_at": 2}, "warn_at"),
    ({"scope": "global", "subject": "someone", "period": "day", "max_cost": 1}, "subject"),
    (["not", "an", "object"], None),
])
def test_bad_budget_input_names_the_field(payload: object, param: str | None) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_budget(payload)
    assert refused.value.param == param


def test_a_good_budget_parses_exactly() -> None:
    budget = parse_budget({"scope": "global", "period": "month", "max_cost": 0.1, "warn_at": 0.5})
    assert (budget.subject, budget.max_cost, budget.warn_at) == ("*", Decimal("0.1"), Decimal("0.5"))
    default = parse_budget({"scope": "session", "period": "day", "max_cost": 1}, default=True)
    assert default.subject is None and default.warn_at == Decimal("0.8")


def test_a_tags_budgets_apply_to_requests_carrying_that_tag() -> None:
    search = Budget("tag", "team:search", "day", max_cost=Decimal(1), id=3)
    identity = Identity(session_id="s-1", tags={"team": "search", "feature": "summarize"})
    budgets = BudgetIndex({("tag", "team:search"): [search]}, [])
    assert [item.subject for item in budgets.applicable(identity)] == ["team:search"]
    assert budgets.applicable(Identity(tags={"team": "ads"})) == []


MONTH = Budget(scope="global", subject="*", period="month", max_cost=Decimal(100), max_tokens=10**9, id=2)


def test_the_forecast_is_when_the_recent_rate_reaches_the_limit_within_the_period() -> None:
    window = (NOW - recent_since(NOW)).total_seconds()  # 7 days and today's 18.5 hours
    recent = Recent(cost=Decimal(window) / Decimal(3600) * Decimal(2))  # 2 per hour
    at = forecast_exhausted_at(standing(MONTH, spent="60"), recent, now=NOW)
    assert at == NOW + dt.timedelta(hours=20)  # 40 left at 2 an hour
    slow = Recent(cost=Decimal(window) / Decimal(3600) / Decimal(10))  # 0.1 an hour: 400 h, past the 30th
    assert forecast_exhausted_at(standing(MONTH, spent="60"), slow, now=NOW) is None


def test_no_forecast_without_recent_spend_once_exhausted_or_for_a_total_budget() -> None:
    busy = Recent(cost=Decimal(1000), tokens=0)
    assert forecast_exhausted_at(standing(MONTH, spent="10"), Recent(), now=NOW) is None
    assert forecast_exhausted_at(standing(MONTH, spent="100"), busy, now=NOW) is None
    forever = Budget("global", "*", "total", max_cost=Decimal(100), id=4)
    assert forecast_exhausted_at(standing(forever, spent="10"), busy, now=NOW) is not None  # a total has no end
    tokens = Budget("global", "*", "month", max_tokens=1_000_000, id=5)
    assert forecast_exhausted_at(standing(tokens, tokens=999_000), Recent(tokens=10**6), now=NOW) is not None


def test_a_lease_grants_at_least_what_is_needed_and_beyond_it_half_the_room() -> None:
    ten = Budget("session", "s-1", "day", max_cost=Decimal(10), max_tokens=1000, id=6)
    room = standing(ten, spent="4", reserved="2", tokens=100)  # 4 of cost left, 900 tokens
    assert grant([room], need=(e10(Decimal(1)), 10), want=(e10(Decimal(3)), 800)) == (e10(Decimal(2)), 450)
    assert grant([room], need=(e10(Decimal(3)), 10), want=(e10(Decimal(3)), 20)) == (e10(Decimal(3)), 20)
    assert grant([room], need=(e10(Decimal(5)), 10), want=(e10(Decimal(9)), 20)) == (0, 0)  # not enough room
    cost_only = Budget("session", "s-1", "month", max_cost=Decimal(10), id=7)
    assert grant([standing(cost_only)], need=(e10(Decimal(1)), 5), want=(e10(Decimal(2)), 50)) == (e10(Decimal(2)), 5)
