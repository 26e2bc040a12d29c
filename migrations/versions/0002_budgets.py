"""budgets and the reservations of requests in flight

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("max_cost_e10", sa.BigInteger(), nullable=True),
        sa.Column("max_tokens", sa.BigInteger(), nullable=True),
        sa.Column("warn_at", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("scope", "subject", "period", name="uq_budgets_scope_subject_period"),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("request_id", sa.String(length=32), primary_key=True),
        sa.Column("scope", sa.String(length=16), primary_key=True),
        sa.Column("subject", sa.String(length=256), primary_key=True),
        sa.Column("cost_e10", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_budget_reservations_subject", "budget_reservations", ["scope", "subject", "created_at"])
    op.create_index("ix_usage_records_key_created", "usage_records", ["api_key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_key_created", table_name="usage_records")
    op.drop_table("budget_reservations")
    op.drop_table("budgets")
