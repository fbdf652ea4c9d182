"""Alembic's environment for the incident database: run by ``infra.incident_db.migrate`` on a connection
it passes in (``config.attributes["connection"]``), or by the ``alembic`` command with ``-x url=…``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from infra.incident_db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Upgrade on the given connection, or on a new one to ``-x url=…``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///var/incidents.db upgrade head")
    engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
