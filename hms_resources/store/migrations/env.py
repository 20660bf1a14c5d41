"""Alembic environment: runs on the connection the event store hands over, or on `sqlalchemy.url`."""

from alembic import context
from sqlalchemy import create_engine

from hms_resources.store.schema import VERSION_TABLE, metadata

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    context.configure(
        connection=conn, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
