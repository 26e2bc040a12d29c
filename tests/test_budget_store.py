"""The budget store against a real database: check-and-reserve racing the writer, reservations
across midnight, and spend that outlives pruned records."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tokenmeter_proxy.budgets import Applied, Budget, Decision, Estimate, Standing, judge
from tokenmeter_proxy.storage.budget_store import BudgetStore
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.maintenance import prune
from tokenmeter_proxy.storage.repository import Repository
from tokenmeter_proxy.types import Usage, UsageRecord

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
ONE = Estimate(cost=Decimal(1), tokens=1)


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[BudgetStore, Repository]]:
    engine = engine_from_url(database_url)
    yield BudgetStore(engine), Repository(engine)
    engine.dispose()


def spent(user: str, request_id: str, moment: dt.datetime, cost: str = "1") -> UsageRecord:
    return UsageRecord(id=request_id, created_at=moment, session_id=None, user_id=user, api_key_id=None,
                       endpoint="chat/completions", model="m", usage=Usage(input_tokens=1), cost=Decimal(cost),
                       currency="USD", price_version="v", usage_source="upstream", status_code=200, streamed=False,
                       latency_ms=0)


def test_a_request_is_always_reserved_or_recorded_while_the_writer_races_the_check(
        stores: tuple[BudgetStore, Repository]) -> None:
    """The writer stores records (adding spend, dropping reservations) while checks run: each
    check must see every earlier request exactly once, as spend or as a reservation."""
    store, repository = stores
    applied = [Applied(Budget("user", "u", "total", max_cost=Decimal(10**6)), "u")]
    todo: queue.Queue[str | None] = queue.Queue()

    def writer() -> None:
        while (request_id := todo.get()) is not None:
            repository.insert_records([spent("u", request_id, NOW)])

    writers = [threading.Thread(target=writer) for _ in range(4)]
    for thread in writers:
        thread.start()
    seen: list[Decimal] = []

    def decide(standings: list[Standing]) -> Decision:
        seen.append(standings[0].spent_cost + standings[0].reserved_cost)
        return judge(standings, ONE, now=NOW, currency="USD")

    try:
        for n in range(600):
            store.reserve(f"r{n:06d}", applied, ONE, now=NOW, expires_at=NOW + dt.timedelta(hours=1), judge=decide)
            todo.put(f"r{n:06d}")
    finally:
        for _ in writers:
            todo.put(None)
        for thread in writers:
            thread.join()
    assert [n for n, used in enumerate(seen) if used != n] == []


def test_a_reservation_made_before_midnight_still_counts_after_it(stores: tuple[BudgetStore, Repository]) -> None:
    store, _ = stores
    applied = [Applied(Budget("user", "u", "day", max_cost=Decimal("1.5")), "u")]
    late = dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC)
    decide = lambda moment: lambda standings: judge(standings, ONE, now=moment, currency="USD")  # noqa: E731
    assert store.reserve("a", applied, ONE, now=late, expires_at=late + dt.timedelta(hours=1),
                         judge=decide(late)).admitted
    after = late + dt.timedelta(seconds=2)  # the first request is still running; its record will land today
    assert not store.reserve("b", applied, ONE, now=after, expires_at=after + dt.timedelta(hours=1),
                             judge=decide(after)).admitted


def test_pruning_old_records_does_not_reopen_a_total_budget(stores: tuple[BudgetStore, Repository]) -> None:
    store, repository = stores
    old = NOW - dt.timedelta(days=200)
    repository.insert_records([spent("u", f"old{n}", old, cost="10") for n in range(5)])
    applied = [Applied(Budget("user", "u", "total", max_cost=Decimal(50)), "u")]
    assert store.standings(applied, now=NOW)[0].spent_cost == 50
    prune(repository.engine, repository.rollups, NOW - dt.timedelta(days=90))
    assert store.standings(applied, now=NOW)[0].spent_cost == 50
