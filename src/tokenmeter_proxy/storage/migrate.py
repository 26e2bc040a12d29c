"""Run the Alembic migrations in `migrations/` against an engine, from code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

_PACKAGE = Path(__file__).resolve().parents[1]


def migrations_dir() -> Path:
    """The migrations shipped inside the wheel, else those of the source checkout."""
    packaged = _PACKAGE / "migrations"
    return packaged if packaged.is_dir() else _PACKAGE.parents[1] / "migrations"


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to the newest migration, or to `revision` (idempotent); returns the
    revisions before and after."""
    before = current_revision(engine)
    command.upgrade(_config(engine), revision)
    return before, current_revision(engine)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base" for none at all)."""
    command.downgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration's revision."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, f"no migrations found in {migrations_dir()}"
    return head


def schema_behind(engine: Engine, url: str, *, migrate: str = "tokenmeter-proxy migrate") -> str | None:
    """What to tell the operator when the database's schema is not this version's (`migrate`:
    the command to suggest), else None."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return None
    return (f"the database {url} is at schema revision {current or 'none'}, this version needs {head}: "
            f"run `{migrate}` first")
