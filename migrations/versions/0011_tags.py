"""records carry tags (X-TokenMeter-Tags: feature=summarize, team=search), kept per record for
filters and summed per day, tag, provider and model for stats; budgets can limit a tag

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

`usage_records.tags` holds a record's tags as JSON for display and export; `usage_record_tags`
one row per tag, to find a tag's records; `rollup_daily_tag` the daily sums stats read. A tag
budget's spend (scope "tag", subject "name:value") goes to `spend_daily` like any other. No
record before this one has tags, so there is nothing to fill in.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


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
    with op.batch_alter_table("usage_records") as table:
        table.add_column(sa.Column("tags", sa.Text(), nullable=True))
    op.create_table("usage_record_tags", sa.Column("record_id", sa.String(length=32), primary_key=True),
                    sa.Column("name", sa.String(length=64), primary_key=True),
                    sa.Column("value", sa.String(length=128), nullable=False),
                    sa.Column("created_at", sa.DateTime(), nullable=False))
    op.create_index("ix_usage_record_tags_tag_created", "usage_record_tags", ["name", "value", "created_at"])
    op.create_table("rollup_daily_tag", sa.Column("day", sa.Date(), primary_key=True),
                    sa.Column("name", sa.String(length=64), primary_key=True),
                    sa.Column("value", sa.String(length=128), primary_key=True),
                    sa.Column("provider", sa.String(length=64), primary_key=True),
                    sa.Column("model", sa.String(length=256), primary_key=True), *_measures())


def downgrade() -> None:
    op.drop_table("rollup_daily_tag")
    op.drop_index("ix_usage_record_tags_tag_created", table_name="usage_record_tags")
    op.drop_table("usage_record_tags")
    op.execute("DELETE FROM spend_daily WHERE scope = 'tag'")
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("tags")
