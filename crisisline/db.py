"""SQL: one shared metadata, engines for SQLite or PostgreSQL, migrations to head.

Every table of the system (roster, call records, users, audit log) hangs off
:data:`metadata` (via :class:`Base`), and the one Alembic environment in
``crisisline/migrations`` targets it. Schema changes are new revisions in
``crisisline/migrations/versions``; :func:`upgrade` applies them, so nobody runs SQL
by hand.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase

if TYPE_CHECKING:
    from alembic.config import Config

    from crisisline.config import Settings

# Named constraints: Alembic can only drop or alter what has a stable name, and
# SQLite's batch mode needs names to rebuild tables.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


def engine_for(settings: Settings, **kwargs: Any) -> Engine:
    """An engine for ``settings.sql_url``; for SQLite, creates the folder and turns on
    foreign keys (off by default in SQLite, and the roster relies on cascades)."""
    url = make_url(settings.sql_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrations_path() -> Path:
    # importlib.resources, so it works from a wheel install as well as from the repo.
    return Path(str(resources.files("crisisline") / "migrations"))


def alembic_config(settings: Settings, engine: Engine | None = None) -> Config:
    """A programmatic Alembic config (no alembic.ini): our script folder, our database."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    # '%' is interpolation syntax in Alembic's config parser; URLs may contain it.
    cfg.set_main_option("sqlalchemy.url", settings.sql_url.replace("%", "%%"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(settings: Settings, engine: Engine | None = None, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent)."""
    from alembic import command

    own = engine is None
    engine = engine or engine_for(settings)
    try:
        command.upgrade(alembic_config(settings, engine), revision)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
