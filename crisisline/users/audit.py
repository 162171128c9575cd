"""The audit log: who read which caller's transcript or number (or a texter's
conversation), who changed which prompt (its text, its review, its recording), who started,
moved or cancelled a callback request, and when."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crisisline.users.schema import AuditEntry

VIEW_TRANSCRIPT = "view_transcript"
VIEW_CALLER_NUMBER = "view_caller_number"
VIEW_CONVERSATION = "view_conversation"  # a text conversation's messages (live or finished)
# Prompt changes: detail is JSON {"language", "prompt", "old", "new", ...}.
PROMPT_TEXT = "prompt_text"  # a reviewer corrected a text
PROMPT_REVIEWED = "prompt_reviewed"  # marked reviewed
PROMPT_RECORDING = "prompt_recording"  # recorded in the browser or uploaded ("source")
PROMPT_RECORDING_REMOVED = "prompt_recording_removed"
PROMPT_CONFLICT = "prompt_conflict"  # a reviewer decided between their text and a release's
PROMPT_ACTIONS = (PROMPT_TEXT, PROMPT_REVIEWED, PROMPT_RECORDING, PROMPT_RECORDING_REMOVED,
                  PROMPT_CONFLICT)
# A supervisor working a callback request (call_id: the request's call; detail: the
# responder rung, or the cancel's reason).
CALLBACK_START_NOW = "callback_start_now"
CALLBACK_RING = "callback_ring"
CALLBACK_CANCEL = "callback_cancel"
CALLBACK_ACTIONS = (CALLBACK_START_NOW, CALLBACK_RING, CALLBACK_CANCEL)
ACTIONS = (VIEW_TRANSCRIPT, VIEW_CALLER_NUMBER, VIEW_CONVERSATION, *PROMPT_ACTIONS,
           *CALLBACK_ACTIONS)


def record(session: Session, user_name: str, action: str, call_id: str | None,
           detail: str | None = None) -> AuditEntry:
    """Add a row in the caller's transaction: the view and its record commit together,
    so nothing identifying is shown unless the read was logged."""
    entry = AuditEntry(at=datetime.now(UTC), user_name=user_name, action=action,
                       call_id=call_id, detail=detail)
    session.add(entry)
    session.flush()
    return entry


def record_prompt(session: Session, user_name: str, action: str, language: str, prompt: str,
                  old: str | None, new: str | None, **extra: Any) -> AuditEntry:
    """A prompt change, in the same transaction as the change itself."""
    detail = {"language": language, "prompt": prompt, "old": old, "new": new, **extra}
    return record(session, user_name, action, None, json.dumps(detail, ensure_ascii=False))


def prompt_detail(entry: AuditEntry) -> dict[str, Any] | None:
    """The parsed detail of a prompt change (None for other entries)."""
    if entry.action not in PROMPT_ACTIONS or not entry.detail:
        return None
    try:
        data = json.loads(entry.detail)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def prompt_changes(session: Session, language: str | None = None,
                   limit: int = 100) -> list[tuple[AuditEntry, dict[str, Any]]]:
    """Recent prompt changes, newest first, optionally of one language."""
    query = (select(AuditEntry).where(AuditEntry.action.in_(PROMPT_ACTIONS))
             .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()))
    out = []
    # Filtered after reading (the language is in the JSON detail); prompt changes are few.
    for entry in session.scalars(query.limit(limit * 20 if language else limit)):
        detail = prompt_detail(entry)
        if detail is not None and (language is None or detail.get("language") == language):
            out.append((entry, detail))
            if len(out) >= limit:
                break
    return out


def recent(session: Session, limit: int = 100, offset: int = 0,
           call_id: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if call_id:
        query = query.where(AuditEntry.call_id == call_id)
    return list(session.scalars(query.limit(limit).offset(offset)))


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
