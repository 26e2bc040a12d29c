"""Budgets and reservations in the database, and the atomic check-and-reserve.

Spend in a period is summed from `spend_daily`, which the transaction storing the records
keeps for every subject, so it counts every record (proxied, reported, or stored before the
budget existed) and costs a few rows to read. An admitted request holds a reservation until
that same transaction deletes it, so spent + reserved never has a gap. Check-and-reserve runs
in one transaction under a lock per subject: `pg_advisory_xact_lock` on PostgreSQL, which holds
across processes sharing the database; a process-wide lock on SQLite, correct for one process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from ..budgets import Applied, Budget, Decision, Estimate, Standing, period_start
from .repository import reservations_table
from .rollups import spend_table
from .tables import BudgetRow, cost_from_e10, cost_to_e10, naive_utc

log = logging.getLogger(__name__)
budgets_table = BudgetRow.__table__  # type: ignore[attr-defined]
_CHANNEL = "tokenmeter_budgets"
_RESERVE = text(
    "SELECT * FROM tokenmeter_reserve(:request_id, :now, :expires_at, CAST(:scopes AS text[]), "
    "CAST(:subjects AS text[]), CAST(:starts AS timestamp[]), CAST(:max_cost AS bigint[]), "
    "CAST(:max_tokens AS bigint[]), :cost, :tokens)"
)


class BudgetStore:
    """Every query about budgets. Synchronous; callers on the event loop use a thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite_lock = threading.Lock()

    def all(self) -> list[Budget]:
        """Every budget set through the API."""
        with self.engine.connect() as connection:
            return [_budget(row._mapping) for row in connection.execute(select(budgets_table))]

    def put(self, budget: Budget, *, now: dt.datetime) -> tuple[Budget, bool]:
        """Create or replace the budget for (scope, subject, period); True when created."""
        values = {"max_cost_e10": cost_to_e10(budget.max_cost), "max_tokens": budget.max_tokens,
                  "warn_at": str(budget.warn_at), "updated_at": naive_utc(now)}
        key = and_(budgets_table.c.scope == budget.scope, budgets_table.c.subject == budget.subject,
                   budgets_table.c.period == budget.period)
        with self._transaction() as connection:
            existing = connection.execute(select(budgets_table.c.id).where(key)).scalar()
            if existing is not None:
                connection.execute(update(budgets_table).where(budgets_table.c.id == existing).values(**values))
                budget_id, created = existing, False
            else:
                budget_id = connection.execute(insert(budgets_table).values(
                    scope=budget.scope, subject=budget.subject, period=budget.period, created_at=naive_utc(now),
                    **values)).inserted_primary_key[0]  # type: ignore[index]
                created = True
            self._announce(connection)
        return Budget(**{**budget.__dict__, "id": int(budget_id)}), created

    def delete(self, budget_id: int) -> bool:
        """Remove a budget; False when there was none with that id."""
        with self._transaction() as connection:
            deleted = bool(connection.execute(delete(budgets_table).where(budgets_table.c.id == budget_id)).rowcount)
            self._announce(connection)
        return deleted

    def standings(self, applied: list[Applied], *, now: dt.datetime) -> list[Standing]:
        """Spent and reserved, now, for each applied budget (one consistent read)."""
        if not applied:
            return []
        with self.engine.connect() as connection:
            return _standings(connection, applied, now)

    def reserve(self, request_id: str, applied: list[Applied], estimate: Estimate, *, now: dt.datetime,
                expires_at: dt.datetime, judge: Callable[[list[Standing]], Decision]) -> Decision:
        """Atomically: read where every applied budget stands, let `judge` decide, and if it
        admits, reserve the estimate against each subject until the record replaces it."""
        if self._postgres:
            return self._reserve_postgres(request_id, applied, estimate, now=now, expires_at=expires_at, judge=judge)
        subjects = sorted({(item.budget.scope, item.subject) for item in applied})
        with self._transaction() as connection:
            decision = judge(_standings(connection, applied, now))
            if decision.admitted:
                connection.execute(insert(reservations_table), [
                    {"request_id": request_id, "scope": scope, "subject": subject,
                     "cost_e10": cost_to_e10(estimate.cost) or 0, "tokens": estimate.tokens,
                     "created_at": naive_utc(now), "expires_at": naive_utc(expires_at)}
                    for scope, subject in subjects
                ])
        return decision

    def _reserve_postgres(self, request_id: str, applied: list[Applied], estimate: Estimate, *, now: dt.datetime,
                          expires_at: dt.datetime, judge: Callable[[list[Standing]], Decision]) -> Decision:
        """One call of `tokenmeter_reserve` (migrations 0004, 0009): locks, reads and reserves in one
        statement, one round trip. `judge` explains the verdict from the same standings, with the
        same integer arithmetic, so the two always agree."""
        parameters = {
            "request_id": request_id, "now": naive_utc(now), "expires_at": naive_utc(expires_at),
            "scopes": [item.budget.scope for item in applied], "subjects": [item.subject for item in applied],
            "starts": [naive_utc(period_start(item.budget.period, now)) for item in applied],
            "max_cost": [cost_to_e10(item.budget.max_cost) for item in applied],
            "max_tokens": [item.budget.max_tokens for item in applied],
            "cost": cost_to_e10(estimate.cost) or 0, "tokens": estimate.tokens,
        }
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            rows = connection.execute(_RESERVE, parameters).all()
        standings = [
            Standing(applied=item, spent_cost=cost_from_e10(row.spent_cost) or Decimal(0),
                     spent_tokens=row.spent_tokens, reserved_cost=cost_from_e10(row.reserved_cost) or Decimal(0),
                     reserved_tokens=row.reserved_tokens)
            for item, row in zip(applied, rows, strict=True)
        ]
        decision = judge(standings)
        if decision.admitted != rows[0].admitted:  # cannot happen while both compare the same integers
            raise RuntimeError(f"budget check disagreed with the database for request {request_id}")
        return decision

    def release(self, request_id: str) -> None:
        """Drop a request's reservations (its record will not come, e.g. it was never sent)."""
        with self._transaction() as connection:
            connection.execute(delete(reservations_table).where(reservations_table.c.request_id == request_id))

    def purge_expired(self, *, now: dt.datetime) -> int:
        """Delete reservations whose process died before its record arrived."""
        with self._transaction() as connection:
            return int(connection.execute(
                delete(reservations_table).where(reservations_table.c.expires_at <= naive_utc(now))).rowcount)

    def listen(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Blocking, for a thread of its own: call `on_change` whenever any process changes a
        budget, until `stop` is set. PostgreSQL LISTEN/NOTIFY, so every replica applies a new
        budget within milliseconds; on SQLite (one process) it returns at once."""
        if not self._postgres:
            return
        connect_args, connect_params = self.engine.dialect.create_connect_args(self.engine.url)
        while not stop.is_set():
            try:
                with self.engine.dialect.loaded_dbapi.connect(*connect_args, **connect_params,
                                                              autocommit=True) as connection:
                    connection.execute(f"LISTEN {_CHANNEL}")
                    on_change()  # catch up with whatever changed while not listening
                    while not stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            on_change()
            except Exception as exc:  # the database went away: listen again once it is back
                log.warning("listening for budget changes failed (%s); retrying", exc)
                stop.wait(1.0)

    def _announce(self, connection: Connection) -> None:
        """Tell every process sharing the database that the budgets changed (on commit)."""
        if self._postgres:
            connection.execute(text(f"SELECT pg_notify('{_CHANNEL}', '')"))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """`engine.begin()`, holding a process-wide lock on SQLite, which has no row locks to take."""
        with contextlib.nullcontext() if self._postgres else self._sqlite_lock, self.engine.begin() as connection:
            yield connection


def _standings(connection: Connection, applied: list[Applied], now: dt.datetime) -> list[Standing]:
    """One SELECT of scalar subqueries, so spend and reservations come from one snapshot."""
    columns: list[ColumnElement[Any]] = []
    for item in applied:
        start = naive_utc(period_start(item.budget.period, now))
        spent = [spend_table.c.scope == item.budget.scope, spend_table.c.subject == item.subject,
                 spend_table.c.day >= start.date()]
        # a live reservation holds whatever day it was made: its record may land in this period
        held = [reservations_table.c.scope == item.budget.scope, reservations_table.c.subject == item.subject,
                reservations_table.c.expires_at > naive_utc(now)]
        columns += [
            select(func.coalesce(func.sum(spend_table.c.cost_e10), 0)).where(*spent).scalar_subquery(),
            select(func.coalesce(func.sum(spend_table.c.tokens), 0)).where(*spent).scalar_subquery(),
            select(func.coalesce(func.sum(reservations_table.c.cost_e10), 0)).where(*held).scalar_subquery(),
            select(func.coalesce(func.sum(reservations_table.c.tokens), 0)).where(*held).scalar_subquery(),
        ]
    row = connection.execute(select(*columns)).one()
    return [
        Standing(applied=item, spent_cost=cost_from_e10(int(row[4 * n])) or Decimal(0),
                 spent_tokens=int(row[4 * n + 1]), reserved_cost=cost_from_e10(int(row[4 * n + 2])) or Decimal(0),
                 reserved_tokens=int(row[4 * n + 3]))
        for n, item in enumerate(applied)
    ]


def _budget(row: Any) -> Budget:
    return Budget(scope=row["scope"], subject=row["subject"], period=row["period"],
                  max_cost=cost_from_e10(row["max_cost_e10"]), max_tokens=row["max_tokens"],
                  warn_at=Decimal(row["warn_at"]), id=row["id"])
