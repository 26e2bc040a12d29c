"""Budget arithmetic and decisions (no I/O): which budgets apply to a request, when periods
start and reset, and whether spent + reserved + this request's estimate stays within limits.

A budget caps what a session, a user, an API key (by its `api_key_id`), a tag (`name:value`, of
X-TokenMeter-Tags) or everyone (`global`, subject "*") may spend per UTC day, UTC month or in
total, in cost and/or in tokens.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from .errors import BadRequest
from .pricing import money_text
from .tags import tag_filter

SCOPES = ("session", "user", "key", "global", "tag")
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
    # when it was last set (None: not stored); alerts are once per budget *as set*, so replacing re-arms them
    updated_at: dt.datetime | None = field(default=None, compare=False)

    def name(self, subject: str | None = None) -> str:
        """How refusals and warnings name the budget: `session s-1 (day)`."""
        who = "everyone" if self.scope == "global" else f"{self.scope} {subject or self.subject}"
        return f"{who} ({self.period})"


class Requester(Protocol):
    """Who a request is for, and what for: what budgets can name (a metered exchange is one)."""

    @property
    def session_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def api_key_id(self) -> str | None: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def subjects(requester: Requester, scope: str) -> list[str]:
    """The request's subjects of a scope: one or none, and for `tag` one per tag (`name:value`)."""
    if scope == "session":
        subject = requester.session_id
    elif scope == "user":
        subject = requester.user_id
    elif scope == "key":
        subject = requester.api_key_id
    elif scope == "global":
        return ["*"]
    else:
        return [f"{name}:{value}" for name, value in requester.tags.items()]
    return [] if subject is None else [subject]


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


@dataclass  # made for every request with a budget: a frozen dataclass costs twice as much to make
class Estimate:
    """What a request may cost at most, as far as can be known before it runs."""

    cost: Decimal | None  # None: the model has no price
    tokens: int
    model: str | None = None


@dataclass  # made for every request with a budget: a frozen dataclass costs 3x as much to make
class Decision:
    """The verdict on one request against every budget that applies to it."""

    admitted: bool
    refusals: list[str] = field(default_factory=list)
    refused_scopes: list[str] = field(default_factory=list)
    retry_after: int | None = None
    remaining_cost: Decimal | None = None
    remaining_tokens: int | None = None
    warnings: list[str] = field(default_factory=list)
    exhausted: list[Budget] = field(default_factory=list)  # refused because spent + reserved reached a limit


class BudgetIndex:
    """Budgets by what they apply to: the stored ones by (scope, subject), the defaults from
    configuration by scope. Built whenever the budgets change; asked on every metered request."""

    def __init__(self, explicit: Mapping[tuple[str, str], list[Budget]], defaults: Iterable[Budget]) -> None:
        self.explicit = explicit
        self._defaults = {scope: tuple(budget for budget in defaults if budget.scope == scope) for scope in SCOPES}
        named = {scope for scope, _ in explicit}
        self._scopes = tuple(scope for scope in SCOPES if scope in named or self._defaults[scope])

    def applicable(self, requester: Requester) -> list[Applied]:
        """The budgets that limit a request: each subject's own budgets, and for every scope and
        period it has no budget of its own, the default from configuration."""
        found: list[Applied] = []
        for scope in self._scopes:  # only scopes some budget names: most requests ask one or two
            defaults = self._defaults[scope]
            for subject in subjects(requester, scope):
                own = self.explicit.get((scope, subject))
                if own is None:
                    found += [Applied(budget, subject) for budget in defaults]
                    continue
                found += [Applied(budget, subject) for budget in own]
                covered = {budget.period for budget in own}
                found += [Applied(budget, subject) for budget in defaults if budget.period not in covered]
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
    exhausted: list[Budget] = []
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
                exhausted.append(budget)
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
                exhausted.append(budget)
            left_tokens = budget.max_tokens - used_tokens - estimate.tokens
            remaining_tokens = left_tokens if remaining_tokens is None else min(remaining_tokens, left_tokens)
            if used_tokens >= budget.warn_at * budget.max_tokens:
                warnings.append(f"{budget.name(subject)}: {used_tokens} of {budget.max_tokens} tokens used")
    return Decision(admitted=not refusals, refusals=refusals, retry_after=retry_after(refusing, now) if refusals
                    else None, refused_scopes=sorted({budget.scope for budget in refusing}), exhausted=exhausted,
                    remaining_cost=remaining_cost, remaining_tokens=remaining_tokens, warnings=warnings)


def retry_after(refusing: list[Budget], now: dt.datetime) -> int | None:
    """Whole seconds, rounded up, to the latest reset of the refusing budgets; None when one of
    them is `total` (it never resets)."""
    resets = [resets_at(budget.period, now) for budget in refusing]
    if not resets or any(moment is None for moment in resets):
        return None
    latest = max(moment for moment in resets if moment is not None)
    return max(math.ceil((latest - now).total_seconds()), 0)


E10 = Decimal(10**10)  # money is counted in 10^-10 units, as the database keeps it


def e10(amount: Decimal) -> int:
    """A cost in the integer units the database and the leases count in."""
    return int((amount * E10).to_integral_value())


@dataclass(frozen=True)
class LeaseRequest:
    """A process asks for more of one subject's allowance, to admit requests against in memory:
    (cost in 10^-10 units, tokens) it needs at least, and would like."""

    lease_id: str
    scope: str
    subject: str
    budgets: tuple[Budget, ...]  # every budget of the subject
    need: tuple[int, int]
    want: tuple[int, int]


@dataclass(frozen=True)
class Grant:
    """What a lease request got, and where the subject's budgets stood before it."""

    cost_e10: int
    tokens: int
    standings: list[Standing]


def grant(standings: list[Standing], *, need: tuple[int, int], want: tuple[int, int]) -> tuple[int, int]:
    """The (cost, tokens) to grant: at least `need` (else nothing), at most `want`, and beyond
    `need` at most half of the room the budgets have left, so that processes sharing the budgets
    share what remains, and its last part goes one request at a time. A dimension no budget
    limits gets `need`. The SQL function `tokenmeter_lease` (migrations 0013, 0014) does the same."""
    rooms = [[], []]  # type: list[list[int]]
    for standing in standings:
        budget = standing.applied.budget
        if budget.max_cost is not None:
            rooms[0].append(e10(budget.max_cost - standing.spent_cost - standing.reserved_cost))
        if budget.max_tokens is not None:
            rooms[1].append(budget.max_tokens - standing.spent_tokens - standing.reserved_tokens)
    room = [min(found) if found else None for found in rooms]
    if any(limit is not None and limit < needed for limit, needed in zip(room, need, strict=True)):
        return 0, 0
    cost, tokens = (needed if limit is None else min(wanted, max(needed, limit // 2))
                    for limit, needed, wanted in zip(room, need, want, strict=True))
    return cost, tokens


@dataclass(frozen=True)
class Recent:
    """What a budget's subject spent in the forecast window (`recent_since` until now)."""

    cost: Decimal = Decimal(0)
    tokens: int = 0


FORECAST_DAYS = 7


def recent_since(now: dt.datetime) -> dt.datetime:
    """Start of the window the forecast's rate is taken over: the last 7 whole UTC days and today so
    far (spend is kept per day, so this is the 7 x 24 hours the daily figures can tell exactly)."""
    return period_start("day", now) - dt.timedelta(days=FORECAST_DAYS)


def forecast_exhausted_at(standing: Standing, recent: Recent, *, now: dt.datetime) -> dt.datetime | None:
    """When the period's spend reaches a limit at the recent rate: the earliest of its cost and
    token limits; None when that is not within the period (a `total` budget has no end), when
    nothing was spent recently, or when a limit is already reached."""
    budget, ends = standing.applied.budget, resets_at(standing.applied.budget.period, now)
    seconds = Decimal((now - recent_since(now)).total_seconds())
    moments = []
    for limit, spent, rate in ((budget.max_cost, standing.spent_cost, recent.cost),
                               (budget.max_tokens, standing.spent_tokens, recent.tokens)):
        if limit is None:
            continue
        if spent >= limit:
            return None
        if rate > 0:
            moments.append(now + dt.timedelta(seconds=float((limit - spent) * seconds / rate)))
    at = min(moments, default=None)
    return at if at is not None and (ends is None or at <= ends) else None


def budget_status(standing: Standing, *, now: dt.datetime, currency: str,
                  recent: Recent | None = None) -> dict[str, Any]:
    """A budget with where it stands: limits, spent, reserved, remaining, when it resets and (given
    its recent spend) when it will run out."""
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
        "forecast_exhausted_at": None if recent is None else forecast_exhausted_at(standing, recent, now=now),
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
        raise BadRequest("subject must be the session id, user id, api_key_id or tag (name:value) the budget limits",
                         param="subject")
    elif scope == "tag":
        tag_filter(subject, param="subject")
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
