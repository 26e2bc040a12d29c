"""Every SQL query the proxy runs. Synchronous; callers off the event loop run it in a thread."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, text, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ColumnElement, Select

from ..types import UsageRecord
from .record_rows import record_from_row, record_values, records_table
from .rollups import (
    MEASURES,
    Rollups,
    daily_model,
    daily_session,
    daily_tag,
    daily_user,
    record_sums,
    record_tags,
    sessions_table,
    tag_rows,
)
from .tables import cost_from_e10, naive_utc, stored_date, stored_utc

c = records_table.c


@dataclass(frozen=True)
class Filters:
    """Narrow a query to a session, a user, a model and/or a provider, and a time window [since, until)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    session_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    provider: str | None = None
    tag: tuple[str, str] | None = None  # (name, value)


@dataclass(frozen=True)
class Totals:
    """Sums over a set of records. `cost` covers priced records only; see `unpriced_requests`."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced_requests: int = 0
    estimated_requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, name) + getattr(other, name) for name in _TOTALS_FIELDS))

    def __sub__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, name) - getattr(other, name) for name in _TOTALS_FIELDS))


_TOTALS_FIELDS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost", "unpriced_requests",
                  "estimated_requests")


@dataclass(frozen=True)
class Group:
    """Totals of one group (a day, a model, a session or a user), with its first and last record."""

    key: str | None
    totals: Totals
    first_seen: dt.datetime
    last_seen: dt.datetime


@dataclass(frozen=True)
class Cursor:
    """Where a page of records ended: records are ordered newest first by (created_at, id)."""

    created_at: dt.datetime
    id: str


class Repository:
    """Reads and writes usage records through one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rollups = Rollups(engine)
        # run in the transaction that stores new records, with their row values (budget leases settle there)
        self.on_store: Callable[[Connection, Sequence[dict[str, Any]]], None] | None = None
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert_new = dialect.insert(records_table).on_conflict_do_nothing(index_elements=["id"]).returning(
            records_table.c.id)

    def ping(self) -> None:
        """Raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def insert_records(self, records: Sequence[UsageRecord]) -> int:
        """Store a batch of records in one transaction, which also adds them to the rollups (the
        daily spend of budget subjects among them) and, through `on_store`, takes what they cost
        from the budget leases they were admitted under: spent + reserved never counts a request
        twice, or not at all. Idempotent on the record id (a replayed batch adds only what is
        new); returns how many records were new."""
        if not records:
            return 0
        with self.engine.begin() as connection:
            rows = [record_values(record) for record in records]
            stored = set(connection.execute(self._insert_new, rows).scalars())
            new = [values for values in rows if values["id"] in stored]
            if new:
                self.rollups.add(connection, new)
                tagged = tag_rows(new)
                if tagged:
                    connection.execute(insert(record_tags), tagged)
                if self.on_store is not None:
                    self.on_store(connection, new)
        return len(new)

    def totals(self, filters: Filters) -> Totals:
        """Sums over every record the filters select."""
        query = select(*record_sums()).where(*_conditions(filters))
        with self.engine.connect() as connection:
            return _totals(connection.execute(query).one())

    def grouped(self, by: str, filters: Filters, *, limit: int | None = None, offset: int = 0) -> list[Group]:
        """Totals per day, model, provider, session or user; days oldest first, the rest biggest
        cost first. Sessions and users without an id are left out of those groupings.
        """
        key = func.date(c.created_at) if by == "day" else {"model": c.model, "provider": c.provider,
                                                              "session": c.session_id, "user": c.user_id}[by]
        query: Select[Any] = (
            select(key.label("key"), func.min(c.created_at), func.max(c.created_at), *record_sums())
            .where(*_conditions(filters))
            .group_by(key)
        )
        if by in ("session", "user"):
            query = query.where(key.is_not(None))
        if by == "day":
            query = query.order_by(key)
        elif by == "session":
            query = query.order_by(func.max(c.created_at).desc(), key)
        else:
            query = query.order_by(func.coalesce(func.sum(c.cost_e10), 0).desc(), key)
        query = query.limit(limit).offset(offset)
        with self.engine.connect() as connection:
            return [
                Group(key=None if row[0] is None else str(row[0]), first_seen=stored_utc(row[1]),
                      last_seen=stored_utc(row[2]), totals=_totals(row[3:]))
                for row in connection.execute(query)
            ]

    def window(self, filters: Filters) -> list[tuple[dt.date, str, str | None, Totals]]:
        """Totals per UTC day, provider and model from `filters.since` on: whole days from the
        rollups, the partial first day from the records, so the cost grows with days, not with records."""
        assert filters.since is not None
        since = naive_utc(filters.since)
        first_whole_day, boundary = _first_whole_day(since)
        # no rollup has a session and a user, or a tag and either: those read the records only
        rollup = (filters.session_id is None or filters.user_id is None) and (
            filters.tag is None or (filters.session_id is None and filters.user_id is None))
        records = dataclasses.replace(filters, since=since, until=boundary if rollup else None)
        day = func.date(c.created_at)
        queries = [select(day, c.provider, c.model, *record_sums()).where(*_conditions(records))
                   .group_by(day, c.provider, c.model)]
        if rollup:
            queries.append(_rollup_query(filters, first_whole_day))
        with self.engine.connect() as connection:
            rows = [row for query in queries for row in connection.execute(query)]
        return [(stored_date(row[0]), row[1], row[2] or None, _totals(row[3:])) for row in rows]

    def by_tag(self, name: str, filters: Filters) -> list[tuple[str, Totals]]:
        """Totals per value of the tag `name` from `filters.since` on (records without that tag
        are left out): whole days from the tag rollup, the partial first day from the records
        (all of it from the records when the filters name a session, a user or another tag)."""
        assert filters.since is not None
        since = naive_utc(filters.since)
        first_whole_day, boundary = _first_whole_day(since)
        rollup = filters.session_id is None and filters.user_id is None and filters.tag is None
        records = dataclasses.replace(filters, since=since, until=boundary if rollup else None)
        # each record of the window looks its tag up by primary key: a left join keeps the records
        # the outer side (joined the other way round, SQLite read every record ever tagged with that
        # name: 2.3 s at 1M records); those without the tag make one group of None, left out below
        tagged = records_table.outerjoin(record_tags, and_(record_tags.c.record_id == c.id, record_tags.c.name == name))
        partial = (select(record_tags.c.value.label("key"), *[total.label(measure) for total, measure in zip(
            record_sums(), MEASURES, strict=True)]).select_from(tagged).where(*_conditions(records))
            .group_by(record_tags.c.value))
        parts = [partial]
        if rollup:
            conditions = [daily_tag.c.day >= first_whole_day, daily_tag.c.name == name]
            conditions += [daily_tag.c[key] == value for key, value in (("provider", filters.provider),
                                                                        ("model", filters.model)) if value is not None]
            parts.append(select(daily_tag.c.value.label("key"), *[func.sum(daily_tag.c[measure]).label(measure)
                                                                  for measure in MEASURES])
                         .where(*conditions).group_by(daily_tag.c.value))
        both = union_all(*parts).subquery()
        query = (select(both.c.key, *[func.sum(both.c[measure]) for measure in MEASURES]).group_by(both.c.key)
                 .order_by(func.sum(both.c.cost_e10).desc(), both.c.key))
        with self.engine.connect() as connection:
            return [(str(row[0]), _totals(row[1:])) for row in connection.execute(query) if row[0] is not None]

    def sessions(self, *, limit: int, offset: int, prefix: str | None = None,
                 user_id: str | None = None) -> tuple[int, list[Group]]:
        """How many sessions there are, and a page of them, most recently active first. With
        `prefix` and/or `user_id`: only sessions whose id starts with `prefix` (exactly, case
        and all) or that hold a record of `user_id`."""
        columns = [sessions_table.c[name] for name in MEASURES]
        session_id = sessions_table.c.session_id
        matches: list[ColumnElement[bool]] = []
        if prefix:
            matches.append(func.substr(session_id, 1, len(prefix)) == prefix)
        if user_id:
            matches.append(session_id.in_(select(c.session_id).where(c.user_id == user_id).distinct()))
        where = [or_(*matches)] if matches else []
        query = (select(session_id, sessions_table.c.first_seen, sessions_table.c.last_seen, *columns).where(*where)
                 .order_by(sessions_table.c.last_seen.desc(), session_id).limit(limit).offset(offset))
        with self.engine.connect() as connection:
            total = int(connection.execute(select(func.count()).select_from(sessions_table).where(*where))
                        .scalar_one())
            page = [Group(key=row[0], first_seen=stored_utc(row[1]), last_seen=stored_utc(row[2]),
                          totals=_totals(row[3:])) for row in connection.execute(query)]
        return total, page

    def provider_mix(self, session_ids: Sequence[str]) -> dict[str, list[tuple[str, Totals]]]:
        """Each session's totals per provider over all time, biggest cost first, from the daily
        session rollup (one query for a whole page of sessions)."""
        if not session_ids:
            return {}
        table = daily_session
        query = (select(table.c.session_id, table.c.provider, *[func.sum(table.c[name]) for name in MEASURES])
                 .where(table.c.session_id.in_(list(session_ids)))
                 .group_by(table.c.session_id, table.c.provider)
                 .order_by(table.c.session_id, func.sum(table.c.cost_e10).desc(), table.c.provider))
        mix: dict[str, list[tuple[str, Totals]]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                mix.setdefault(str(row[0]), []).append((str(row[1]), _totals(row[2:])))
        return mix

    def top(self, by: str, since: dt.datetime, *, limit: int, provider: str | None = None) -> list[tuple[str, Totals]]:
        """The sessions, users or models (`by`) that cost most since `since` (of one provider, if
        given): whole days from the daily rollups, the partial first day from the records (as
        `window` does). Records without a session or user are left out; records without a model
        count under ""."""
        key_name, rollup = {"session": ("session_id", daily_session), "user": ("user_id", daily_user),
                            "model": ("model", daily_model)}[by]
        naive = naive_utc(since)
        first_whole_day, boundary = _first_whole_day(naive)
        key = func.coalesce(c.model, "") if by == "model" else c[key_name]
        partial = (select(key.label("key"), *[sum_.label(name) for sum_, name in zip(record_sums(), MEASURES,
                                                                                        strict=True)])
                   .where(c.created_at >= naive, c.created_at < boundary, key.is_not(None),
                          *([c.provider == provider] if provider is not None else [])).group_by(key))
        whole = (select(rollup.c[key_name].label("key"),
                        *[func.sum(rollup.c[name]).label(name) for name in MEASURES])
                 .where(rollup.c.day >= first_whole_day,
                        *([rollup.c.provider == provider] if provider is not None else []))
                 .group_by(rollup.c[key_name]))
        both = union_all(partial, whole).subquery()
        cost = func.sum(both.c.cost_e10)
        query = (select(both.c.key, *[func.sum(both.c[name]) for name in MEASURES]).group_by(both.c.key)
                 .order_by(cost.desc(), both.c.key).limit(limit))
        with self.engine.connect() as connection:
            return [(str(row[0]), _totals(row[1:])) for row in connection.execute(query)]

    def session(self, session_id: str, *, limit: int) -> tuple[Totals | None, list[UsageRecord]]:
        """A session's totals over all time (None when it has no records) and its newest records,
        read from one snapshot so the two always agree."""
        columns = [sessions_table.c[name] for name in MEASURES]
        with self._snapshot() as connection:
            row = connection.execute(select(*columns).where(sessions_table.c.session_id == session_id)).first()
            found = connection.execute(_records_query(Filters(session_id=session_id), limit=limit, after=None))
            records = [record_from_row(item._mapping) for item in found]
        return (None if row is None else _totals(row)), records

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read-only transaction that sees one moment (PostgreSQL reads each statement afresh
        otherwise; SQLite keeps one snapshot per transaction anyway)."""
        options = {"isolation_level": "REPEATABLE READ"} if self.engine.dialect.name == "postgresql" else {}
        with self.engine.connect().execution_options(**options) as connection, connection.begin():
            yield connection

    def records(self, filters: Filters, *, limit: int, after: Cursor | None = None) -> list[UsageRecord]:
        """Records newest first, starting after `after`."""
        with self.engine.connect() as connection:
            return [record_from_row(row._mapping) for row in connection.execute(_records_query(filters, limit=limit,
                                                                                         after=after))]


def _records_query(filters: Filters, *, limit: int, after: Cursor | None) -> Select[Any]:
    query = select(records_table).where(*_conditions(filters))
    if after is not None:
        moment = naive_utc(after.created_at)
        # `created_at <= moment` first: an index range, where the OR alone made SQLite scan
        # from the newest record on every page (a 1M-record export went quadratic)
        query = query.where(c.created_at <= moment, or_(c.created_at < moment, and_(c.created_at == moment,
                                                                                     c.id < after.id)))
    return query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)


def _first_whole_day(since: dt.datetime) -> tuple[dt.date, dt.datetime]:
    """The first UTC day that starts at or after `since` (naive UTC), and its midnight: the rollups
    answer from there on, the records before it."""
    day = since.date() if since.time() == dt.time() else since.date() + dt.timedelta(days=1)
    return day, dt.datetime.combine(day, dt.time())


def _rollup_query(filters: Filters, first_day: dt.date) -> Select[Any]:
    table = daily_session if filters.session_id is not None else daily_user if filters.user_id is not None \
        else daily_tag if filters.tag is not None else daily_model
    conditions: list[ColumnElement[bool]] = [table.c.day >= first_day]
    if filters.tag is not None:
        conditions += [table.c.name == filters.tag[0], table.c.value == filters.tag[1]]
    if filters.session_id is not None:
        conditions.append(table.c.session_id == filters.session_id)
    if filters.user_id is not None:
        conditions.append(table.c.user_id == filters.user_id)
    if filters.model is not None:
        conditions.append(table.c.model == filters.model)
    if filters.provider is not None:
        conditions.append(table.c.provider == filters.provider)
    sums = [func.coalesce(func.sum(table.c[name]), 0) for name in MEASURES]
    return (select(table.c.day, table.c.provider, table.c.model, *sums).where(*conditions)
            .group_by(table.c.day, table.c.provider, table.c.model))


def _totals(row: Sequence[Any]) -> Totals:
    requests, input_tokens, cached, output_tokens, cost_e10, unpriced, estimated = row
    return Totals(
        requests=int(requests), input_tokens=int(input_tokens), cached_input_tokens=int(cached),
        output_tokens=int(output_tokens), cost=cost_from_e10(int(cost_e10)) or Decimal(0),
        unpriced_requests=int(unpriced), estimated_requests=int(estimated),
    )


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(c.created_at >= naive_utc(filters.since))
    if filters.until is not None:
        conditions.append(c.created_at < naive_utc(filters.until))
    for column, value in ((c.session_id, filters.session_id), (c.user_id, filters.user_id), (c.model, filters.model),
                          (c.provider, filters.provider)):
        if value is not None:
            conditions.append(column == value)
    if filters.tag is not None:  # the tag rows carry their record's time: an index range, not every such tag
        name, value = filters.tag
        tagged = [record_tags.c.name == name, record_tags.c.value == value]
        if filters.since is not None:
            tagged.append(record_tags.c.created_at >= naive_utc(filters.since))
        if filters.until is not None:
            tagged.append(record_tags.c.created_at < naive_utc(filters.until))
        conditions.append(c.id.in_(select(record_tags.c.record_id).where(*tagged)))
    return conditions
