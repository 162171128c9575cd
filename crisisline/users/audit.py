"""The audit log: who read which caller's transcript or number, and when."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crisisline.users.schema import AuditEntry

VIEW_TRANSCRIPT = "view_transcript"
VIEW_CALLER_NUMBER = "view_caller_number"
ACTIONS = (VIEW_TRANSCRIPT, VIEW_CALLER_NUMBER)


def record(session: Session, user_name: str, action: str, call_id: str | None,
           detail: str | None = None) -> AuditEntry:
    """Add a row in the caller's transaction: the view and its record commit together,
    so nothing identifying is shown unless the read was logged."""
    entry = AuditEntry(at=datetime.now(UTC), user_name=user_name, action=action,
                       call_id=call_id, detail=detail)
    session.add(entry)
    session.flush()
    return entry


def recent(session: Session, limit: int = 100, offset: int = 0,
           call_id: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if call_id:
        query = query.where(AuditEntry.call_id == call_id)
    return list(session.scalars(query.limit(limit).offset(offset)))


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
