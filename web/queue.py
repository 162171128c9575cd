"""Supervisor: the live queue, active calls, responders, callbacks, and stepping in.
Callback requests' own pages and actions are in web/callbacks.py.

The page is rendered whole once; after that /queue/events (server-sent events fed by the
Redis event stream through web.live.EventHub) keeps it current, and static/queue.js
applies each event to the one row it concerns. Actions never talk to Asterisk: they are
validated here and written to the dispatcher's command stream.
"""

from __future__ import annotations

import queue as queue_mod
import re
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from crisisline import clock, destinations
from crisisline.roster.model import Responder, RosterSnapshot
from crisisline.roster.store import RosterStore
from crisisline.users import audit
from web import callbacks as callback_views
from web import state
from web import texts as text_line
from web.auth import current_user, roles
from web.live import JOINABLE_STATES, WAITING_STATES, LiveCall, sse, stream_id_key

bp = Blueprint("queue", __name__, url_prefix="/queue")

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
BACKLOG_LIMIT = 2000
KEEPALIVE_S = 15.0
# Streams end after half an hour; the browser reconnects at once (Last-Event-ID), and the
# reconnection passes the log-in check again, so a logged-out user's stream can't linger.
STREAM_LIFETIME_S = 1800.0
TEXT_MAX = 2000  # a supervisor's message to a texter


def roster() -> RosterSnapshot:
    s = state.settings()
    return RosterStore(state.panel().engine, s.timezone).snapshot()


def responder_state(on_call: bool, live: dict[str, str]) -> str:
    if live.get("on_call_with"):
        return "on a call"
    if live.get("ringing_for"):
        return "ringing"
    return "free" if on_call else "off"


def responder_rows(snap: RosterSnapshot, states: dict[str, dict[str, str]],
                   ) -> list[dict[str, Any]]:
    s = state.settings()
    on = {r.id for r in snap.on_call(clock.now(s.timezone, s.clock))}
    teams = {t.id: t.name for t in snap.teams}
    rows = [{"r": r, "team": teams.get(r.team_id or "", "Citywide backup" if r.backup else ""),
             "state": responder_state(r.id in on, states.get(r.id, {})),
             "on_shift": r.id in on, "live": states.get(r.id, {})} for r in snap.responders]
    # On shift first (who can take calls now), then by team and name.
    return sorted(rows, key=lambda x: (not x["on_shift"], x["team"], x["r"].name))


@bp.get("/")
@roles("supervisor")
def index() -> Any:
    live = state.panel().live
    snap = roster()
    try:
        last_id = live.last_event_id()
        waiting = live.waiting()
        states = live.responder_states(r.id for r in snap.responders)
        active = live.active(states)
        redis_ok = True
    except redis.RedisError:
        last_id, waiting, states, active, redis_ok = "0-0", [], {}, [], False
    names = {r.id: r.name for r in snap.responders}
    return render_template(
        "queue.html", waiting=waiting, active=active, responders=responder_rows(snap, states),
        names=names, last_id=last_id, now=time.time(), redis_ok=redis_ok,
        **callback_views.lists())


@bp.get("/events")
@roles("supervisor")
def events() -> Response:
    panel = state.panel()
    after = request.headers.get("Last-Event-ID") or request.args.get("after") or ""
    if after and not STREAM_ID.match(after):
        abort(400)
    try:
        sub = panel.hub.subscribe()
    except redis.RedisError:
        abort(503)
    live, hub = panel.live, panel.hub

    def stream() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            sent = stream_id_key(after) if after else (0, 0)
            if after:
                # Catch up on what happened between the page (or the last connection)
                # and now; the hub already queues anything newer for this stream.
                backlog, too_many = live.since(after, BACKLOG_LIMIT)
                if too_many:
                    yield sse("resync", {})
                    return
                for event_id, payload in backlog:
                    sent = stream_id_key(event_id)
                    yield sse("call", payload, event_id)
            yield sse("status", {"connected": True})
            deadline = time.monotonic() + STREAM_LIFETIME_S
            while time.monotonic() < deadline:
                if sub.overflowed:
                    yield sse("resync", {})
                    return
                try:
                    event_id, payload = sub.queue.get(timeout=KEEPALIVE_S)
                except queue_mod.Empty:
                    yield ": keepalive\n\n"  # also finds out when the browser has gone
                    continue
                if not event_id:  # the hub's own news: Redis went away or came back
                    up = payload.get("event", {}).get("type") == "redis_up"
                    yield sse("status", {"connected": up})
                    continue
                if stream_id_key(event_id) <= sent:
                    continue  # already sent from the backlog
                sent = stream_id_key(event_id)
                yield sse("call", payload, event_id)
        except redis.RedisError:
            yield sse("status", {"connected": False})
        finally:
            hub.unsubscribe(sub)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---- stepping in -------------------------------------------------------------------------

def _live_call(call_id: str) -> LiveCall:
    try:
        call = state.panel().live.call(call_id)
    except redis.RedisError:
        abort(503)
    if call is None:
        abort(404, description="No live call with that id (it may have ended).")
    return call


@bp.get("/calls/<call_id>")
@roles("supervisor")
def call_page(call_id: str, errors: dict[str, str] | None = None, status: int = 200,
              messages: list[dict[str, Any]] | None = None) -> Any:
    call = _live_call(call_id)
    snap = roster()
    states = state.panel().live.responder_states(r.id for r in snap.responders)
    return render_template("call_live.html", call=call, responders=responder_rows(snap, states),
                           teams=sorted(snap.teams, key=lambda t: t.name),
                           names={r.id: r.name for r in snap.responders},
                           waiting=call.state in WAITING_STATES,
                           joinable=call.state in JOINABLE_STATES, errors=errors or {},
                           form=request.form, now=time.time(), text=call.source == "text",
                           messages=messages, text_max=TEXT_MAX), status


def _refused(call_id: str, errors: dict[str, str]) -> Any:
    return call_page(call_id, errors=errors, status=422)


@bp.post("/calls/<call_id>/ring")
@roles("supervisor")
def ring(call_id: str) -> Any:
    call = _live_call(call_id)
    user = current_user()
    assert user is not None
    if call.state not in WAITING_STATES:
        return _refused(call_id, {"target": "This call is no longer waiting."})
    snap = roster()
    target = request.form.get("target", "")
    if target == "responder":
        rid = request.form.get("responder_id", "")
        responder: Responder | None = snap.responder(rid)
        if responder is None:
            return _refused(call_id, {"responder_id": "Choose a responder from the list."})
        reason = destinations.refusal(responder.phone, state.settings())
        if reason:
            return _refused(call_id, {"responder_id": reason})
        state.panel().live.send_command("ring_responder", user.name, call_id=call_id,
                                        responder_id=rid)
        flash(f"Asked the dispatcher to ring {responder.name} now.")
    elif target == "team":
        team_id = request.form.get("team_id", "")
        team = snap.team(team_id)
        if team is None:
            return _refused(call_id, {"team_id": "Choose a team from the list."})
        state.panel().live.send_command("ring_team", user.name, call_id=call_id, team_id=team_id)
        flash(f"Asked the dispatcher to ring {team.name} now.")
    else:
        abort(400)
    return redirect(url_for("queue.call_page", call_id=call_id))


@bp.post("/calls/<call_id>/conversation")
@roles("supervisor")
def conversation(call_id: str) -> Any:
    """Read a live text conversation: written to the audit log before it is shown."""
    call = _live_call(call_id)
    if call.source != "text":
        abort(404)
    user = current_user()
    assert user is not None
    session = state.db()
    audit.record(session, user.name, audit.VIEW_CONVERSATION, call_id, "live")
    session.commit()  # logged before it is shown: no log, no view
    return call_page(call_id, messages=text_line.live_messages(state.settings(), call_id))


@bp.post("/calls/<call_id>/text")
@roles("supervisor")
def write(call_id: str) -> Any:
    """Step in on a text conversation: write to the texter as yourself (taking it when
    nobody has yet)."""
    call = _live_call(call_id)
    user = current_user()
    assert user is not None
    if call.source != "text":
        abort(404)
    body = request.form.get("body", "").replace("\r\n", "\n").strip()
    if not body:
        return _refused(call_id, {"body": "Write something to send."})
    if len(body) > TEXT_MAX:
        return _refused(call_id, {"body": f"Keep it under {TEXT_MAX} characters; send it in parts."})
    flash(text_line.write_as_supervisor(state.settings(), call_id, user.name, body))
    return redirect(url_for("queue.call_page", call_id=call_id))


@bp.get("/desk-texts")
@roles("supervisor")
def desk_texts() -> Any:
    """Text offers to desk phones (PJSIP/...): the responder at that desk opens theirs here."""
    snap = roster()
    names = {r.id: r.name for r in snap.responders}
    offers = []
    live = state.panel().live
    for token, call_id, rid in text_line.desk_offers(state.settings()):
        call = live.call(call_id)
        if call is not None:
            offers.append((call, rid, f"{state.settings().chat_url}/r/{token}"))
    return render_template("desk_texts.html", offers=offers, names=names, now=time.time())


@bp.post("/calls/<call_id>/join")
@roles("supervisor")
def join(call_id: str) -> Any:
    call = _live_call(call_id)
    user = current_user()
    assert user is not None
    if call.state not in JOINABLE_STATES:
        return _refused(call_id, {"phone": "This call has ended."})
    if call.source == "text":
        return _refused(call_id, {"target": "A text conversation has no room to join: write to "
                                           "the texter instead."})
    phone = request.form.get("phone", "").strip()[:64]
    mode = request.form.get("mode", "")
    errors: dict[str, str] = {}
    if mode not in ("listen", "speak"):
        errors["mode"] = "Choose listen or speak."
    s = state.settings()
    reason = destinations.refusal(phone, s) if phone else "Give the phone to ring you on."
    if reason:
        errors["phone"] = reason
    if errors:
        return _refused(call_id, errors)
    target = phone if destinations.SIP_ENDPOINT.match(phone) else destinations.to_e164(phone, s.region)
    state.panel().live.send_command("join_room", user.name, call_id=call_id, phone=target or phone,
                                    mode=mode)
    flash(f"The dispatcher will ring {target} and put you in the call to {mode}.")
    return redirect(url_for("queue.call_page", call_id=call_id))
