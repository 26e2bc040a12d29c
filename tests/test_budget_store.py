"""The budget store against a real database: leases granted while the writer settles them,
how much a lease grants, leases spent past zero, leases across midnight, and spend that
outlives pruned records."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from tokenmeter_proxy.budgets import Applied, Budget, Grant, LeaseRequest, e10
from tokenmeter_proxy.storage.budget_store import BudgetStore, reservations_table, settle
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.maintenance import prune
from tokenmeter_proxy.storage.repository import Repository
from tokenmeter_proxy.types import Usage, UsageRecord

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


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


def lease(store: BudgetStore, budget: Budget, *, need: int, want: int, now: dt.datetime = NOW,
          lease_id: str = "lease-a") -> Grant:
    return store.lease(LeaseRequest(lease_id=lease_id, scope=budget.scope, subject=budget.subject or "*",
                                    budgets=(budget,), need=(need, 0), want=(want, 0)),
                       now=now, expires_at=now + dt.timedelta(seconds=30))


def test_every_lease_sees_each_earlier_grant_once_while_the_writer_settles_them(
        stores: tuple[BudgetStore, Repository]) -> None:
    """The writer stores records (adding spend, taking their cost from the lease) while leases
    are granted: each must see every earlier grant exactly once, as spend or as the lease."""
    store, repository = stores
    budget = Budget("user", "u", "total", max_cost=Decimal(10**6))
    repository.on_store = lambda connection, values: settle(
        connection, "lease-a", [("user", "u", e10(Decimal(1)), 1) for _ in values])
    todo: queue.Queue[str | None] = queue.Queue()

    def writer() -> None:
        while (request_id := todo.get()) is not None:
            repository.insert_records([spent("u", request_id, NOW)])

    writers = [threading.Thread(target=writer) for _ in range(4)]
    for thread in writers:
        thread.start()
    seen: list[Decimal] = []
    try:
        for n in range(300):
            [standing] = lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(1))).standings
            seen.append(standing.spent_cost + standing.reserved_cost)
            todo.put(f"r{n:06d}")
    finally:
        for _ in writers:
            todo.put(None)
        for thread in writers:
            thread.join()
    assert [n for n, used in enumerate(seen) if used != n] == []


def test_a_lease_grants_what_is_needed_and_beyond_it_half_the_room_left(
        stores: tuple[BudgetStore, Repository]) -> None:
    store, _ = stores
    budget = Budget("session", "s", "day", max_cost=Decimal(10))
    assert lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(8))).cost_e10 == e10(Decimal(5))
    assert lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(8)), lease_id="lease-b").cost_e10 == e10(
        Decimal("2.5"))  # half of the 5 left
    last = lease(store, budget, need=e10(Decimal(3)), want=e10(Decimal(3)), lease_id="lease-b")
    assert last.cost_e10 == 0 and last.standings[0].reserved_cost == Decimal("7.5")  # 2.5 left: not enough
    assert lease(store, budget, need=e10(Decimal("2.5")), want=e10(Decimal(9))).cost_e10 == e10(Decimal("2.5"))


def test_settling_a_subject_twice_in_one_call_takes_both_amounts(stores: tuple[BudgetStore, Repository]) -> None:
    store, repository = stores
    budget = Budget("user", "u", "day", max_cost=Decimal(10), max_tokens=1000)
    other = Budget("user", "v", "day", max_cost=Decimal(10), max_tokens=1000)
    lease(store, budget, need=e10(Decimal(4)), want=e10(Decimal(4)))
    store.lease(LeaseRequest(lease_id="lease-a", scope="user", subject="v", budgets=(other,), need=(e10(Decimal(2)), 0),
                             want=(e10(Decimal(2)), 0)), now=NOW, expires_at=NOW + dt.timedelta(seconds=30))
    with repository.engine.begin() as connection:
        settle(connection, "lease-a", [("user", "u", e10(Decimal(1)), 0), ("user", "v", e10(Decimal(1)), 0),
                                       ("user", "u", e10(Decimal(2)), 0)])
    [u] = store.standings([Applied(budget, "u")], now=NOW)
    [v] = store.standings([Applied(other, "v")], now=NOW)
    assert (u.reserved_cost, v.reserved_cost) == (Decimal(1), Decimal(1))


def test_a_lease_spent_past_zero_reserves_nothing_and_dropping_it_removes_it(
        stores: tuple[BudgetStore, Repository]) -> None:
    store, repository = stores
    budget = Budget("user", "u", "day", max_cost=Decimal(10))
    lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(1)))
    with repository.engine.begin() as connection:
        settle(connection, "lease-a", [("user", "u", e10(Decimal(3)), 0)])  # a record cost 3 on a lease of 1
    assert store.standings([Applied(budget, "u")], now=NOW)[0].reserved_cost == 0
    store.shrink("lease-a", [], dropped=[("user", "u")], expires_at=NOW)
    with repository.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(reservations_table)).scalar_one() == 0


def test_a_lease_taken_before_midnight_still_counts_after_it(stores: tuple[BudgetStore, Repository]) -> None:
    store, _ = stores
    budget = Budget("user", "u", "day", max_cost=Decimal("1.5"))
    late = dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC)
    assert lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(1)), now=late).cost_e10
    after = late + dt.timedelta(seconds=2)  # the first request is still running; its record will land today
    assert not lease(store, budget, need=e10(Decimal(1)), want=e10(Decimal(1)), now=after,
                     lease_id="lease-b").cost_e10


def test_pruning_old_records_does_not_reopen_a_total_budget(stores: tuple[BudgetStore, Repository]) -> None:
    store, repository = stores
    old = NOW - dt.timedelta(days=200)
    repository.insert_records([spent("u", f"old{n}", old, cost="10") for n in range(5)])
    applied = [Applied(Budget("user", "u", "total", max_cost=Decimal(50)), "u")]
    assert store.standings(applied, now=NOW)[0].spent_cost == 50
    prune(repository.engine, repository.rollups, NOW - dt.timedelta(days=90))
    assert store.standings(applied, now=NOW)[0].spent_cost == 50
