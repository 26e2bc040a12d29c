"""Admission against leases, in-process on SQLite: the figures an admitted request's response
headers carry are judge's, on where this process sees its budgets, whichever way they are worked out."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenmeter_proxy.budgets import Applied, Budget, Estimate, judge
from tokenmeter_proxy.leases import Leases
from tokenmeter_proxy.storage.budget_store import BudgetStore
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.types import utc_now

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_every_admission_says_what_judge_says_about_the_budgets_left(sqlite_url: str) -> None:
    engine = engine_from_url(sqlite_url)
    leases = Leases(BudgetStore(engine), clock=utc_now)
    budgets = [Budget("session", "s", "day", max_cost=Decimal("0.01"), warn_at=Decimal("0.5"), id=1),
               Budget("session", "s", "month", max_tokens=2000, warn_at=Decimal("0.8"), id=2),
               Budget("global", None, "day", max_cost=Decimal("5"), max_tokens=10**6)]
    applied = [Applied(budgets[0], "s"), Applied(budgets[1], "s"), Applied(budgets[2], "*")]
    estimate = Estimate(cost=Decimal("0.0004"), tokens=50, model="gpt-4o")
    warned = 0
    try:
        for n in range(24):  # past both warnings, with some settled and some still in flight
            decision = await leases.admit(f"r{n}", applied, estimate, currency="USD", allow_unpriced=False)
            slices = [leases._slices[("session", "s")], leases._slices[("global", "*")]]
            standings = [standing for piece in slices for standing in leases._local_standings(piece, 4_000_000, 50)]
            expected = judge(standings, estimate, now=utc_now(), currency="USD", allow_unpriced=True)
            assert decision.admitted
            assert (decision.remaining_cost, decision.remaining_tokens, decision.warnings) == (
                expected.remaining_cost, expected.remaining_tokens, expected.warnings), n
            warned += bool(decision.warnings)
            if n % 3:
                leases.settled(f"r{n}", Decimal("0.0003"), 40)
    finally:
        engine.dispose()
    assert 0 < warned < 24
