"""Admission control: before a metered request is forwarded, reserve its estimate against every
budget that applies, or refuse it. The budget table is cached in memory and refreshed each
second, so a request no budget applies to costs no database round trip."""

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

from .budgets import Applied, Budget, Decision, Estimate, Identity, applicable, budget_status, judge
from .catalog import Catalog, price
from .metering import INLINE_COUNT_BYTES, Exchange
from .metrics import Metrics
from .pricing import PriceTable
from .storage.budget_store import BudgetStore
from .types import Clock, Usage

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
# No estimate can need more than this (a request claiming max_tokens of 10^15 must be refused,
# not overflow the database's integers and slip through as an error).
MAX_ESTIMATE_TOKENS = 10**11
_UNCHECKED = Decision(admitted=False, refusals=["budgets cannot be checked right now; try again shortly"],
                      retry_after=5)
COST_QUANTUM = Decimal("1e-10")
PURGE_EVERY = 60  # refreshes between purges of expired reservations


class BudgetGate:
    """Decides, per metered request, whether its budgets let it through; reserves if they do."""

    def __init__(
        self, store: BudgetStore, *, prices: Callable[[], PriceTable], clock: Clock, defaults: list[Budget],
        allow_unpriced: bool = False, fail_open: bool = True, reservation_seconds: float = 900.0,
        metrics: Metrics | None = None, catalog: Catalog | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.prices = prices
        self.clock = clock
        self.defaults = defaults
        self.allow_unpriced = allow_unpriced
        self.fail_open = fail_open
        self.reservation_seconds = reservation_seconds
        self.metrics = metrics
        self._explicit: dict[tuple[str, str], list[Budget]] = {}
        self._pending_refresh: asyncio.Future[None] | None = None
        self._refreshes_started = 0
        self._refresh_applied = 0

    async def admit(self, exchange: Exchange) -> Decision | None:
        """None when no budget applies; otherwise the decision, with the estimate reserved if admitted."""
        identity = Identity(session_id=exchange.session_id, user_id=exchange.user_id,
                            api_key_id=exchange.api_key_id)
        applied = applicable(self._explicit, self.defaults, identity)
        if not applied:
            return None
        table = self.prices()
        if len(exchange.raw_body) < INLINE_COUNT_BYTES:
            estimate = _estimate(exchange, table, self.catalog)
        else:  # a big prompt takes milliseconds to count: off the event loop
            estimate = await asyncio.to_thread(_estimate, exchange, table, self.catalog)
        now = self.clock()
        decide = functools.partial(judge, estimate=estimate, now=now, currency=table.currency,
                                   allow_unpriced=self.allow_unpriced)
        try:
            decision: Decision = await asyncio.to_thread(
                self.store.reserve, exchange.id, applied, estimate, now=now,
                expires_at=now + dt.timedelta(seconds=self.reservation_seconds), judge=decide)
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
        return decision

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
        self._explicit = dict(explicit)

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
        [standing] = self.store.standings([Applied(budget, budget.subject or "*")], now=now)
        return budget_status(standing, now=now, currency=self.prices().currency)


def _estimate(exchange: Exchange, table: PriceTable, catalog: Catalog | None) -> Estimate:
    """The request's input counted with tiktoken, plus its output cap where it sets one, priced
    at full input price (cache hits are not known in advance) as its provider's prices say."""
    facts = exchange.facts
    input_tokens = exchange.route.protocol.count_input(facts, exchange.raw_body)
    usage = Usage(input_tokens=min(input_tokens, MAX_ESTIMATE_TOKENS),
                  output_tokens=min(facts.max_output_tokens or 0, MAX_ESTIMATE_TOKENS))
    cost = price(table, catalog, facts.model, usage, provider=exchange.route.provider).cost
    # to the 10^-10 the database keeps, so the check in SQL and its explanation agree exactly
    rounded = None if cost is None else cost.quantize(COST_QUANTUM)
    return Estimate(cost=rounded, tokens=usage.total_tokens, model=facts.model)
