"""records say who priced them: the pricing file, the catalog, or nobody

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.add_column(sa.Column("price_source", sa.String(length=16), nullable=True))
    op.execute("UPDATE usage_records SET price_source = 'pricing_file' WHERE cost_e10 IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("price_source")
