"""Alembic environment: runs the revisions in versions/ against crisisline.db.metadata.

Called through crisisline.db.upgrade (which passes its engine in ``config.attributes``)
or by the ``alembic`` command with ``-x``-free config whose sqlalchemy.url is set.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

# Import every module that defines tables, so autogenerate sees the whole schema.
# Add new schema modules here.
import crisisline.prompts.reviews
import crisisline.records.schema
import crisisline.roster.schema
import crisisline.users.schema  # noqa: F401
from crisisline.db import metadata

config = context.config
target_metadata = metadata


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if owned:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            # render_as_batch: SQLite can't ALTER most things; batch mode rebuilds tables.
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite",
                              compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
