"""Tables for panel accounts and the audit log. Changes here need an Alembic revision."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crisisline.db import Base
from crisisline.roster.schema import UTCDateTime

ROLES: tuple[str, ...] = ("supervisor", "admin", "oversight", "reviewer")
ROLE_CHECK = "role IN ('supervisor', 'admin', 'oversight', 'reviewer')"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # Self-describing (algorithm$params$salt$hash), so the algorithm can change later
    # without a schema change; never empty: there is no default password anywhere.
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Reviewers only: the languages they check, comma-separated codes ("ht,kea").
    languages: Mapped[str | None] = mapped_column(String(255))

    @property
    def language_list(self) -> tuple[str, ...]:
        return tuple(c for c in (self.languages or "").split(",") if c)


class AuditEntry(Base):
    """One read of something identifying (a transcript, a caller's number).

    Rows are only ever added: the panel has no way to edit or delete them.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The name, not a foreign key: the log must outlive a removed account.
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[str | None] = mapped_column(Text)
