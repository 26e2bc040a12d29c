"""daily spend per budget subject, filled from the records already stored

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SUBJECTS = {"session": "session_id", "user": "user_id", "key": "api_key_id", "global": None}


def upgrade() -> None:
    op.create_table(
        "spend_daily",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("scope", sa.String(length=16), primary_key=True),
        sa.Column("subject", sa.String(length=256), primary_key=True),
        sa.Column("cost_e10", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
    )
    for scope, column in SUBJECTS.items():
        subject, where, group = (column, f"WHERE {column} IS NOT NULL", f", {column}") if column else ("'*'", "", "")
        op.execute(
            "INSERT INTO spend_daily (day, scope, subject, cost_e10, tokens) "
            f"SELECT date(created_at), '{scope}', {subject}, coalesce(sum(cost_e10), 0), "
            f"coalesce(sum(input_tokens + output_tokens), 0) FROM usage_records {where} "
            f"GROUP BY date(created_at){group}"
        )


def downgrade() -> None:
    op.drop_table("spend_daily")
