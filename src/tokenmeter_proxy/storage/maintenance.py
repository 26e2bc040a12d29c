"""Changes to stored usage beyond adding records: erasing a user, pruning old records, repricing,
and loading records in bulk. Each recomputes the rollups of the days it touched."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update

from ..types import Pricer, Usage, UsageRecord
from .record_rows import record_values, records_table
from .rollups import Rollups, daily_session, daily_user, record_tags, tag_rows
from .tables import cost_from_e10, cost_to_e10, naive_utc, stored_date

c = records_table.c


def erase_user(engine: Engine, rollups: Rollups, user_id: str) -> int:
    """Delete every record of a user, and their share of every rollup; returns how many."""
    with engine.begin() as connection:
        touched = connection.execute(select(func.date(c.created_at), c.session_id).distinct()
                                     .where(c.user_id == user_id)).all()
        connection.execute(delete(record_tags).where(record_tags.c.record_id.in_(
            select(c.id).where(c.user_id == user_id))))
        deleted = connection.execute(delete(records_table).where(c.user_id == user_id)).rowcount
        connection.execute(delete(daily_user).where(daily_user.c.user_id == user_id))
        rollups.rebuild(connection, [stored_date(day) for day, _ in touched],
                        {session for _, session in touched if session is not None})
    return int(deleted)


@dataclass
class PruneReport:
    """What `prune` removed."""

    records: int = 0
    cutoff: dt.datetime | None = None


def prune(engine: Engine, rollups: Rollups, cutoff: dt.datetime, *, dry_run: bool = False) -> PruneReport:
    """Delete records older than `cutoff`. The daily totals per model stay; the per-session and
    per-user detail of those days goes (so it is anonymised), and sessions lose their old share.
    The daily spend of budget subjects stays too: a `total` or `month` budget must not reopen
    because old records went (erasing a user removes theirs)."""
    naive = naive_utc(cutoff)
    with engine.begin() as connection:
        old = c.created_at < naive
        count = int(connection.execute(select(func.count()).where(old)).scalar_one())
        if dry_run or count == 0:
            return PruneReport(records=count, cutoff=cutoff)
        sessions = {row[0] for row in connection.execute(select(c.session_id).distinct().where(old))} - {None}
        connection.execute(delete(record_tags).where(record_tags.c.created_at < naive))
        connection.execute(delete(records_table).where(old))
        for table in (daily_session, daily_user):
            connection.execute(delete(table).where(table.c.day < naive.date()))
        rollups.rebuild(connection, [], sessions)  # deletes and recomputes those sessions' totals
    return PruneReport(records=count, cutoff=cutoff)


@dataclass
class RepriceReport:
    """Per model: records repriced, cost before and after."""

    models: dict[str, list[Decimal | int]] = field(default_factory=lambda: defaultdict(
        lambda: [0, Decimal(0), Decimal(0)]))

    @property
    def records(self) -> int:
        return sum(int(figures[0]) for figures in self.models.values())




def reprice(engine: Engine, rollups: Rollups, since: dt.datetime, pricer: Pricer, *, version: str,
            dry_run: bool = False, batch: int = 5000) -> RepriceReport:
    """Recompute the cost of every record from `since` with `pricer` (the prices in force now),
    recording `version`; rebuilds the rollups of the days it changed."""
    report = RepriceReport()
    naive = naive_utc(since)
    after: tuple[dt.datetime, str] | None = None
    days: set[dt.date] = set()
    sessions: set[str] = set()
    with engine.begin() as connection:
        while True:
            query = select(c.id, c.created_at, c.model, c.provider, c.session_id, c.input_tokens,
                           c.cached_input_tokens, c.cache_write_tokens, c.output_tokens, c.cost_e10,
                           c.price_source).where(c.created_at >= naive)
            if after is not None:
                query = query.where((c.created_at > after[0]) | ((c.created_at == after[0]) & (c.id > after[1])))
            rows = connection.execute(query.order_by(c.created_at, c.id).limit(batch)).all()
            if not rows:
                break
            changes = []
            for row in rows:
                usage = Usage(input_tokens=row.input_tokens, cached_input_tokens=row.cached_input_tokens,
                              cache_write_tokens=row.cache_write_tokens, output_tokens=row.output_tokens)
                cost, source = pricer(row.model, usage, row.provider)
                if row.price_source == "upstream" and source != "pricing_file":
                    # what the upstream charged is not kept apart from the cost: it stays, unless the file now prices it
                    cost, source = cost_from_e10(row.cost_e10), "upstream"
                figures = report.models[row.model or ""]
                figures[0] = int(figures[0]) + 1
                figures[1] += cost_from_e10(row.cost_e10) or Decimal(0)
                figures[2] += cost or Decimal(0)
                new_cost = cost_to_e10(cost)
                if new_cost != row.cost_e10:
                    days.add(stored_date(row.created_at))
                    if row.session_id:
                        sessions.add(row.session_id)
                changes.append({"record_id": row.id, "new_cost": new_cost, "new_source": source})
            if not dry_run:
                repriced = update(records_table).where(c.id == bindparam("record_id")).values(
                    cost_e10=bindparam("new_cost"), price_source=bindparam("new_source"), price_version=version)
                connection.execute(repriced, changes)
            after = (rows[-1].created_at, rows[-1].id)
        if not dry_run:
            rollups.rebuild(connection, days, sessions)
    return report


def bulk_insert(engine: Engine, rollups: Rollups, records: Iterable[UsageRecord], *, batch: int = 50_000,
                progress: Callable[[int], None] | None = None) -> int:
    """Insert many new records fast (the driver's own bulk path: executemany on SQLite, COPY on
    PostgreSQL), then rebuild the rollups of the days they cover once."""
    stored = 0
    days: set[dt.date] = set()
    sessions: set[str] = set()
    pending: list[UsageRecord] = []

    def flush() -> None:
        nonlocal stored
        with engine.begin() as connection:
            _copy(connection, pending)
        stored += len(pending)
        pending.clear()
        if progress is not None:
            progress(stored)

    for record in records:
        pending.append(record)
        days.add(record.created_at.astimezone(dt.UTC).date())
        if record.session_id:
            sessions.add(record.session_id)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    with engine.begin() as connection:
        rollups.rebuild(connection, days, sessions)
    return stored


def _copy(connection: Connection, batch: list[UsageRecord]) -> None:
    # in time order, so the (created_at, id) index grows at its end rather than everywhere
    rows = [record_values(record) for record in sorted(batch, key=lambda record: record.created_at)]
    tags = tag_rows(rows)
    if connection.dialect.name != "postgresql":
        # a page cache big enough for the indexes being filled (the default 2 MB thrashes: 2x slower)
        connection.exec_driver_sql("PRAGMA cache_size=-262144")
    _bulk(connection, "usage_records", rows)
    if tags:
        _bulk(connection, "usage_record_tags", tags)


def _bulk(connection: Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows through the driver's own bulk path: COPY on PostgreSQL, executemany on SQLite."""
    columns = list(rows[0])
    driver: Any = connection.connection.driver_connection  # sqlite3 or psycopg: each has its bulk path
    if connection.dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row.values()))
        return
    # SQLite stores times as text: in the form SQLAlchemy writes them, so every query compares alike
    for row in rows:
        row["created_at"] = row["created_at"].strftime("%Y-%m-%d %H:%M:%S.%f")
    driver.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                       [tuple(row.values()) for row in rows])
