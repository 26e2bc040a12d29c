"""the webhook outbox: one row per alert event and URL, delivered by every process's sender

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

`event_key` is unique per URL, so an event raised by many requests or processes at once is
inserted once; senders claim due rows (FOR UPDATE SKIP LOCKED on PostgreSQL) and retry them
with backoff for 24 hours.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("event_key", "url", name="uq_webhook_outbox_event_url"),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["status", "url", "next_attempt_at"])
    op.create_index("ix_webhook_outbox_created", "webhook_outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_created", table_name="webhook_outbox")
    op.drop_index("ix_webhook_outbox_due", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
