"""Alembic environment: migrations run on the engine `tokenmeter-proxy migrate` hands over."""

from alembic import context

from tokenmeter_proxy.storage import provider_store, tables  # noqa: F401 (imported: its table joins the metadata)
from tokenmeter_proxy.storage.engine import engine_from_url

target_metadata = tables.SQLModel.metadata
engine = context.config.attributes.get("engine")
if engine is None:  # run by the alembic command line: the URL comes from alembic.ini or -x url=
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = engine_from_url(url)

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
