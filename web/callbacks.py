"""Supervisor: callback requests. What the line is working (from Redis, web/callback_data.py),
requests the line no longer holds (SQL rows still open: from before the line worked them
itself, or lost with Redis's data), failed requests, and the actions on one request:

- **Start now**: a request waiting for its next try goes back in the queue at its place;
- **Ring a responder**: an on-call responder of the supervisor's choosing is rung for it now
  (the dispatcher's ``ring_responder`` command: only it talks to Asterisk);
- **Cancel**: with a short reason (no caller details): refused while the line is dialling
  the caller; a request whose caller left ends its call.

The number shows only after "Show the caller's number", audited before it is shown. Every
action is written to the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import or_, select, update

from crisisline import clock, destinations
from crisisline.records import callbacks as sql_callbacks
from crisisline.records.schema import CallbackRequest
from crisisline.roster.model import Responder, RosterSnapshot
from crisisline.roster.store import RosterStore
from crisisline.users import audit
from web import callback_data, state
from web.auth import current_user, roles

bp = Blueprint("callbacks", __name__, url_prefix="/queue/callbacks")

LIST_LIMIT = 500
FAILED_DAYS = 7
FAILED_LIMIT = 100
CALLING_REFUSAL = ("The line is dialling the caller right now: a request can't be cancelled "
                   "during an attempt. Try again when this attempt has ended.")


def lists() -> dict[str, Any]:
    """For the live queue page: open requests (Redis), open rows the line no longer holds
    (SQL), and failed requests of the last FAILED_DAYS days (SQL)."""
    client = state.panel().live.redis
    session = state.db()
    try:
        live = callback_data.open_requests(client)
    except redis.RedisError:
        live = []
    rows = list(session.scalars(
        select(CallbackRequest).where(CallbackRequest.status.in_(sql_callbacks.OPEN_STATUSES))
        .order_by(CallbackRequest.requested_at).limit(LIST_LIMIT)))
    try:
        held = callback_data.known(client, [r.call_id for r in rows])
    except redis.RedisError:
        held = {r.call_id for r in rows}  # can't tell: list nothing as lost
    since = datetime.now(UTC) - timedelta(days=FAILED_DAYS)
    failed = list(session.scalars(
        select(CallbackRequest)
        .where(CallbackRequest.status == sql_callbacks.FAILED,
               or_(CallbackRequest.ended_at >= since,
                   CallbackRequest.ended_at.is_(None) & (CallbackRequest.requested_at >= since)))
        .order_by(CallbackRequest.ended_at.desc(), CallbackRequest.requested_at.desc())
        .limit(FAILED_LIMIT)))
    return {"callbacks": live, "unheld": [r for r in rows if r.call_id not in held],
            "failed": failed, "list_limit": LIST_LIMIT, "failed_days": FAILED_DAYS,
            "result_words": sql_callbacks.RESULT_WORDS}


def summary(row: CallbackRequest) -> str:
    """A request's life in one line, for the call history: status, attempts, the last
    result, a message left, time to a person, a supervisor's reason."""
    status = sql_callbacks.status_of(row.status)
    parts = [sql_callbacks.STATUS_WORDS.get(status, status),
             f"{row.attempts} attempt{'' if row.attempts == 1 else 's'}"]
    if row.result:
        parts.append("the last: " + sql_callbacks.RESULT_WORDS.get(row.result, row.result))
    if row.message_left:
        parts.append("the line's message was left")
    if row.time_to_human_s is not None:
        minutes, seconds = divmod(int(row.time_to_human_s), 60)
        parts.append(f"a person {minutes}:{seconds:02d} after the request")
    if row.outcome:
        parts.append(f"reason: {row.outcome}" + (f" ({row.done_by})" if row.done_by else ""))
    return "; ".join(parts)


def _roster() -> RosterSnapshot:
    s = state.settings()
    return RosterStore(state.panel().engine, s.timezone).snapshot()


def on_call_now(snap: RosterSnapshot | None = None) -> list[Responder]:
    """Who is on call at the program's time (crisisline/clock.py: a pinned clock in tests)."""
    s = state.settings()
    snap = snap or _roster()
    return sorted(snap.on_call(clock.now(s.timezone, s.clock)), key=lambda r: r.name)


def _found(call_id: str) -> tuple[callback_data.Request | None, CallbackRequest | None]:
    """The request as the line holds it, and its SQL row; 404 when neither exists."""
    try:
        live = callback_data.one(state.panel().live.redis, call_id)
    except redis.RedisError:
        abort(503)
    row = state.db().get(CallbackRequest, call_id)
    if live is None and row is None:
        abort(404, description="No callback request on that call.")
    return live, row


def page(call_id: str, errors: dict[str, str] | None = None, status: int = 200,
         number: str | None = None) -> Any:
    live, row = _found(call_id)
    snap = _roster()
    on_call = on_call_now(snap)
    try:
        states = state.panel().live.responder_states(r.id for r in on_call)
    except redis.RedisError:
        states = {}
    from web.queue import responder_state

    options = [(r.id, f"{r.name} — {responder_state(True, states.get(r.id, {}))}") for r in on_call]
    row_open = row is not None and row.status in sql_callbacks.OPEN_STATUSES
    return render_template(
        "callback.html", call_id=call_id, live=live, row=row, errors=errors or {},
        number=number, names={r.id: r.name for r in snap.responders}, on_call=options,
        row_open=row_open, open=(live.open if live else row_open), safe_words=callback_data.SAFE_WORDS,
        status_words=sql_callbacks.STATUS_WORDS, status_of=sql_callbacks.status_of,
        result_words=sql_callbacks.RESULT_WORDS, reason_max=sql_callbacks.REASON_MAX,
        form=request.form, now=datetime.now(UTC).timestamp()), status


@bp.get("/<call_id>")
@roles("supervisor")
def show(call_id: str) -> Any:
    return page(call_id)


@bp.post("/<call_id>/number")
@roles("supervisor")
def number(call_id: str) -> Any:
    live, row = _found(call_id)
    user = current_user()
    assert user is not None
    session = state.db()
    audit.record(session, user.name, audit.VIEW_CALLER_NUMBER, call_id, "callback request")
    session.commit()  # logged before it is shown: no log, no view
    held = callback_data.number(state.panel().live.redis, call_id) if live else ""
    return page(call_id, number=held or (row.number if row else None) or "(no number kept)")


@bp.post("/<call_id>/start")
@roles("supervisor")
def start(call_id: str) -> Any:
    live, _ = _found(call_id)
    user = current_user()
    assert user is not None
    if live is None or not live.open:
        return page(call_id, {"start": "This request is over: there is nothing to start."}, 409)
    if live.next_at is None or not callback_data.start_now(state.settings(), call_id):
        return page(call_id, {"start": "It is not waiting for a later try: it is already in the "
                                       "queue at its place, or being called."}, 409)
    session = state.db()
    audit.record(session, user.name, audit.CALLBACK_START_NOW, call_id)
    session.commit()
    flash("Back in the queue at its place: the next free responder is rung for it.")
    return redirect(url_for("callbacks.show", call_id=call_id))


@bp.post("/<call_id>/ring")
@roles("supervisor")
def ring(call_id: str) -> Any:
    live, _ = _found(call_id)
    user = current_user()
    assert user is not None
    if live is None or not live.open:
        return page(call_id, {"ring": "This request is over: there is nobody to call back."}, 409)
    if live.cb_state == "calling":
        return page(call_id, {"ring": "The line is already calling this person back."}, 409)
    if live.call_state not in callback_data.WAITING:
        return page(call_id, {"ring": "The caller is with the fallback desk right now."}, 409)
    rid = request.form.get("responder_id", "")
    responder = next((r for r in on_call_now() if r.id == rid), None)
    if responder is None:
        return page(call_id, {"responder_id": "Choose a responder who is on call now."}, 422)
    reason = destinations.refusal(responder.phone, state.settings())
    if reason:
        return page(call_id, {"responder_id": reason}, 422)
    state.panel().live.send_command("ring_responder", user.name, call_id=call_id, responder_id=rid)
    session = state.db()
    audit.record(session, user.name, audit.CALLBACK_RING, call_id, rid)
    session.commit()
    flash(f"Asked the dispatcher to ring {responder.name} now: if they take it, the line "
          "calls the person back with them.")
    return redirect(url_for("callbacks.show", call_id=call_id))


@bp.post("/<call_id>/cancel")
@roles("supervisor")
def cancel(call_id: str) -> Any:
    live, _ = _found(call_id)
    user = current_user()
    assert user is not None
    reason = " ".join(request.form.get("reason", "").split())
    if not reason:
        return page(call_id, {"reason": "Say why in a few words (reached another way, asked "
                                        "not to be called...). No caller details."}, 422)
    if len(reason) > sql_callbacks.REASON_MAX:
        return page(call_id, {"reason": f"Keep it under {sql_callbacks.REASON_MAX} characters; "
                                        "no caller details here."}, 422)
    session = state.db()
    if live is not None:
        if live.cb_state == "calling":
            return page(call_id, {"cancel": CALLING_REFUSAL}, 409)
        if not live.open or not callback_data.cancel(state.settings(), call_id, user.name, reason):
            again = callback_data.one(state.panel().live.redis, call_id)
            if again is not None and again.cb_state == "calling":
                return page(call_id, {"cancel": CALLING_REFUSAL}, 409)
            return page(call_id, {"cancel": "This request is already over."}, 409)
        # The recorder copies the reason from the call too; whichever comes first, it is kept.
        session.execute(update(CallbackRequest).where(CallbackRequest.call_id == call_id)
                        .values(outcome=reason, done_by=user.name))
    else:
        # A row the line no longer holds: closed here. Two supervisors can't both win.
        now = datetime.now(UTC)
        changed = session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.call_id == call_id,
                   CallbackRequest.status.in_(sql_callbacks.OPEN_STATUSES))
            .values(status=sql_callbacks.CANCELLED, outcome=reason, done_by=user.name,
                    done_at=now, ended_at=now)).rowcount
        if not changed:
            session.rollback()
            return page(call_id, {"cancel": "This request is already over."}, 409)
    audit.record(session, user.name, audit.CALLBACK_CANCEL, call_id, reason)
    session.commit()
    flash("Callback request cancelled.")
    return redirect(url_for("queue.index") + "#callbacks")
