"""The database schema, as SQLModel tables. Alembic migrations in `migrations/` create it.

Money is stored as an exact integer, `cost_e10` (cost x 10^10 in the record's currency), so
sums are exact in SQL on SQLite, which has no decimal type, as well as on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

COST_SCALE = 10**10


class UsageRecordRow(SQLModel, table=True):
    """One metered request. Times are naive UTC."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_created_id", "created_at", "id"),  # pages of records, newest first
        Index("ix_usage_records_session_created", "session_id", "created_at"),
        Index("ix_usage_records_user_created", "user_id", "created_at"),
        Index("ix_usage_records_model_created", "model", "created_at"),
        Index("ix_usage_records_key_created", "api_key_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    created_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))  # naive UTC
    session_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    api_key_id: str | None = Field(default=None, max_length=16)
    endpoint: str = Field(max_length=32)
    model: str | None = Field(default=None, max_length=256)
    input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cached_input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cache_write_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    reasoning_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cost_e10: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str = Field(max_length=8)
    price_version: str = Field(max_length=32)
    usage_source: str = Field(max_length=16)
    status_code: int | None = None
    streamed: bool = False
    latency_ms: int = 0
    price_source: str | None = Field(default=None, max_length=16)
    provider: str = Field(default="openai", max_length=64)
    route: str | None = Field(default=None, max_length=64)
    tags: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON {name: value}; None: none


class RecordTagRow(SQLModel, table=True):
    """One tag of one record, to find a tag's records (the partial first day of a tag's stats)."""

    __tablename__ = "usage_record_tags"
    __table_args__ = (Index("ix_usage_record_tags_tag_created", "name", "value", "created_at"),)

    record_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=128)
    created_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))  # the record's


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """A moment as stored: naive UTC (a naive moment is taken to be UTC already)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def stored_date(value: dt.date | dt.datetime | str) -> dt.date:
    """A day as a query returns it: a date (PostgreSQL), or text (SQLite's `date()`, or a stored time)."""
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value.date() if isinstance(value, dt.datetime) else value


def stored_utc(moment: dt.datetime | str) -> dt.datetime:
    """A moment as a query returns it, as aware UTC: naive UTC, or text (SQLite's MIN and MAX
    return the stored text)."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def cost_to_e10(cost: Decimal | None) -> int | None:
    """A cost as the stored integer (rounded half-even to 10^-10)."""
    return None if cost is None else int((cost * COST_SCALE).to_integral_value())


def cost_from_e10(value: int | None) -> Decimal | None:
    """The stored integer back as an exact decimal cost."""
    return None if value is None else Decimal(value).scaleb(-10)


class BudgetRow(SQLModel, table=True):
    """A budget set through the admin API (defaults from configuration are not stored)."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "subject", "period", name="uq_budgets_scope_subject_period"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)
    subject: str = Field(max_length=256)
    period: str = Field(max_length=16)
    max_cost_e10: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    max_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    warn_at: str = Field(max_length=32)  # an exact decimal fraction, as text
    created_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))
    updated_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))


class ReservationRow(SQLModel, table=True):
    """What an admitted request in flight holds against one subject's budgets, until its usage
    record replaces it (in the same transaction) or it expires (its process died)."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_subject", "scope", "subject", "created_at"),)

    request_id: str = Field(primary_key=True, max_length=32)
    scope: str = Field(primary_key=True, max_length=16)
    subject: str = Field(primary_key=True, max_length=256)
    cost_e10: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))


class SpendDailyRow(SQLModel, table=True):
    """Spend per UTC day of every subject a budget can name (session, user, key, and "*" for
    global), kept by the transaction that stores the records: budgets read a few rows here
    instead of summing records."""

    __tablename__ = "spend_daily"

    day: dt.date = Field(primary_key=True)
    scope: str = Field(primary_key=True, max_length=16)
    subject: str = Field(primary_key=True, max_length=256)
    cost_e10: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class _Measures(SQLModel):
    """The sums every rollup keeps."""

    requests: int = Field(default=0, sa_column_kwargs={"nullable": False})
    input_tokens: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"nullable": False})
    cached_input_tokens: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"nullable": False})
    output_tokens: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"nullable": False})
    cost_e10: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"nullable": False})
    unpriced_requests: int = Field(default=0, sa_column_kwargs={"nullable": False})
    estimated_requests: int = Field(default=0, sa_column_kwargs={"nullable": False})


class DailyModelRow(_Measures, table=True):
    """Usage per UTC day, provider and model ("" for none): stats without a session or user
    filter read days x providers x models rows here, however many records there are."""

    __tablename__ = "rollup_daily_model"

    day: dt.date = Field(primary_key=True)
    provider: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)


class DailySessionRow(_Measures, table=True):
    """Usage per UTC day, session, provider and model, for stats of one session."""

    __tablename__ = "rollup_daily_session"

    session_id: str = Field(primary_key=True, max_length=256)
    day: dt.date = Field(primary_key=True)
    provider: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)


class DailyUserRow(_Measures, table=True):
    """Usage per UTC day, user, provider and model, for stats of one user."""

    __tablename__ = "rollup_daily_user"

    user_id: str = Field(primary_key=True, max_length=256)
    day: dt.date = Field(primary_key=True)
    provider: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)


class DailyTagRow(_Measures, table=True):
    """Usage per UTC day, tag (name and value), provider and model, for stats by or of a tag."""

    __tablename__ = "rollup_daily_tag"

    day: dt.date = Field(primary_key=True)
    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(primary_key=True, max_length=128)
    provider: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)


class SessionRow(_Measures, table=True):
    """Each session's totals and first and last record, for the sessions list (newest first)."""

    __tablename__ = "usage_sessions"
    __table_args__ = (Index("ix_usage_sessions_last_seen", "last_seen"),)

    session_id: str = Field(primary_key=True, max_length=256)
    first_seen: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))
    last_seen: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))


class WebhookOutboxRow(SQLModel, table=True):
    """One webhook event to one URL: the outbox the senders of every process deliver from.
    `event_key` (a digest of what makes the event once-only) is unique per URL, so however many
    requests or processes raise an event, it is inserted once (INSERT ... ON CONFLICT DO NOTHING)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        UniqueConstraint("event_key", "url", name="uq_webhook_outbox_event_url"),
        Index("ix_webhook_outbox_due", "status", "url", "next_attempt_at"),  # what a sender claims
        Index("ix_webhook_outbox_created", "created_at"),  # the deliveries API, newest first
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(max_length=64)  # the same for every URL and every attempt
    event_key: str = Field(max_length=64)
    type: str = Field(max_length=32)
    url: str = Field(max_length=2048)
    body: str = Field(sa_column=Column(Text, nullable=False))  # the JSON sent, fixed when the event is made
    status: str = Field(max_length=16)  # pending, delivered, failed
    attempts: int = Field(default=0)
    last_status_code: int | None = None
    created_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))
    next_attempt_at: dt.datetime = Field(sa_column=Column(DateTime(), nullable=False))
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
