"""Reviewers' work on the prompts, in SQL: one row per (language, prompt), on top of the
shipped catalog. Changes here need an Alembic revision.

A row holds two independent things:

- a **text overlay**: the text a reviewer wrote or approved (``text``; None = follow the
  catalog), its status, who reviewed it and when, and ``base_text``, the catalog's text
  at the time. When a later release changes the catalog's text for the same prompt, the
  reviewer's text still wins and the difference is shown as a conflict (see
  crisisline.prompts.overlay) until a reviewer decides.
- a **recording**: the audio a reviewer recorded or uploaded, already converted to what
  Asterisk plays (8 kHz mono 16-bit WAV), with its hash, length, who and when, and the
  text it was a reading of (so a later text change shows the recording as out of date).
  SQL is its record; the prompts folder holds the copy the IVR plays.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, deferred, mapped_column, undefer

from crisisline.config import Settings
from crisisline.db import Base
from crisisline.roster.schema import UTCDateTime

STATUSES = ("draft", "reviewed")
SOURCES = ("browser", "upload")


class PromptReview(Base):
    __tablename__ = "prompt_reviews"
    __table_args__ = (
        UniqueConstraint("language", "prompt"),
        CheckConstraint("status IN ('draft', 'reviewed')", name="status"),
        CheckConstraint("recording_source IS NULL OR recording_source IN ('browser', 'upload')",
                        name="recording_source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    language: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(String(64))
    # Bumped by every change: a form carries the version it was made from, and a save from
    # a stale form is refused (two reviewers never overwrite each other unknowingly).
    version: Mapped[int] = mapped_column(Integer, default=1)

    # ---- text overlay (text None: the catalog's text and status apply) ----
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    reviewer: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    base_text: Mapped[str | None] = mapped_column(Text)  # the catalog's text it was based on
    text_by: Mapped[str | None] = mapped_column(String(64))
    text_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # ---- recording (all None when there is none) ----
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    recording_seconds: Mapped[float | None] = mapped_column(Float)
    recording_source: Mapped[str | None] = mapped_column(String(16))
    recording_by: Mapped[str | None] = mapped_column(String(64))
    recording_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recording_text: Mapped[str | None] = mapped_column(Text)  # what it was a reading of
    # The bytes, loaded only when asked for (a page of 30 prompts never pulls megabytes).
    recording_wav: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))

    @property
    def has_recording(self) -> bool:
        return self.recording_sha256 is not None


def all_reviews(session: Session) -> list[PromptReview]:
    return list(session.scalars(select(PromptReview).order_by(PromptReview.language,
                                                               PromptReview.prompt)))


def for_language(session: Session, language: str) -> dict[str, PromptReview]:
    rows = session.scalars(select(PromptReview).where(PromptReview.language == language))
    return {row.prompt: row for row in rows}


def get(session: Session, language: str, prompt: str, lock: bool = False) -> PromptReview | None:
    query = select(PromptReview).where(PromptReview.language == language,
                                       PromptReview.prompt == prompt)
    if lock:
        query = query.with_for_update()  # PostgreSQL: concurrent saves of one prompt queue up
    return session.scalar(query)


def read_all(settings: Settings, with_audio: bool = False, migrate: bool = True
             ) -> list[PromptReview]:
    """Every review row, detached, for commands (render, status, check, export).

    ``migrate=False`` (for ``check``, which changes nothing) reads a database that was
    never migrated as having no reviews yet. Any other database error is raised: a
    command must not go on as if no reviewer had ever worked (it would render the shipped
    texts over theirs)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from crisisline import db

    url = make_url(settings.sql_url)
    if not migrate and url.get_backend_name() == "sqlite" and url.database \
            and url.database != ":memory:" and not Path(url.database).exists():
        return []  # no database yet (and reading must not create one)
    engine = db.engine_for(settings)
    try:
        if migrate:
            db.upgrade(settings, engine)
        elif not inspect(engine).has_table(PromptReview.__tablename__):
            return []
        with Session(engine, expire_on_commit=False) as session:
            query = select(PromptReview).order_by(PromptReview.language, PromptReview.prompt)
            if with_audio:
                query = query.options(undefer(PromptReview.recording_wav))
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows
    finally:
        engine.dispose()
