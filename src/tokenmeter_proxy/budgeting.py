"""Admission control: before a metered request is forwarded, hold its estimate against every
budget that applies, or refuse it. The budget table is cached in memory and refreshed each
second (and at once when any process changes one), so a request no budget applies to costs
nothing; one that a budget applies to is admitted in memory against this process's lease of
the budget's allowance (leases.py), so it costs no database round trip either, as a rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from .alerts import BUDGET_EXHAUSTED, BUDGET_WARNING, Alert, AlertSink, budget_key
from .budgets import (
    Applied,
    Budget,
    BudgetIndex,
    Decision,
    Estimate,
    Standing,
    budget_status,
    period_start,
)
from .catalog import Catalog, price
from .leases import Leases
from .metering import INLINE_COUNT_BYTES, Exchange
from .metrics import Metrics
from .pricing import PriceTable, token_rates
from .storage.budget_store import BudgetStore
from .types import Clock, Usage, UsageRecord

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
# No estimate can need more than this (a request claiming max_tokens of 10^15 must be refused,
# not overflow the database's integers and slip through as an error).
MAX_ESTIMATE_TOKENS = 10**11
_UNCHECKED = Decision(admitted=False, refusals=["budgets cannot be checked right now; try again shortly"],
                      retry_after=5)
COST_QUANTUM = Decimal("1e-10")
PURGE_EVERY = 60  # refreshes between purges of expired reservations
WARNING_SWEEP_EVERY = 60  # rounds between warning checks of every budget, not just those in use
STANDINGS_PER_READ = 200
RATES_KEPT = 4096  # models whose token prices the estimates keep (clients name them: bounded)


class BudgetGate:
    """Decides, per metered request, whether its budgets let it through; reserves if they do."""

    def __init__(
        self, store: BudgetStore, *, prices: Callable[[], PriceTable], clock: Clock, defaults: list[Budget],
        allow_unpriced: bool = False, fail_open: bool = True, metrics: Metrics | None = None,
        catalog: Catalog | None = None, alerts: AlertSink | None = None, lease_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.leases = Leases(store, clock=clock, lease_seconds=lease_seconds)
        self.alerts = alerts
        self.catalog = catalog
        self.prices = prices
        self.clock = clock
        self.defaults = defaults
        self.allow_unpriced = allow_unpriced
        self.fail_open = fail_open
        self.metrics = metrics
        self._budgets = BudgetIndex({}, defaults)
        self._rates = _TokenRates()
        self._pending_refresh: asyncio.Future[None] | None = None
        self._refreshes_started = 0
        self._refresh_applied = 0
        self._touches = 0
        self._touched: dict[int, int] = {}  # budget id -> the admission that last touched it
        self._warned: set[str] = set()  # keys of the warnings raised
        self._versions: dict[int, dt.datetime | None] = {}  # budget id -> the version last checked

    async def admit(self, exchange: Exchange) -> Decision | None:
        """None when no budget applies; otherwise the decision, with the estimate reserved if admitted."""
        applied = self._budgets.applicable(exchange)
        if not applied:
            return None
        table = self.prices()
        if len(exchange.raw_body) < INLINE_COUNT_BYTES:
            estimate = _estimate(exchange, table, self.catalog, self._rates)
        else:  # a big prompt takes milliseconds to count: off the event loop
            estimate = await asyncio.to_thread(_estimate, exchange, table, self.catalog, self._rates)
        try:
            decision = await self.leases.admit(exchange.id, applied, estimate, currency=table.currency,
                                               allow_unpriced=self.allow_unpriced)
        except (OperationalError, InterfaceError) as exc:  # unreachable: the configured failure mode decides
            log.error("budget check for request %s failed (%s); %s", exchange.id, exc,
                      "admitting it (fail open)" if self.fail_open else "refusing it (fail closed)")
            if self.fail_open:
                return None
            return _UNCHECKED
        except Exception:  # anything else is a fault of ours or of the request: never let it through unchecked
            log.exception("budget check for request %s failed; refusing it", exchange.id)
            return _UNCHECKED
        if not decision.admitted and self.metrics is not None:
            for scope in decision.refused_scopes:
                self.metrics.budget_refusals.labels(scope).inc()
        if self.alerts is not None:
            self._note(applied, decision, self.clock())
        return decision

    def settled(self, exchange: Exchange, record: UsageRecord | None) -> None:
        """What an admitted request really cost (None: no record was made): it settles its lease."""
        if record is None:
            self.leases.settled(exchange.id, None, 0)
        else:
            self.leases.settled(exchange.id, record.cost, record.usage.total_tokens)

    def _note(self, applied: list[Applied], decision: Decision, now: dt.datetime) -> None:
        """Alerts from a decision: a refusal exhausts its budgets (the data read later, off the
        request's path); an admission makes its budgets worth a warning check until it settles.
        Default budgets from configuration have no id and raise no alerts."""
        assert self.alerts is not None
        if decision.admitted:
            self._touches += 1
            self._touched.update((item.budget.id, self._touches) for item in applied if item.budget.id is not None)
            return
        for budget in decision.exhausted:
            if budget.id is not None:
                self.alerts.emit(Alert(BUDGET_EXHAUSTED, functools.partial(self.status, budget),
                                       key=_alert_key(BUDGET_EXHAUSTED, budget, now)))

    async def watch_warnings(self) -> None:
        """Until cancelled, each second: raise `budget.warning` for every budget whose settled spend
        reached `warn_at` of a limit. Checked: a budget new or replaced since the last check, those
        admissions touched until nothing of theirs is in flight any more, and every budget once a
        minute (for spend reported through the API)."""
        rounds = 0
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self._check_warnings(sweep=rounds % WARNING_SWEEP_EVERY == 0)
            except Exception as exc:  # the database may be down; try again next round
                log.error("checking budgets for warnings failed: %s", exc)
            rounds += 1

    async def _check_warnings(self, *, sweep: bool) -> None:
        stored = {budget.id: budget for group in self._budgets.explicit.values() for budget in group
                  if budget.id is not None}
        now, stamp = self.clock(), self._touches
        due = [budget for budget_id, budget in stored.items()
               if (sweep or budget_id in self._touched or budget_id not in self._versions
                   or self._versions[budget_id] != budget.updated_at)
               and _alert_key(BUDGET_WARNING, budget, now) not in self._warned]
        if len(self._warned) > 100_000:  # the outbox's key still holds each warning to once
            self._warned.clear()
        checked = {budget.id for budget in due}  # a deleted or already warned budget is touched in vain
        self._touched = {budget_id: touch for budget_id, touch in self._touched.items() if budget_id in checked}
        standings = await asyncio.to_thread(self._standings, due, now) if due else []
        self._versions = {budget_id: budget.updated_at for budget_id, budget in stored.items()}
        for standing in standings:
            budget = standing.applied.budget
            if _warning_reached(standing):
                key = _alert_key(BUDGET_WARNING, budget, now)
                self._warned.add(key)
                assert self.alerts is not None
                self.alerts.emit(Alert(BUDGET_WARNING, functools.partial(self.status, budget), key=key))
            budget_id = budget.id or 0  # a stored budget always has one
            untouched_since = self._touched.get(budget_id, stamp + 1) <= stamp
            if untouched_since and not standing.reserved_cost and not standing.reserved_tokens:
                del self._touched[budget_id]  # nothing of its in flight: all its spend has settled

    def _standings(self, budgets: list[Budget], now: dt.datetime) -> list[Standing]:
        found: list[Standing] = []
        for start in range(0, len(budgets), STANDINGS_PER_READ):
            chunk = budgets[start:start + STANDINGS_PER_READ]
            found += self.store.standings([Applied(budget, budget.subject or "*") for budget in chunk], now=now)
        return found

    async def load(self) -> None:
        """Load the budgets before the first request; with the database down, start without them
        (`watch()` keeps trying) rather than not start at all."""
        try:
            await self.refresh()
        except Exception as exc:  # the proxy must serve even when the database does not answer
            log.error("budgets could not be loaded at startup (%s); they apply once the database answers", exc)

    async def refresh(self) -> None:
        """Reload the budget table into memory."""
        self._refreshes_started += 1
        ticket = self._refreshes_started
        budgets = await asyncio.to_thread(self.store.all)
        if ticket < self._refresh_applied:
            return  # a refresh that started later has already applied newer budgets
        self._refresh_applied = ticket
        explicit: dict[tuple[str, str], list[Budget]] = defaultdict(list)
        for budget in budgets:
            explicit[(budget.scope, budget.subject or "*")].append(budget)
        self._budgets = BudgetIndex(dict(explicit), self.defaults)
        self.leases.changed(budgets)

    async def watch(self) -> None:
        """Keep the cached budgets current until cancelled: at once when any process announces a
        change (PostgreSQL), and every second regardless; purge reservations of crashed
        processes now and then."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        listener = threading.Thread(target=self.store.listen, name="budget-changes", daemon=True,
                                    args=(lambda: loop.call_soon_threadsafe(self._refresh_soon), stop))
        listener.start()
        try:
            await self._poll()
        finally:
            stop.set()

    def _refresh_soon(self) -> None:
        self._pending_refresh = asyncio.ensure_future(self.refresh())

    async def _poll(self) -> None:
        rounds = 0
        while True:
            try:
                await self.refresh()
                if rounds % PURGE_EVERY == 0:
                    purged = await asyncio.to_thread(self.store.purge_expired, now=self.clock())
                    if purged:
                        log.warning("purged %d expired budget reservations of requests that never finished", purged)
            except Exception as exc:  # the database may be down; keep the budgets we know
                log.error("refreshing budgets failed: %s", exc)
            rounds += 1
            await asyncio.sleep(REFRESH_SECONDS)

    def status(self, budget: Budget) -> dict[str, Any]:
        """A budget with where it stands now, as `GET /api/budgets` shows it."""
        now = self.clock()
        applied = [Applied(budget, budget.subject or "*")]
        [standing], [recent] = self.store.standings(applied, now=now), self.store.recent(applied, now=now)
        return budget_status(standing, now=now, currency=self.prices().currency, recent=recent)


def _alert_key(type_: str, budget: Budget, now: dt.datetime) -> str:
    return budget_key(type_, budget_id=budget.id or 0, version=budget.updated_at,
                      period_start=period_start(budget.period, now))


def _warning_reached(standing: Standing) -> bool:
    """Whether settled spend (reservations aside) reached `warn_at` of a limit above zero."""
    budget = standing.applied.budget
    by_cost = (budget.max_cost is not None and budget.max_cost > 0 and standing.spent_cost > 0
               and standing.spent_cost >= budget.warn_at * budget.max_cost)
    by_tokens = (budget.max_tokens is not None and budget.max_tokens > 0 and standing.spent_tokens > 0
                 and standing.spent_tokens >= budget.warn_at * budget.max_tokens)
    return by_cost or by_tokens


def _estimate(exchange: Exchange, table: PriceTable, catalog: Catalog | None, rates: _TokenRates) -> Estimate:
    """The request's input counted with tiktoken, plus its output cap where it sets one, priced
    at full input price (cache hits are not known in advance) as its provider's prices say."""
    facts = exchange.facts
    input_tokens = min(exchange.route.protocol.count_input(facts, exchange.raw_body), MAX_ESTIMATE_TOKENS)
    output_tokens = min(facts.max_output_tokens or 0, MAX_ESTIMATE_TOKENS)
    per_token = rates.of(table, facts.model, exchange.route.provider)
    if per_token is not None:  # the pricing file's price, in integers: what `price` gives, without decimals
        units = input_tokens * per_token[0] + output_tokens * per_token[1]
        return Estimate(cost=Decimal(units).scaleb(-10), tokens=input_tokens + output_tokens, model=facts.model)
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    cost = price(table, catalog, facts.model, usage, provider=exchange.route.provider).cost
    # to the 10^-10 the database keeps, so the check in SQL and its explanation agree exactly
    rounded = None if cost is None else cost.quantize(COST_QUANTUM)
    return Estimate(cost=rounded, tokens=usage.total_tokens, model=facts.model)


class _TokenRates:
    """The pricing file's price of an input and an output token per model, in 10^-10 units,
    looked up once per model and pricing table (None: not in the file, or not whole units)."""

    def __init__(self) -> None:
        # the table and what was found in it, replaced together (estimates also run in threads)
        self._kept: tuple[PriceTable | None, dict[tuple[str, str], tuple[int, int] | None]] = (None, {})

    def of(self, table: PriceTable, model: str | None, provider: str) -> tuple[int, int] | None:
        if not model:
            return None
        kept, found = self._kept
        if table is not kept or len(found) > RATES_KEPT:  # reloaded, or too many names
            found = {}
            self._kept = (table, found)
        key = (provider, model)
        if key not in found:
            priced = table.price_of(model, provider=provider)
            found[key] = None if priced is None else token_rates(priced[1], unit_tokens=table.unit_tokens,
                                                                 scale=10**10)
        return found[key]
