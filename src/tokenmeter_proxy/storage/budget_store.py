"""Budgets, their spend and the leases processes hold of them, in the database.

Spend in a period is summed from `spend_daily`, which the transaction storing the records
keeps for every subject, so it counts every record (proxied, reported, or stored before the
budget existed) and costs a few rows to read. Each process leases part of a subject's allowance
(a row of `budget_reservations` named after it) and admits requests against it in memory
(leases.py); that same transaction takes what its records cost from the lease, so spent +
reserved never has a gap. A lease is granted in one transaction under a lock per subject:
`pg_advisory_xact_lock` on PostgreSQL, which holds across processes sharing the database (the
function `tokenmeter_lease`, one round trip); a process-wide lock on SQLite, correct for one process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, DateTime, Engine, and_, bindparam, case, delete, func, insert, select, text, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from ..budgets import (
    PERIODS,
    Applied,
    Budget,
    Grant,
    LeaseRequest,
    Recent,
    Standing,
    grant,
    period_start,
    recent_since,
)
from .rollups import spend_table
from .tables import BudgetRow, ReservationRow, cost_from_e10, cost_to_e10, naive_utc

log = logging.getLogger(__name__)
budgets_table = BudgetRow.__table__  # type: ignore[attr-defined]
reservations_table = ReservationRow.__table__  # type: ignore[attr-defined]  # the leases
_CHANNEL = "tokenmeter_budgets"
_LEASE = text(
    "SELECT * FROM tokenmeter_lease(:lease_id, :scope, :subject, :now, :expires_at, CAST(:starts AS timestamp[]), "
    "CAST(:max_cost AS bigint[]), CAST(:max_tokens AS bigint[]), :need_cost, :need_tokens, :want_cost, :want_tokens)"
)
# SQLite's lease, as plain statements: built with SQLAlchemy's expression language, a grant cost
# ~2 ms of CPU, nearly all of it building and keying the statements. Reservations and the spend of
# every period in one SELECT, so one snapshot (pysqlite begins no transaction before a SELECT).
_SPENT_SINCE = ("(SELECT coalesce(sum({0}), 0) FROM spend_daily "
                "WHERE scope = :scope AND subject = :subject AND day >= :{1})")
_STANDING = text(
    "SELECT coalesce(sum(max(cost_e10, 0)), 0), coalesce(sum(max(tokens, 0)), 0), "  # a lease below zero: none
    + ", ".join(_SPENT_SINCE.format(column, period) for period in PERIODS for column in ("cost_e10", "tokens"))
    + " FROM budget_reservations WHERE scope = :scope AND subject = :subject AND expires_at > :now"
).bindparams(bindparam("now", type_=DateTime), *(bindparam(period, type_=Date) for period in PERIODS))
_ADD_TO_LEASE = text(
    "INSERT INTO budget_reservations (request_id, scope, subject, cost_e10, tokens, created_at, expires_at) "
    "VALUES (:lease_id, :scope, :subject, :cost, :tokens, :now, :expires_at) "
    "ON CONFLICT (request_id, scope, subject) DO UPDATE SET cost_e10 = cost_e10 + excluded.cost_e10, "
    "tokens = tokens + excluded.tokens, expires_at = excluded.expires_at"
).bindparams(bindparam("now", type_=DateTime), bindparam("expires_at", type_=DateTime))
_SETTLE = text(
    "UPDATE budget_reservations SET cost_e10 = cost_e10 - :cost, tokens = tokens - :tokens "
    "WHERE request_id = :lease_id AND scope = :scope AND subject = :subject"
)
_SETTLE_POSTGRES = text(  # every subject of a batch in one statement (a process only updates its own rows)
    "UPDATE budget_reservations AS r SET cost_e10 = r.cost_e10 - v.cost, tokens = r.tokens - v.tokens "
    "FROM unnest(CAST(:scopes AS text[]), CAST(:subjects AS text[]), CAST(:costs AS bigint[]), "
    "CAST(:tokens AS bigint[])) AS v(scope, subject, cost, tokens) "
    "WHERE r.request_id = :lease_id AND r.scope = v.scope AND r.subject = v.subject"
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
        return Budget(**{**budget.__dict__, "id": int(budget_id), "updated_at": values["updated_at"]}), created

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

    def recent(self, applied: list[Applied], *, now: dt.datetime) -> list[Recent]:
        """What each applied budget's subject spent since `recent_since(now)` (the forecast's rate)."""
        if not applied:
            return []
        since = recent_since(now).date()
        columns: list[ColumnElement[Any]] = []
        for item in applied:
            spent = [spend_table.c.scope == item.budget.scope, spend_table.c.subject == item.subject,
                     spend_table.c.day >= since]
            columns += [select(func.coalesce(func.sum(spend_table.c.cost_e10), 0)).where(*spent).scalar_subquery(),
                        select(func.coalesce(func.sum(spend_table.c.tokens), 0)).where(*spent).scalar_subquery()]
        with self.engine.connect() as connection:
            row = connection.execute(select(*columns)).one()
        return [Recent(cost=cost_from_e10(int(row[2 * n])) or Decimal(0), tokens=int(row[2 * n + 1]))
                for n in range(len(applied))]

    def lease(self, lease: LeaseRequest, *, now: dt.datetime, expires_at: dt.datetime) -> Grant:
        """Grant a process more of one subject's allowance: at least `need` (else nothing), at
        most `want`, and beyond `need` at most half of the room its budgets have left. Returns
        the grant with where each budget stands (read under the subject's lock, grant excluded)."""
        if self._postgres:
            return self._lease_postgres(lease, now=now, expires_at=expires_at)
        subject = {"scope": lease.scope, "subject": lease.subject}
        starts = {period: period_start(period, now).date() for period in PERIODS}
        with self._transaction() as connection:
            held_cost, held_tokens, *spent = connection.execute(
                _STANDING, {**subject, "now": naive_utc(now), **starts}).one()
            by_period = {period: (spent[2 * n], spent[2 * n + 1]) for n, period in enumerate(PERIODS)}
            standings = [Standing(Applied(budget, lease.subject),
                                  spent_cost=cost_from_e10(by_period[budget.period][0]) or Decimal(0),
                                  spent_tokens=by_period[budget.period][1],
                                  reserved_cost=cost_from_e10(held_cost) or Decimal(0), reserved_tokens=held_tokens)
                         for budget in lease.budgets]
            cost, tokens = grant(standings, need=lease.need, want=lease.want)
            if cost or tokens:
                connection.execute(_ADD_TO_LEASE, {**subject, "lease_id": lease.lease_id, "cost": cost,
                                                   "tokens": tokens, "now": naive_utc(now),
                                                   "expires_at": naive_utc(expires_at)})
        return Grant(cost_e10=cost, tokens=tokens, standings=standings)

    def _lease_postgres(self, lease: LeaseRequest, *, now: dt.datetime, expires_at: dt.datetime) -> Grant:
        parameters = {
            "lease_id": lease.lease_id, "scope": lease.scope, "subject": lease.subject, "now": naive_utc(now),
            "expires_at": naive_utc(expires_at),
            "starts": [naive_utc(period_start(budget.period, now)) for budget in lease.budgets],
            "max_cost": [cost_to_e10(budget.max_cost) for budget in lease.budgets],
            "max_tokens": [budget.max_tokens for budget in lease.budgets],
            "need_cost": lease.need[0], "need_tokens": lease.need[1], "want_cost": lease.want[0],
            "want_tokens": lease.want[1],
        }
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            rows = connection.execute(_LEASE, parameters).all()
        standings = [
            Standing(applied=Applied(budget, lease.subject), spent_cost=cost_from_e10(row.spent_cost) or Decimal(0),
                     spent_tokens=row.spent_tokens, reserved_cost=cost_from_e10(row.reserved_cost) or Decimal(0),
                     reserved_tokens=row.reserved_tokens)
            for budget, row in zip(lease.budgets, rows, strict=True)
        ]
        return Grant(cost_e10=rows[0].granted_cost, tokens=rows[0].granted_tokens, standings=standings)

    def shrink(self, lease_id: str, amounts: list[tuple[str, str, int, int]], *, dropped: list[tuple[str, str]],
               expires_at: dt.datetime) -> None:
        """Give back part of a process's leases ((scope, subject, cost, tokens) each), all of those
        `dropped` ((scope, subject): nothing of theirs is in flight or waiting to be stored), and
        keep the rest alive until `expires_at`."""
        r = reservations_table.c
        with self._transaction() as connection:
            settle(connection, lease_id, amounts)
            if dropped:
                connection.execute(delete(reservations_table).where(
                    r.request_id == lease_id, tuple_(r.scope, r.subject).in_(sorted(dropped))))
            connection.execute(update(reservations_table).where(r.request_id == lease_id)
                               .values(expires_at=naive_utc(expires_at)))

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


def settle(connection: Connection, lease_id: str, amounts: list[tuple[str, str, int, int]]) -> None:
    """Take what records cost ((scope, subject, cost, tokens) each) from a process's leases, in the
    transaction that stores them: their spend now counts, so their share of the lease stops
    counting. A lease may go below zero (records cost more than their estimates): it then counts
    as nothing reserved, as their spend already counts in full, and the next grants fill it first."""
    if not amounts:
        return
    totals: dict[tuple[str, str], list[int]] = {}
    for scope, subject, cost, tokens in amounts:  # one row per subject: an UPDATE ... FROM applies one match
        found = totals.setdefault((scope, subject), [0, 0])
        found[0] += cost
        found[1] += tokens
    keys = sorted(totals)
    if connection.dialect.name == "postgresql":
        connection.execute(_SETTLE_POSTGRES, {
            "lease_id": lease_id, "scopes": [scope for scope, _ in keys], "subjects": [subject for _, subject in keys],
            "costs": [totals[key][0] for key in keys], "tokens": [totals[key][1] for key in keys]})
        return
    connection.execute(_SETTLE, [{"lease_id": lease_id, "scope": scope, "subject": subject,
                                  "cost": totals[(scope, subject)][0], "tokens": totals[(scope, subject)][1]}
                                 for scope, subject in keys])


def _positive(column: ColumnElement[int]) -> ColumnElement[int]:
    """A reservation as it counts: a lease below zero (spent past its slice) counts as none."""
    return case((column > 0, column), else_=0)


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
            select(func.coalesce(func.sum(_positive(reservations_table.c.cost_e10)), 0)).where(*held).scalar_subquery(),
            select(func.coalesce(func.sum(_positive(reservations_table.c.tokens)), 0)).where(*held).scalar_subquery(),
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
                  warn_at=Decimal(row["warn_at"]), id=row["id"], updated_at=row["updated_at"])
