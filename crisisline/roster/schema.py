"""Roster tables (SQLAlchemy 2 declarative). Changes here need an Alembic revision."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    String,
    Time,
    TypeDecorator,
)
from sqlalchemy.orm import Mapped, mapped_column

from crisisline.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC: timestamptz on PostgreSQL; on SQLite (which has
    no time zones) a naive UTC value, made aware again on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TeamRow(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class TeamNeighborhoodRow(Base):
    __tablename__ = "team_neighborhoods"
    team_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    # Unique: a neighborhood served by two teams would make routing ambiguous.
    neighborhood: Mapped[str] = mapped_column(String(100), primary_key=True, unique=True)


class TeamAdjacencyRow(Base):
    __tablename__ = "team_adjacency"
    team_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    adjacent_team_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)


class ResponderRow(Base):
    __tablename__ = "responders"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(100))
    team_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    backup: Mapped[bool] = mapped_column(Boolean, default=False)


class ResponderLanguageRow(Base):
    __tablename__ = "responder_languages"
    responder_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("responders.id", ondelete="CASCADE"), primary_key=True)
    language: Mapped[str] = mapped_column(String(16), primary_key=True)


class ShiftRow(Base):
    __tablename__ = "shifts"
    __table_args__ = (CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    responder_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("responders.id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)
    # Local wall-clock times in the program's time zone (see roster.model).
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)


class OverrideRow(Base):
    __tablename__ = "overrides"
    __table_args__ = (
        CheckConstraint("kind IN ('sick', 'swap', 'extra')", name="kind"),
        CheckConstraint("ends_at > starts_at", name="interval"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    responder_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("responders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    covered_by: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("responders.id", ondelete="SET NULL"))


class RosterRevisionRow(Base):
    """One row: bumped by every roster write (RosterStore.replace_all), so a reader that
    keeps the roster in memory (the dispatcher) knows when to read it again without reading
    it all (thousands of shifts) every few seconds."""

    __tablename__ = "roster_revision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer)
