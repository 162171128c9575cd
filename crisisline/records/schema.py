"""Tables for finished calls, their timelines, callback requests, and the messages of text
conversations.

No audio is ever stored. ``caller_number``, ``transcript`` and a text conversation's
messages are what identify a caller; the retention job clears them after
``retention_days``, and the panel audits every read of them. Responder ids are plain
strings: the roster is replaced whole on import, and a call's history must outlive that.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from crisisline.db import Base
from crisisline.roster.schema import UTCDateTime


class CallRecord(Base):
    __tablename__ = "call_records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), index=True)
    language: Mapped[str] = mapped_column(String(16), index=True)
    neighborhood: Mapped[str | None] = mapped_column(String(64), index=True)
    zip_code: Mapped[str | None] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Caller and responder both in the room: what time_to_human_s measures.
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    time_to_human_s: Mapped[float | None] = mapped_column(Float)
    waves_used: Mapped[int] = mapped_column(Integer, default=0)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    # bridged | callback | abandoned | fallback
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    # Where the caller was when the call ended (language, zip, promise, consent, message,
    # waiting_room, ...); end_reason says why when it wasn't the caller (pbx_gone, max_wait).
    end_step: Mapped[str | None] = mapped_column(String(32))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # The fallback group had the caller: did a person there answer?
    fallback_answered: Mapped[bool | None] = mapped_column(Boolean)
    # Which Asterisk node the call came in on (several PBXs behind a SIP proxy).
    pbx_node: Mapped[str | None] = mapped_column(String(64))
    consented_to_message: Mapped[bool] = mapped_column(Boolean, default=False)
    interpreter: Mapped[str | None] = mapped_column(String(64))
    # Identifying: purged by retention, audited on every read.
    caller_number: Mapped[str | None] = mapped_column(String(32))
    transcript: Mapped[str | None] = mapped_column(Text)
    transcript_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    # Text conversations (source "text"): "sms" or "chat"; None for calls.
    channel: Mapped[str | None] = mapped_column(String(8))


class CallEvent(Base):
    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("call_records.id", ondelete="CASCADE"),
                                         index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    # The Redis stream entry it came from: a replayed event is recognised and skipped.
    stream_id: Mapped[str | None] = mapped_column(String(32), unique=True)


class CallbackRequest(Base):
    """A callback request (crisisline/callbacks.py), kept true by the recorder from the call's
    ``cb_*`` fields. Statuses: crisisline.records.callbacks (``open`` while the line works it;
    rows from before migration 0007 say ``waiting`` for open and ``done`` for closed by hand)."""

    __tablename__ = "callback_requests"

    call_id: Mapped[str] = mapped_column(ForeignKey("call_records.id", ondelete="CASCADE"),
                                         primary_key=True)
    # Identifying: written once, when the request is recorded; cleared as soon as the request
    # is over and its call has ended, and by retention in any case.
    number: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(16))
    neighborhood: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(24), default="open", index=True)
    # A supervisor's short reason when they cancelled (closed) it; no caller details.
    outcome: Mapped[str | None] = mapped_column(String(200))
    done_by: Mapped[str | None] = mapped_column(String(64))  # the supervisor who cancelled it
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The number they called from is safe to call back (None: it was withheld).
    safe_here: Mapped[bool | None] = mapped_column(Boolean)
    message_ok: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    message_left: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The last attempt's result (crisisline.callbacks: bridged, no_answer, busy, ...).
    result: Mapped[str | None] = mapped_column(String(32))
    # From the request to a person (the responder, with the caller).
    time_to_human_s: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TextMessage(Base):
    """One message of a finished text conversation (the conversation itself: kept like a
    transcript, purged by retention, erased at once when the texter sends DELETE)."""

    __tablename__ = "text_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("call_records.id", ondelete="CASCADE"),
                                         index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # texter | responder | supervisor | line (the line's automatic texts)
    sender: Mapped[str] = mapped_column(String(16))
    author: Mapped[str | None] = mapped_column(String(64))  # responder id / supervisor name
    body: Mapped[str] = mapped_column(Text)
    # The Redis stream entry it came from: archiving twice writes nothing twice.
    stream_id: Mapped[str] = mapped_column(String(32))
    __table_args__ = (UniqueConstraint("call_id", "stream_id"),)
