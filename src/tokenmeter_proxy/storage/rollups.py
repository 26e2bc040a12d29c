"""Rollups: usage summed per UTC day (by provider and model, by session, by user) and per session, kept by
the same transaction that stores the records, so stats read rows per day, not per record.

`add()` folds a batch of new records in; `rebuild()` recomputes the days a change touched
(erasure, repricing, bulk loads) from the records themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Column, Engine, Table, case, delete, func, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .tables import (
    DailyModelRow,
    DailySessionRow,
    DailyTagRow,
    DailyUserRow,
    RecordTagRow,
    SessionRow,
    SpendDailyRow,
    UsageRecordRow,
)

records = UsageRecordRow.__table__  # type: ignore[attr-defined]
daily_model = DailyModelRow.__table__  # type: ignore[attr-defined]
daily_session = DailySessionRow.__table__  # type: ignore[attr-defined]
daily_user = DailyUserRow.__table__  # type: ignore[attr-defined]
daily_tag = DailyTagRow.__table__  # type: ignore[attr-defined]
record_tags = RecordTagRow.__table__  # type: ignore[attr-defined]
sessions_table = SessionRow.__table__  # type: ignore[attr-defined]
spend_table = SpendDailyRow.__table__  # type: ignore[attr-defined]
MEASURES = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_e10", "unpriced_requests",
            "estimated_requests")


@dataclass(frozen=True)
class _Rollup:
    """One daily rollup: its table, its key columns, and the key of a record (None: not in it)."""

    table: Table
    keys: tuple[str, ...]
    key_of: Callable[[dict[str, Any], dt.date], tuple[Any, ...] | None]  # from a record's row values
    subject: Column[Any] | None  # the record column that names its subject, if any


_SPEND_SUBJECTS: tuple[tuple[str, Column[Any] | None], ...] = (
    ("session", records.c.session_id), ("user", records.c.user_id), ("key", records.c.api_key_id), ("global", None))
_DAILY = (
    _Rollup(daily_model, ("day", "provider", "model"), lambda v, day: (day, v["provider"], v["model"] or ""), None),
    _Rollup(daily_session, ("session_id", "day", "provider", "model"),
            lambda v, day: (v["session_id"], day, v["provider"], v["model"] or "") if v["session_id"] else None,
            records.c.session_id),
    _Rollup(daily_user, ("user_id", "day", "provider", "model"),
            lambda v, day: (v["user_id"], day, v["provider"], v["model"] or "") if v["user_id"] else None,
            records.c.user_id),
)


class Rollups:
    """Keeps the rollup tables in step with the records."""

    def __init__(self, engine: Engine) -> None:
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._add_daily = [(rollup, _adding(dialect.insert(rollup.table), rollup.keys)) for rollup in _DAILY]
        self._add_tags = _adding(dialect.insert(daily_tag), _TAG_KEYS)
        spend = dialect.insert(spend_table)
        self._add_spend = spend.on_conflict_do_update(index_elements=["day", "scope", "subject"], set_={
            "cost_e10": spend_table.c.cost_e10 + spend.excluded.cost_e10,
            "tokens": spend_table.c.tokens + spend.excluded.tokens})
        upsert = dialect.insert(sessions_table)
        self._add_session = upsert.on_conflict_do_update(index_elements=["session_id"], set_={
            **{name: sessions_table.c[name] + upsert.excluded[name] for name in MEASURES},
            "first_seen": func.min(sessions_table.c.first_seen, upsert.excluded.first_seen) if dialect is sqlite
            else func.least(sessions_table.c.first_seen, upsert.excluded.first_seen),
            "last_seen": func.max(sessions_table.c.last_seen, upsert.excluded.last_seen) if dialect is sqlite
            else func.greatest(sessions_table.c.last_seen, upsert.excluded.last_seen),
        })

    def add(self, connection: Connection, batch: Sequence[dict[str, Any]]) -> None:
        """Fold new records, as the row values they were stored with (`record_values`), into every
        rollup (rows in a fixed order: no deadlocks between writers)."""
        connection.execute(self._add_spend, _spend(batch))
        for rollup, statement in self._add_daily:
            rows = _sum_by(batch, rollup)
            if rows:
                connection.execute(statement, rows)
        tagged = _sum_by_tag(batch)
        if tagged:
            connection.execute(self._add_tags, tagged)
        per_session: dict[str, dict[str, Any]] = {}
        for values in batch:
            if values["session_id"]:
                moment = values["created_at"]
                row = per_session.setdefault(values["session_id"], {
                    "session_id": values["session_id"], "first_seen": moment, "last_seen": moment,
                    **dict.fromkeys(MEASURES, 0)})
                row["first_seen"], row["last_seen"] = min(row["first_seen"], moment), max(row["last_seen"], moment)
                _accumulate(row, values)
        if per_session:
            connection.execute(self._add_session, [per_session[key] for key in sorted(per_session)])

    def rebuild(self, connection: Connection, days: Iterable[dt.date], session_ids: Iterable[str] = ()) -> None:
        """Recompute the daily rollups and spend of `days`, and the totals of `session_ids`, from
        the records."""
        for day in sorted(set(days)):
            start = dt.datetime.combine(day, dt.time())
            window = [records.c.created_at >= start, records.c.created_at < start + dt.timedelta(days=1)]
            connection.execute(delete(spend_table).where(spend_table.c.day == day))
            _rebuild_tags(connection, day, window)
            for scope, column in _SPEND_SUBJECTS:
                subject = column if column is not None else literal("*")
                query = (select(literal(day, type_=spend_table.c.day.type), literal(scope), subject,
                                func.coalesce(func.sum(records.c.cost_e10), 0),
                                func.coalesce(func.sum(records.c.input_tokens + records.c.output_tokens), 0))
                         .where(*window, *([column.is_not(None)] if column is not None else []))
                         .group_by(*([column] if column is not None else [])))
                if column is None:  # everyone: one row, or none on a day without records
                    query = query.having(func.count() > 0)
                connection.execute(insert(spend_table).from_select(
                    ["day", "scope", "subject", "cost_e10", "tokens"], query))
            for rollup in _DAILY:
                connection.execute(delete(rollup.table).where(rollup.table.c.day == day))
                key_columns = {"day": literal(day, type_=rollup.table.c.day.type),
                               "provider": records.c.provider, "model": func.coalesce(records.c.model, "")}
                if rollup.subject is not None:
                    key_columns[rollup.keys[0]] = rollup.subject
                keys = [key_columns[name] for name in rollup.keys]
                query = (select(*keys, *record_sums()).where(*window)
                         .where(*([rollup.subject.is_not(None)] if rollup.subject is not None else []))
                         .group_by(*keys))
                connection.execute(insert(rollup.table).from_select([*rollup.keys, *MEASURES], query))
        ids = sorted(set(session_ids))
        for first in range(0, len(ids), 500):  # in chunks: a bulk load touches tens of thousands
            chunk = ids[first:first + 500]
            connection.execute(delete(sessions_table).where(sessions_table.c.session_id.in_(chunk)))
            query = (select(records.c.session_id, func.min(records.c.created_at), func.max(records.c.created_at),
                            *record_sums()).where(records.c.session_id.in_(chunk)).group_by(records.c.session_id))
            connection.execute(insert(sessions_table).from_select(["session_id", "first_seen", "last_seen", *MEASURES],
                                                                  query))

def tags_of(values: dict[str, Any]) -> dict[str, str]:
    """A record's tags from its row values (stored as JSON text, or None without any)."""
    text = values["tags"]
    return orjson.loads(text) if text else {}


def tag_rows(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `usage_record_tags` rows of records stored with these row values."""
    return [{"record_id": values["id"], "name": name, "value": value, "created_at": values["created_at"]}
            for values in batch if values["tags"] for name, value in tags_of(values).items()]


def _spend(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch's spend per day and budget subject, in a fixed order (so two processes adding
    to the same rows lock them in the same order and never deadlock)."""
    spend: dict[tuple[dt.date, str, str], list[int]] = {}
    for values in batch:
        day = values["created_at"].date()
        cost, tokens = values["cost_e10"] or 0, values["input_tokens"] + values["output_tokens"]
        subjects = [("session", values["session_id"]), ("user", values["user_id"]), ("key", values["api_key_id"]),
                    ("global", "*"), *(("tag", f"{name}:{value}") for name, value in tags_of(values).items())]
        for scope, subject in subjects:
            if subject is not None:
                totals = spend.setdefault((day, scope, subject), [0, 0])
                totals[0] += cost
                totals[1] += tokens
    return [{"day": day, "scope": scope, "subject": subject, "cost_e10": cost, "tokens": tokens}
            for (day, scope, subject), (cost, tokens) in sorted(spend.items())]


_TAG_KEYS = ("day", "name", "value", "provider", "model")


def _sum_by_tag(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for values in batch:
        if not values["tags"]:
            continue
        day = values["created_at"].date()
        for name, value in tags_of(values).items():
            key = (day, name, value, values["provider"], values["model"] or "")
            row = rows.get(key)
            if row is None:
                row = rows[key] = {**dict(zip(_TAG_KEYS, key, strict=True)), **dict.fromkeys(MEASURES, 0)}
            _accumulate(row, values)
    return [rows[key] for key in sorted(rows)]


def _rebuild_tags(connection: Connection, day: dt.date, window: list[Any]) -> None:
    """Recompute a day's tag rollup and tag spend from the records and their tags."""
    connection.execute(delete(daily_tag).where(daily_tag.c.day == day))
    joined = records.join(record_tags, record_tags.c.record_id == records.c.id)
    keys = [literal(day, type_=daily_tag.c.day.type), record_tags.c.name, record_tags.c.value, records.c.provider,
            func.coalesce(records.c.model, "")]
    connection.execute(insert(daily_tag).from_select(
        [*_TAG_KEYS, *MEASURES], select(*keys, *record_sums()).select_from(joined).where(*window).group_by(*keys)))
    subject = record_tags.c.name + literal(":") + record_tags.c.value
    connection.execute(insert(spend_table).from_select(
        ["day", "scope", "subject", "cost_e10", "tokens"],
        select(literal(day, type_=spend_table.c.day.type), literal("tag"), subject,
               func.coalesce(func.sum(records.c.cost_e10), 0),
               func.coalesce(func.sum(records.c.input_tokens + records.c.output_tokens), 0))
        .select_from(joined).where(*window).group_by(subject)))


def _adding(upsert: Any, keys: tuple[str, ...]) -> Any:
    return upsert.on_conflict_do_update(
        index_elements=list(keys), set_={name: upsert.table.c[name] + upsert.excluded[name] for name in MEASURES})


def _sum_by(batch: Sequence[dict[str, Any]], rollup: _Rollup) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for values in batch:
        key = rollup.key_of(values, values["created_at"].date())
        if key is None:
            continue
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**dict(zip(rollup.keys, key, strict=True)), **dict.fromkeys(MEASURES, 0)}
        _accumulate(row, values)
    return [rows[key] for key in sorted(rows)]


def _accumulate(row: dict[str, Any], values: dict[str, Any]) -> None:
    cost = values["cost_e10"]
    row["requests"] += 1
    row["input_tokens"] += values["input_tokens"]
    row["cached_input_tokens"] += values["cached_input_tokens"]
    row["output_tokens"] += values["output_tokens"]
    row["cost_e10"] += cost or 0
    row["unpriced_requests"] += cost is None
    row["estimated_requests"] += values["usage_source"] == "estimated"


def record_sums() -> list[Any]:
    """The rollup measures, summed over records, in `MEASURES` order."""
    return [
        func.count(), func.coalesce(func.sum(records.c.input_tokens), 0),
        func.coalesce(func.sum(records.c.cached_input_tokens), 0), func.coalesce(func.sum(records.c.output_tokens), 0),
        func.coalesce(func.sum(records.c.cost_e10), 0),
        func.coalesce(func.sum(case((records.c.cost_e10.is_(None), 1), else_=0)), 0),
        func.coalesce(func.sum(case((records.c.usage_source == "estimated", 1), else_=0)), 0),
    ]
