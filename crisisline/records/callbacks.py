"""Callback requests in SQL: the recorder's copy of a request's life (from the call's ``cb_*``
fields in Redis), the statuses the panel and the report read, and forgetting the number.

Statuses: ``open`` while the line works it (requested, pending, calling), ``bridged`` (a person
answered), ``failed`` (every attempt went unanswered; ``result`` says how the last one ended:
no answer, busy, a machine...), ``cancelled`` (a supervisor), ``fallback_answered`` (the caller,
still on the line, reached the fallback desk). Rows from before migration 0007 say ``waiting``
(read as open) or ``done`` (closed by hand, read as cancelled).

The number is written once, when the request is recorded, and cleared as soon as the request
is over and its call has ended (the retention job clears any that slipped through, and every
number after ``retention_days``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crisisline import callbacks as cb
from crisisline.records.schema import CallbackRequest, CallRecord

OPEN, BRIDGED, FAILED = "open", "bridged", "failed"
CANCELLED, FALLBACK_ANSWERED = "cancelled", "fallback_answered"
STATUSES = (OPEN, BRIDGED, FAILED, CANCELLED, FALLBACK_ANSWERED)
LEGACY = {"waiting": OPEN, "done": CANCELLED}
OPEN_STATUSES = (OPEN, "waiting")
REASON_MAX = 200
# A call in one of these states has ended (crisisline.call.State): nothing more is dialled.
CALL_ENDED = frozenset({"ended", "abandoned", "fallback", "callback", "callback_failed",
                        "cancelled"})
OPEN_STATES = frozenset({cb.REQUESTED, cb.PENDING, cb.CALLING})

STATUS_WORDS = {OPEN: "open", BRIDGED: "completed: a person answered",
                FAILED: "failed: nobody answered", CANCELLED: "cancelled by a supervisor",
                FALLBACK_ANSWERED: "the caller reached the fallback desk"}
RESULT_WORDS = {cb.BRIDGED: "answered", cb.NO_ANSWER: "no answer", cb.BUSY: "busy",
                cb.UNREACHABLE: "could not be reached",
                cb.MACHINE_HUNG_UP: "a machine answered (hung up, no message)",
                cb.MESSAGE_LEFT: "a machine answered (the line's message was left)",
                cb.RESPONDER_GAVE_UP: "the responder hung up before the caller answered",
                cb.LOST: "lost (the line lost track of the attempt)"}


def status_of(raw: str) -> str:
    """A row's status in today's words (old rows: waiting -> open, done -> cancelled)."""
    return LEGACY.get(raw, raw)


def status_from(data: dict[str, str]) -> str | None:
    """The SQL status for a call hash's request; None when the hash says nothing usable."""
    state = data.get("cb_state", "")
    if state in OPEN_STATES:
        return OPEN
    if state != cb.DONE:
        return None
    outcome = data.get("cb_outcome", "")
    if outcome == cb.BRIDGED:
        return BRIDGED
    if outcome in (cb.FAILED, cb.MACHINE_HUNG_UP, cb.MESSAGE_LEFT):
        return FAILED
    if outcome in (cb.CANCELLED, cb.FALLBACK_ANSWERED):
        return outcome
    return None


def finished(data: dict[str, str]) -> bool:
    """The request is over and its call has ended: its number has nothing left to do."""
    return data.get("state", "") in CALL_ENDED and data.get("cb_state") == cb.DONE


def _ts(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC) if value else None
    except ValueError:
        return None


def sync(session: Session, record: CallRecord, data: dict[str, str], body: dict[str, str],
         fresh: bool) -> CallbackRequest | None:
    """Make the call's request row say what its hash says. ``fresh``: ``body`` is an event not
    written before (a replayed ``callback_requested`` never starts a request over). The
    number is taken only when the row is made (or a new request replaces a finished one)."""
    requested = _ts(data.get("cb_requested_at"))
    if requested is None:
        return None
    row = session.get(CallbackRequest, record.id)
    if row is None:
        row = CallbackRequest(call_id=record.id, number=data.get("callback_number") or None,
                              language=record.language, requested_at=requested, status=OPEN,
                              attempts=0, message_ok=False, message_left=False)
        session.add(row)
    elif fresh and body.get("type") == "callback_requested" and \
            abs((row.requested_at - requested).total_seconds()) > 0.5:
        # The same call asked again after its first request ended: a new request.
        row.number, row.requested_at = data.get("callback_number") or None, requested
        row.outcome = row.done_by = row.done_at = row.ended_at = row.time_to_human_s = None
    status = status_from(data)
    if status is not None:
        row.status = status
    row.language, row.neighborhood = record.language, record.neighborhood
    row.attempts = int(data.get("cb_attempts") or 0)
    row.safe_here = {"1": True, "0": False}.get(data.get("cb_safe_here", ""))
    row.message_ok = data.get("cb_message") == "1"
    row.message_left = data.get("cb_message_left") == "1"
    row.result = data.get("cb_result") or None
    if data.get("cb_time_to_human_s"):
        row.time_to_human_s = float(data["cb_time_to_human_s"])
    if status not in (None, OPEN):
        row.ended_at = _ts(data.get("cb_done_at")) or row.ended_at or _ts(body.get("at"))
    if status == CANCELLED:
        row.done_by = data.get("cb_cancelled_by") or row.done_by
        row.done_at = row.ended_at
        if data.get("cb_cancel_reason"):
            row.outcome = data["cb_cancel_reason"][:REASON_MAX]
    if finished(data):
        row.number = None
    return row


def forget_finished_numbers(session: Session) -> int:
    """Clear the number of every request that is over on a call whose record is closed (what
    the recorder does as it goes; this catches any it missed). Returns how many."""
    closed = select(CallRecord.id).where(CallRecord.ended_at.is_not(None),
                                         CallRecord.outcome != "in_progress")
    done = session.execute(
        update(CallbackRequest)
        .where(CallbackRequest.number.is_not(None),
               CallbackRequest.status.not_in(OPEN_STATUSES),
               CallbackRequest.call_id.in_(closed))
        .values(number=None)).rowcount
    return int(done or 0)
