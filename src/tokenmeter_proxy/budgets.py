"""Budget arithmetic and decisions (no I/O): which budgets apply to a request, when periods
start and reset, and whether spent + reserved + this request's estimate stays within limits.

A budget caps what a session, a user, an API key (by its `api_key_id`) or everyone (`global`,
subject "*") may spend per UTC day, UTC month or in total, in cost and/or in tokens.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import BadRequest
from .pricing import money_text

SCOPES = ("session", "user", "key", "global")
PERIODS = ("day", "month", "total")
DEFAULT_WARN_AT = Decimal("0.8")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Budget:
    """A limit on one subject. `id` is None for a default budget from configuration, whose
    `subject` is None: it applies to every subject of its scope without a budget of its own."""

    scope: str
    subject: str | None
    period: str
    max_cost: Decimal | None = None
    max_tokens: int | None = None
    warn_at: Decimal = DEFAULT_WARN_AT
    id: int | None = None

    def name(self, subject: str | None = None) -> str:
        """How refusals and warnings name the budget: `session s-1 (day)`."""
        who = "everyone" if self.scope == "global" else f"{self.scope} {subject or self.subject}"
        return f"{who} ({self.period})"


@dataclass(frozen=True)
class Identity:
    """Who a request is for: the subjects budgets can name."""

    session_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None

    def subject(self, scope: str) -> str | None:
        return {"session": self.session_id, "user": self.user_id, "key": self.api_key_id, "global": "*"}[scope]


@dataclass(frozen=True)
class Applied:
    """A budget as it applies to one request's subject."""

    budget: Budget
    subject: str


@dataclass(frozen=True)
class Standing:
    """Where an applied budget stands now: spent in its period and reserved by requests in flight."""

    applied: Applied
    spent_cost: Decimal = Decimal(0)
    spent_tokens: int = 0
    reserved_cost: Decimal = Decimal(0)
    reserved_tokens: int = 0


@dataclass(frozen=True)
class Estimate:
    """What a request may cost at most, as far as can be known before it runs."""

    cost: Decimal | None  # None: the model has no price
    tokens: int
    model: str | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict on one request against every budget that applies to it."""

    admitted: bool
    refusals: list[str] = field(default_factory=list)
    refused_scopes: list[str] = field(default_factory=list)
    retry_after: int | None = None
    remaining_cost: Decimal | None = None
    remaining_tokens: int | None = None
    warnings: list[str] = field(default_factory=list)


def applicable(explicit: Mapping[tuple[str, str], list[Budget]], defaults: Iterable[Budget],
               identity: Identity) -> list[Applied]:
    """The budgets that limit a request: each subject's own budgets, and for every scope and
    period it has no budget of its own, the default from configuration."""
    found: list[Applied] = []
    for scope in SCOPES:
        subject = identity.subject(scope)
        if subject is None:
            continue
        own = explicit.get((scope, subject), [])
        found += [Applied(budget, subject) for budget in own]
        covered = {budget.period for budget in own}
        found += [Applied(budget, subject) for budget in defaults
                  if budget.scope == scope and budget.period not in covered]
    return found


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    """Start of the UTC period containing `now` (the epoch for `total`)."""
    if period == "day":
        return dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
    if period == "month":
        return dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    return _EPOCH


def resets_at(period: str, now: dt.datetime) -> dt.datetime | None:
    """When the period containing `now` ends; None for `total`, which never resets."""
    start = period_start(period, now)
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "month":
        return dt.datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=dt.UTC)
    return None


def judge(standings: list[Standing], estimate: Estimate, *, now: dt.datetime, currency: str,
          allow_unpriced: bool = False) -> Decision:
    """Admit the request only if, for every budget, spent + reserved + estimate stays within
    each limit. A model without a price cannot be estimated: under a cost budget it is refused
    unless `allow_unpriced`, and never counted as free."""
    refusals: list[str] = []
    refusing: list[Budget] = []
    remaining_cost: Decimal | None = None
    remaining_tokens: int | None = None
    warnings: list[str] = []
    for standing in standings:
        budget, subject = standing.applied.budget, standing.applied.subject
        used_cost = standing.spent_cost + standing.reserved_cost
        used_tokens = standing.spent_tokens + standing.reserved_tokens
        if budget.max_cost is not None:
            if estimate.cost is None and not allow_unpriced:
                refusals.append(f"the model {estimate.model!r} has no price, so its cost under the budget of "
                                f"{budget.name(subject)} cannot be estimated; add it to the pricing file")
                refusing.append(budget)
            elif used_cost + (estimate.cost or 0) > budget.max_cost:
                refusals.append(f"the budget of {budget.name(subject)} has {money_text(used_cost)} {currency} spent "
                                f"or reserved of its {money_text(budget.max_cost)} {currency} limit; this request "
                                f"needs up to {money_text(estimate.cost or Decimal(0))} {currency} more")
                refusing.append(budget)
            else:
                left = budget.max_cost - used_cost - (estimate.cost or 0)
                remaining_cost = left if remaining_cost is None else min(remaining_cost, left)
            if used_cost >= budget.warn_at * budget.max_cost:
                warnings.append(f"{budget.name(subject)}: {money_text(used_cost)} of {money_text(budget.max_cost)} "
                                f"{currency} used")
        if budget.max_tokens is not None:
            if used_tokens + estimate.tokens > budget.max_tokens:
                refusals.append(f"the budget of {budget.name(subject)} has {used_tokens} tokens spent or reserved of "
                                f"its {budget.max_tokens} limit; this request needs up to {estimate.tokens} more")
                refusing.append(budget)
            else:
                left_tokens = budget.max_tokens - used_tokens - estimate.tokens
                remaining_tokens = left_tokens if remaining_tokens is None else min(remaining_tokens, left_tokens)
            if used_tokens >= budget.warn_at * budget.max_tokens:
                warnings.append(f"{budget.name(subject)}: {used_tokens} of {budget.max_tokens} tokens used")
    if refusals:
        return Decision(admitted=False, refusals=refusals, retry_after=retry_after(refusing, now),
                        refused_scopes=sorted({budget.scope for budget in refusing}))
    return Decision(admitted=True, remaining_cost=remaining_cost, remaining_tokens=remaining_tokens,
                    warnings=warnings)


def retry_after(refusing: list[Budget], now: dt.datetime) -> int | None:
    """Whole seconds, rounded up, to the latest reset of the refusing budgets; None when one of
    them is `total` (it never resets)."""
    resets = [resets_at(budget.period, now) for budget in refusing]
    if not resets or any(moment is None for moment in resets):
        return None
    latest = max(moment for moment in resets if moment is not None)
    return max(math.ceil((latest - now).total_seconds()), 0)


def budget_status(standing: Standing, *, now: dt.datetime, currency: str) -> dict[str, Any]:
    """A budget with where it stands: limits, spent, reserved, remaining and when it resets."""
    budget = standing.applied.budget
    used_cost = standing.spent_cost + standing.reserved_cost
    used_tokens = standing.spent_tokens + standing.reserved_tokens
    return {
        "id": budget.id, "scope": budget.scope, "subject": standing.applied.subject, "period": budget.period,
        "max_cost": budget.max_cost, "max_tokens": budget.max_tokens, "warn_at": budget.warn_at,
        "currency": currency, "spent_cost": standing.spent_cost, "spent_tokens": standing.spent_tokens,
        "reserved_cost": standing.reserved_cost, "reserved_tokens": standing.reserved_tokens,
        "remaining_cost": None if budget.max_cost is None else budget.max_cost - used_cost,
        "remaining_tokens": None if budget.max_tokens is None else budget.max_tokens - used_tokens,
        "resets_at": resets_at(budget.period, now),
    }


def parse_budget(payload: Any, *, default: bool = False) -> Budget:
    """A budget from `PUT /api/budgets` JSON (or, with `default`, a default from configuration,
    which names no subject). Raises `BadRequest` naming the field at fault."""
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object with scope, subject, period and a limit", param=None)
    scope = payload.get("scope")
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}", param="scope")
    subject = payload.get("subject")
    if scope == "global":
        subject = subject if subject is not None else "*"
        if subject != "*":
            raise BadRequest("a global budget's subject is '*'", param="subject")
    if default:
        if "subject" in payload and scope != "global":
            raise BadRequest("a default budget applies to every subject of its scope: leave subject out",
                             param="subject")
        subject = "*" if scope == "global" else None
    elif not isinstance(subject, str) or not subject or len(subject) > 256 or not subject.isprintable():
        raise BadRequest("subject must be the session id, user id or api_key_id the budget limits", param="subject")
    period = payload.get("period")
    if period not in PERIODS:
        raise BadRequest(f"period must be one of {', '.join(PERIODS)}; got {period!r}", param="period")
    max_cost = _limit(payload, "max_cost")
    max_tokens = _limit(payload, "max_tokens")
    if max_tokens is not None and max_tokens != int(max_tokens):
        raise BadRequest("max_tokens must be a whole number", param="max_tokens")
    if max_cost is None and max_tokens is None:
        raise BadRequest("set max_cost and/or max_tokens", param="max_cost")
    warn_at = _limit(payload, "warn_at")
    if warn_at is not None and warn_at > 1:
        raise BadRequest("warn_at is a fraction of the limit, between 0 and 1", param="warn_at")
    return Budget(scope=scope, subject=subject, period=period, max_cost=max_cost,
                  max_tokens=None if max_tokens is None else int(max_tokens),
                  warn_at=DEFAULT_WARN_AT if warn_at is None else warn_at.quantize(Decimal("0.0001")))


# Limits the database's 64-bit integers hold with room to spare (costs are kept in 10^-10 units).
_LIMIT_CEILINGS = {"max_cost": Decimal(10**8), "max_tokens": Decimal(10**15), "warn_at": Decimal(1)}


def _limit(payload: dict[str, Any], name: str) -> Decimal | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{name} must be a number", param=name)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise BadRequest(f"{name} must be a number, got {value!r}", param=name) from None
    if not number.is_finite() or number < 0 or number > _LIMIT_CEILINGS[name]:
        raise BadRequest(f"{name} must be a number from 0 to {_LIMIT_CEILINGS[name]}, got {value!r}", param=name)
    return number
