"""A responder takes a text from their own phone, with nothing to install.

The offer reaches them by SMS with no content ("Someone is waiting by text, Spanish,
Dorchester. Open: <link>"), or, for a desk phone, on the panel. The link is theirs alone:

- ``GET /r/<token>`` only shows what it is (a link preview or a prefetch uses nothing);
- ``POST /r/<token>`` ("Open") uses it, once: their browser gets a session for that
  conversation alone (an HttpOnly, SameSite=Strict cookie on /r), and the offer counts as
  being read (a wave's end doesn't close it; the link's lifetime does);
- ``/r/c`` shows the offer (language, neighborhood, how long they have waited), then
  "Take it" (OfferStore.accept: the first one wins; the others' links then say it was
  taken) or "Pass"; once taken, the conversation itself: messages both ways, "Call them"
  (the line rings the responder, then the texter from the line's own number), "End".

Nothing the texter wrote ever goes to a responder's SMS inbox: only to this page.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
)

from crisisline.config import Settings
from crisisline.roster.store import RosterStore
from crisisline.stores.offers import COMMANDS
from crisisline.textflow import SMS, sms_segments
from textline.chat import _stream_id, wait_for_messages
from textline.runtime import Runtime

bp = Blueprint("responder", __name__, url_prefix="/r")
COOKIE = "pr_responder"
POLL_S = 25.0
LIVE = ("ivr", "waiting", "dispatching", "bridged")


def rt() -> Runtime:
    return current_app.extensions["textline"]


def settings() -> Settings:
    return current_app.extensions["textline_settings"]


def _note(title: str, text: str, status: int = 200, link: bool = False) -> Any:
    return render_template("responder_note.html", title=title, text=text, link=link), status


def _facts(data: dict[str, str]) -> dict[str, Any]:
    r = rt()
    lang = data.get("language", "")
    info = r.catalog.languages.get(lang)
    created = float(data.get("created_at") or time.time())
    return {"language": info.name if info else lang, "neighborhood": data.get("neighborhood") or "",
            "channel": "SMS" if data.get("x_channel") == SMS else "the chat page",
            "waited_min": max(0, int((time.time() - created) // 60)),
            "created": created}


# ---- the link ------------------------------------------------------------------------------

@bp.get("/<token>")
def link(token: str) -> Any:
    r = rt()
    info = r.run(r.store.link(token))
    if not info:
        return _note("This link has expired", "It is no longer open. Thank you.", 410)
    data = r.run(r.store.hash(info["call_id"]))
    if data.get("state") not in LIVE:
        return _note("This conversation has ended", "Nothing more to do. Thank you.")
    if data.get("accepted_by") and data["accepted_by"] != info["rid"]:
        return _note("Someone else took it", "Another responder is with this person. Thank you.")
    if info.get("status") == "used":
        return _note("This link was already opened", "It works once. If it was you, carry on "
                     "in the browser where you opened it.", 410, link=True)
    if info.get("status") == "closed":
        return _note("This offer has ended", "It was offered to others meanwhile. Thank you.")
    return render_template("responder_link.html", token=token, facts=_facts(data))


@bp.post("/<token>")
def open_link(token: str) -> Any:
    r, s = rt(), settings()
    used = r.run(r.store.use_link(token))
    if used is None:
        return link(token)
    call_id, rid = used
    sid = r.run(r.store.new_session(call_id, rid, s.text_link_lifetime_s))
    r.run(r.store.offers.listening(call_id, rid))
    r.run(r.store.calls.event(call_id, "text_offer_opened", responder=rid))
    response = make_response(redirect("/r/c", 303))
    response.set_cookie(COOKIE, sid, path="/r", httponly=True, samesite="Strict",
                        secure=s.chat_url.startswith("https://"))
    return response


# ---- the responder's page for the conversation --------------------------------------------------

def _session() -> dict[str, str]:
    r = rt()
    sid = request.cookies.get(COOKIE, "")
    found = r.run(r.store.session(sid)) if sid else {}
    if not found:
        abort(403)
    found["sid"] = sid
    return found


def _csrf(session: dict[str, str]) -> None:
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    if not sent or not hmac.compare_digest(sent, session["csrf"]):
        abort(400)


def _speaks(rid: str, language: str) -> bool | None:
    r = rt()
    try:
        responder = RosterStore(r.engine, settings().timezone).snapshot().responder(rid)
    except Exception:
        return None
    return None if responder is None else language in responder.languages


@bp.get("/c")
def page() -> Any:
    r = rt()
    session = _session()
    call_id, rid = session["call_id"], session["rid"]
    data = r.run(r.store.hash(call_id))
    winner = data.get("accepted_by", "")
    if data.get("state") not in LIVE:
        return _note("This conversation has ended", "Thank you.")
    if winner and winner != rid:
        return _note("Someone else took it", "Another responder is with this person. Thank you.")
    facts = _facts(data)
    mine = winner == rid
    return render_template("responder.html", facts=facts, mine=mine, csrf=session["csrf"],
                           speaks=_speaks(rid, data.get("language", "")),
                           sms=data.get("x_channel") == SMS,
                           call_asked=bool(data.get("callback_number")),
                           can_call=bool(data.get("callback_number") or data.get("caller_number")),
                           max_chars=settings().text_max_chat_chars)


@bp.post("/c/take")
def take() -> Any:
    r, s = rt(), settings()
    session = _session()
    _csrf(session)
    call_id, rid = session["call_id"], session["rid"]
    if r.run(r.store.offers.accept(call_id, rid)):
        r.run(r.conversations.connected(call_id, rid))
        r.run(r.store.extend_session(session["sid"], s.text_idle_end_s))
        r.run(r.store.close_link(call_id, rid))
    return redirect("/r/c", 303)


@bp.post("/c/pass")
def pass_() -> Any:
    r = rt()
    session = _session()
    _csrf(session)
    call_id, rid = session["call_id"], session["rid"]
    r.run(r.store.offers.passed(call_id, rid, "declined"))
    r.run(r.store.close_link(call_id, rid))
    r.run(r.store.end_session(session["sid"]))
    response = make_response(_note("You passed", "Someone else will be offered it. Thank you."))
    response.delete_cookie(COOKIE, path="/r")
    return response


def _mine(session: dict[str, str]) -> dict[str, str]:
    data = rt().run(rt().store.hash(session["call_id"]))
    if data.get("accepted_by") != session["rid"]:
        abort(403)
    return data


@bp.post("/c/send")
def send() -> Any:
    r = rt()
    body = request.form.get("body", "").replace("\r\n", "\n").strip()
    if not body:
        abort(400)
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    status = r.run(_send(r, settings(), request.cookies.get(COOKIE, ""), sent, body))
    if status in (400, 403):
        abort(status)
    if status == 413:
        return jsonify(error="Too long for one message: send it in parts."), 413
    return jsonify(state="ended" if status == 409 else "sent"), status


async def _send(r: Runtime, s: Settings, sid: str, sent: str, body: str) -> int:
    """A responder's message, in one hand-off to the loop: their session, the form token,
    that the conversation is theirs, the size, then to the texter."""
    session = await r.store.session(sid) if sid and len(sid) <= 64 else {}
    if not session:
        return 403
    if not sent or not hmac.compare_digest(sent, session["csrf"]):
        return 400
    data = await r.store.hash(session["call_id"])
    if data.get("accepted_by") != session["rid"]:
        return 403
    if len(body) > s.text_max_chat_chars or (
            data.get("x_channel") == SMS and sms_segments(body) > s.text_max_sms_segments):
        return 413
    if not await r.conversations.from_staff(session["call_id"], "responder", session["rid"], body,
                                            data=data):
        return 409
    await r.store.extend_session(sid, s.text_idle_end_s)  # a long conversation keeps its page
    return 202


@bp.post("/c/poll")
def poll() -> Any:
    r = rt()
    session = _session()
    _csrf(session)
    call_id, rid = session["call_id"], session["rid"]
    after = request.form.get("after", "")[:40]
    if after and not _stream_id(after):
        abort(400)
    try:
        wait = min(POLL_S, max(0.0, float(request.form.get("wait", POLL_S) or POLL_S)))
    except ValueError:
        abort(400)
    messages, state, data = wait_for_messages(r, call_id, after, wait, reader=rid)
    return jsonify(messages=[{"id": i, "sender": m.get("sender"), "author": m.get("author", ""),
                              "body": m.get("body", "")} for i, m in messages],
                   state=state, call_asked=bool(data.get("callback_number")),
                   after=messages[-1][0] if messages else after)


@bp.post("/c/call")
def call() -> Any:
    """The texter asked for a call: the line rings this responder, then the texter, from the
    line's own number (the dispatcher does it over AMI)."""
    r = rt()
    session = _session()
    _csrf(session)
    data = _mine(session)
    if not (data.get("callback_number") or data.get("caller_number")):
        return _note("No number to call", "The texter has not given a number. Ask them to press "
                     "“Ask for a phone call” on their page.", 422, link=True)
    r.run(_command(r, session["call_id"], session["rid"]))
    # The texter is told when their phone is about to ring (the dispatcher), not before.
    return redirect("/r/c", 303)


async def _command(r: Runtime, call_id: str, rid: str) -> None:
    await r.redis.xadd(COMMANDS, {"type": "text_call", "call_id": call_id, "responder_id": rid,
                                  "by": rid, "at": f"{time.time():.3f}"}, maxlen=10000,
                       approximate=True)
    await r.store.calls.event(call_id, "text_call_asked", responder=rid)


@bp.post("/c/end")
def end() -> Any:
    r = rt()
    session = _session()
    _csrf(session)
    _mine(session)
    r.run(r.conversations.end(session["call_id"], "responder_ended"))
    r.run(r.store.end_session(session["sid"]))
    response: Response = make_response(_note("The conversation has ended",
                                             "The texter was told. Take a moment. Thank you."))
    response.delete_cookie(COOKIE, path="/r")
    return response
