"""records say which provider served them and which route they came through; the daily rollups
are kept per provider too

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Every record before this one came through /v1 (route and provider "openai") or was reported
through the API (route null). The rollups gain `provider` in their keys, so stats by provider
and filtered by it read rollup rows, as stats by model do; their existing rows are OpenAI's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ROLLUPS = (("rollup_daily_model", ("day", "model")), ("rollup_daily_session", ("session_id", "day", "model")),
           ("rollup_daily_user", ("user_id", "day", "model")))
MEASURES = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_e10", "unpriced_requests",
            "estimated_requests")


def _provider() -> sa.Column:
    return sa.Column("provider", sa.String(length=64), nullable=False, server_default="openai")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.add_column(_provider())
        table.add_column(sa.Column("route", sa.String(length=64), nullable=True))
    op.execute("UPDATE usage_records SET route = 'openai' WHERE usage_source <> 'reported'")
    for name, keys in ROLLUPS:
        _set_key(name, [*keys[:-1], "provider", keys[-1]], add=True)


def downgrade() -> None:
    for name, keys in ROLLUPS:
        # fold every provider's figures into OpenAI's, the only provider the old key knows
        listed, sums = ", ".join(keys), ", ".join(f"sum({m})" for m in MEASURES)
        added = ", ".join(f"{m} = {name}.{m} + excluded.{m}" for m in MEASURES)
        op.execute(f"INSERT INTO {name} ({listed}, provider, {', '.join(MEASURES)}) "
                   f"SELECT {listed}, 'openai', {sums} FROM {name} WHERE provider <> 'openai' GROUP BY {listed} "
                   f"ON CONFLICT ({listed}, provider) DO UPDATE SET {added}")
        op.execute(f"DELETE FROM {name} WHERE provider <> 'openai'")
        _set_key(name, list(keys), add=False)
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("route")
        table.drop_column("provider")


def _set_key(name: str, keys: list[str], *, add: bool) -> None:
    """Give a rollup table the primary key `keys`, adding (or dropping) its provider column."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(f"{name}_pkey", name, type_="primary")
        if add:
            op.add_column(name, _provider())
        else:
            op.drop_column(name, "provider")
        op.create_primary_key(f"{name}_pkey", name, keys)
        return
    # SQLite cannot alter a primary key: the rows move to a table made with the new one
    key_types = {"day": sa.Date(), "provider": sa.String(length=64)}
    columns = [sa.Column(key, key_types.get(key, sa.String(length=256)), primary_key=True,
                         **({"server_default": "openai"} if key == "provider" else {})) for key in keys]
    measures = [sa.Column(m, sa.BigInteger() if m.endswith(("tokens", "e10")) else sa.Integer(), nullable=False)
                for m in MEASURES]
    op.create_table(f"{name}_rekeyed", *columns, *measures)
    copied = ", ".join([*(key for key in keys if key != "provider"), *MEASURES])
    op.execute(f"INSERT INTO {name}_rekeyed ({copied}) SELECT {copied} FROM {name}")
    op.drop_table(name)
    op.rename_table(f"{name}_rekeyed", name)
