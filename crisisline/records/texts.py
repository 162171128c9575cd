"""Text conversations in SQL: the messages of a finished conversation, its erasure, its purge.

A conversation's messages live in Redis while it is live (crisisline.stores.texts) and are
copied here when it ends (the dispatcher's recorder, idempotent by stream id). DELETE from
the texter erases them here and in Redis at once; what stays is the de-identified call
record (source, channel, language, neighborhood, outcome, times), which the oversight
report counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crisisline.records.schema import CallbackRequest, CallEvent, CallRecord, TextMessage

SENDERS = ("texter", "responder", "supervisor", "line")


def _at(value: str | None) -> datetime:
    try:
        return datetime.fromtimestamp(float(value or ""), UTC)
    except ValueError:
        return datetime.now(UTC)


def archive(session: Session, call_id: str, messages: Iterable[tuple[str, dict[str, str]]]) -> int:
    """Add the conversation's messages ((stream id, fields) from Redis) that aren't stored
    yet; the call record must exist. Returns how many were added."""
    messages = list(messages)
    if not messages:
        return 0
    seen = set(session.scalars(select(TextMessage.stream_id).where(
        TextMessage.call_id == call_id, TextMessage.stream_id.in_([m[0] for m in messages]))))
    added = 0
    for stream_id, fields in messages:
        if stream_id in seen or fields.get("sender") not in SENDERS:
            continue
        session.add(TextMessage(call_id=call_id, at=_at(fields.get("at")), sender=fields["sender"],
                                author=fields.get("author") or None, body=fields.get("body", ""),
                                stream_id=stream_id))
        added += 1
    return added


def messages(session: Session, call_id: str) -> list[TextMessage]:
    return list(session.scalars(select(TextMessage).where(TextMessage.call_id == call_id)
                                .order_by(TextMessage.at, TextMessage.id)))


def erase(engine: Engine, call_id: str) -> None:
    """The texter asked: their words, their number, their ZIP code and the timeline go; the
    record keeps only what the oversight report counts."""
    with Session(engine) as session, session.begin():
        session.execute(delete(TextMessage).where(TextMessage.call_id == call_id))
        session.execute(delete(CallEvent).where(CallEvent.call_id == call_id))
        session.execute(delete(CallbackRequest).where(CallbackRequest.call_id == call_id))
        session.execute(update(CallRecord).where(CallRecord.id == call_id).values(
            caller_number=None, transcript=None, note=None, zip_code=None))


def purge_before(session: Session, before: datetime) -> int:
    """Retention: the messages of conversations that began before ``before``."""
    old = select(CallRecord.id).where(CallRecord.started_at < before, CallRecord.source == "text")
    done = session.execute(delete(TextMessage).where(TextMessage.call_id.in_(old)))
    return int(done.rowcount or 0)
