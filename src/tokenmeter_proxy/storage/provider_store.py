"""The provider's own usage figures (`provider_usage`), and the metered figures they are
reconciled with. Synchronous; callers off the event loop run it in a thread."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from ..reconciliation import UNKNOWN_MODEL, DayFigures, Figures, combine, day_start
from .record_rows import records_table
from .tables import stored_date


class ProviderUsageRow(SQLModel, table=True):
    """What a provider's usage API reported for one UTC day and model, as the provider names
    it (`gpt-4o-2024-08-06`); folded to pricing keys only when compared."""

    __tablename__ = "provider_usage"

    provider: str = Field(primary_key=True, max_length=32)
    day: dt.date = Field(primary_key=True)
    model: str = Field(primary_key=True, max_length=256)
    requests: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cached_input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    synced_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))  # naive UTC


provider_table = ProviderUsageRow.__table__  # type: ignore[attr-defined]
p = provider_table.c
r = records_table.c


class ProviderStore:
    """Reads and replaces provider figures, and sums metered records the same way."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(provider_table)
        # After the delete, a sync running at the same moment may have inserted the same rows:
        # the later one wins instead of failing on the primary key.
        self._upsert = upsert.on_conflict_do_update(
            index_elements=["provider", "day", "model"],
            set_={name: upsert.excluded[name] for name in (
                "requests", "input_tokens", "cached_input_tokens", "output_tokens", "synced_at")},
        )

    def replace_days(self, provider: str, start: dt.date, end: dt.date, rows: Sequence[DayFigures], *,
                     now: dt.datetime) -> int:
        """Make `rows` the provider's figures for the days start..end (both included), in one
        transaction: a day synced again is replaced, never added to. Returns the rows stored."""
        synced_at = now.astimezone(dt.UTC).replace(tzinfo=None)
        summed = sorted(combine(rows).items(), key=lambda item: (item[0][0], item[0][1] or ""))
        values = [{"provider": provider, "day": day, "model": model or UNKNOWN_MODEL, "synced_at": synced_at,
                   **figures.as_json()} for (day, model), figures in summed if start <= day <= end]
        with self.engine.begin() as connection:
            connection.execute(delete(provider_table).where(p.provider == provider, p.day >= start, p.day <= end))
            if values:
                connection.execute(self._upsert, values)
        return len(values)

    def provider_daily(self, provider: str, start: dt.date, end: dt.date) -> list[DayFigures]:
        """The provider's figures for the days start..end, oldest first."""
        query = (select(p.day, p.model, p.requests, p.input_tokens, p.cached_input_tokens, p.output_tokens)
                 .where(p.provider == provider, p.day >= start, p.day <= end).order_by(p.day, p.model))
        with self.engine.connect() as connection:
            return [_day_figures(row) for row in connection.execute(query)]

    def metered_daily(self, start: dt.date, end: dt.date) -> list[DayFigures]:
        """Every record of OpenAI's (the provider whose figures are synced) of the days start..end
        except demo ones, summed per UTC day and model as recorded."""
        day = func.date(r.created_at)
        query = (
            select(day, r.model, func.count(), func.coalesce(func.sum(r.input_tokens), 0),
                   func.coalesce(func.sum(r.cached_input_tokens), 0), func.coalesce(func.sum(r.output_tokens), 0))
            .where(r.created_at >= _naive_start(start), r.created_at < _naive_start(end + dt.timedelta(days=1)),
                   r.usage_source != "demo", r.provider == "openai")
            .group_by(day, r.model)
        )
        with self.engine.connect() as connection:
            return [_day_figures(row) for row in connection.execute(query)]


def _naive_start(day: dt.date) -> dt.datetime:
    return day_start(day).replace(tzinfo=None)  # stored times are naive UTC


def _day_figures(row: Sequence[Any]) -> DayFigures:
    day, model, requests, input_tokens, cached, output_tokens = row
    return DayFigures(day=stored_date(day), model=model,
                      figures=Figures(int(requests), int(input_tokens), int(cached), int(output_tokens)))
