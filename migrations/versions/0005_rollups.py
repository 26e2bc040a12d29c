"""daily rollups (by model, session, user) and per-session totals, filled from existing records

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SUMS = ("count(*), coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0), "
        "coalesce(sum(output_tokens), 0), coalesce(sum(cost_e10), 0), "
        "coalesce(sum(CASE WHEN cost_e10 IS NULL THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END), 0)")
MEASURES = ("requests, input_tokens, cached_input_tokens, output_tokens, cost_e10, unpriced_requests, "
            "estimated_requests")


def _measures() -> list[sa.Column]:
    return [
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_e10", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_requests", sa.Integer(), nullable=False),
        sa.Column("estimated_requests", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table("rollup_daily_model", sa.Column("day", sa.Date(), primary_key=True),
                    sa.Column("model", sa.String(length=256), primary_key=True), *_measures())
    for name, subject in (("rollup_daily_session", "session_id"), ("rollup_daily_user", "user_id")):
        op.create_table(name, sa.Column(subject, sa.String(length=256), primary_key=True),
                        sa.Column("day", sa.Date(), primary_key=True),
                        sa.Column("model", sa.String(length=256), primary_key=True), *_measures())
    op.create_table("usage_sessions", sa.Column("session_id", sa.String(length=256), primary_key=True),
                    sa.Column("first_seen", sa.DateTime(), nullable=False),
                    sa.Column("last_seen", sa.DateTime(), nullable=False), *_measures())
    op.create_index("ix_usage_sessions_last_seen", "usage_sessions", ["last_seen"])
    op.execute(f"INSERT INTO rollup_daily_model (day, model, {MEASURES}) SELECT date(created_at), "
               f"coalesce(model, ''), {SUMS} FROM usage_records GROUP BY date(created_at), coalesce(model, '')")
    for name, subject in (("rollup_daily_session", "session_id"), ("rollup_daily_user", "user_id")):
        op.execute(f"INSERT INTO {name} ({subject}, day, model, {MEASURES}) SELECT {subject}, date(created_at), "
                   f"coalesce(model, ''), {SUMS} FROM usage_records WHERE {subject} IS NOT NULL "
                   f"GROUP BY {subject}, date(created_at), coalesce(model, '')")
    op.execute(f"INSERT INTO usage_sessions (session_id, first_seen, last_seen, {MEASURES}) SELECT session_id, "
               f"min(created_at), max(created_at), {SUMS} FROM usage_records WHERE session_id IS NOT NULL "
               "GROUP BY session_id")


def downgrade() -> None:
    for name in ("usage_sessions", "rollup_daily_user", "rollup_daily_session", "rollup_daily_model"):
        op.drop_table(name)
