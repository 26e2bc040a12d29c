"""records are paged newest first by (created_at, id): one index serves both

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_usage_records_created_id", "usage_records", ["created_at", "id"])
    op.drop_index("ix_usage_records_created_at", table_name="usage_records")


def downgrade() -> None:
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
    op.drop_index("ix_usage_records_created_id", table_name="usage_records")
