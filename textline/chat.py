"""The chat page, for a person in crisis on their phone's browser.

Nothing is stored in the browser: no account, no cookie, no localStorage. The page holds
the conversation's key in memory only (a reload or a closed tab ends the page's hold on it);
every request is a fetch from the one page, so the browser's history has that one page.
Every POST carries a form token this app signed (CSRF), and a cross-site request is refused.

Limits: ``text_max_chat_chars`` per message; per conversation ``text_rate_per_conversation``
messages a minute; per address ``text_rate_per_address`` requests a minute (start, send,
call, delete). What the texter wrote is only ever shown as text (the page's script sets
textContent; never HTML).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request

from crisisline import destinations
from crisisline.config import Settings
from crisisline.stores.calls import call_key
from crisisline.stores.texts import chat_key, rate_key
from crisisline.textflow import CHAT_LABELS
from textline.runtime import Runtime

bp = Blueprint("chat", __name__)
TOKEN_AGE_S = 24 * 3600
POLL_S = 25.0
RTL = frozenset({"ar", "fa", "he", "ur"})
STATES = {"ivr": "waiting", "waiting": "waiting", "dispatching": "waiting", "bridged": "with_someone"}


def rt() -> Runtime:
    return current_app.extensions["textline"]


def settings() -> Settings:
    return current_app.extensions["textline_settings"]


# ---- CSRF: a token this app signed, no cookie ---------------------------------------------

def _mac(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_token(secret: str, now: float | None = None) -> str:
    payload = f"{int(now or time.time())}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_mac(secret, 'chat:' + payload)}"


def token_ok(secret: str, token: str, now: float | None = None) -> bool:
    issued, _, rest = (token or "").partition(".")
    nonce, _, mac = rest.partition(".")
    if not issued.isdigit() or not nonce or not mac:
        return False
    if not hmac.compare_digest(_mac(secret, f"chat:{issued}.{nonce}"), mac):
        return False
    return 0 <= (now or time.time()) - int(issued) <= TOKEN_AGE_S


def same_site() -> None:
    """Refuse a request another site's page made (the token is the main check)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        abort(403)
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        allowed = {_origin(request.host_url), _origin(settings().chat_url)}
        if _origin(origin) not in allowed:
            abort(403)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@bp.before_request
def guard() -> None:
    if request.method != "POST" or request.path.startswith("/chat/leave"):
        return  # leaving must always work (its token is checked when there is a conversation)
    same_site()
    if not token_ok(rt().secret, request.form.get("csrf_token", "")):
        abort(400)


# ---- the page ---------------------------------------------------------------------------------

def page_texts() -> dict[str, Any]:
    """Per language: the page's words, all from one language (the texter's when the catalog
    has all of them, else the default language's: never a mix)."""
    r, s = rt(), settings()
    conv = r.conversations
    out: dict[str, Any] = {}
    for key, lang in conv.ctx.menu():
        written = conv.language_of({"language": lang})
        texts = {name: conv.text(name, written, days=str(s.retention_days))
                 for name in (*CHAT_LABELS, "text_promise", "text_deleted", "text_ended",
                              "text_too_long", "text_slow_down", "text_unattended")}
        info = r.catalog.languages[lang]
        out[lang] = {"key": key, "name": info.native_name, "written": written,
                     "dir": "rtl" if written in RTL else "ltr", "texts": texts}
    return out


@bp.get("/")
def page() -> Any:
    s = settings()
    languages = page_texts()
    default = languages.get(s.default_language) or next(iter(languages.values()))
    return render_template("chat.html", languages=languages, default=default,
                           token=new_token(rt().secret), leave_url=s.chat_leave_url or "/today",
                           max_chars=s.text_max_chat_chars, sms_number=s.sms_number,
                           line_number=s.line_number, rtl=RTL)


@bp.get("/today")
def neutral() -> Any:
    """Where "leave quickly" goes by default: a page about nothing."""
    return render_template("today.html", day=time.strftime("%A"))


# ---- the page's requests ---------------------------------------------------------------------------

def _address() -> str:
    return request.remote_addr or "unknown"


def _limited_address() -> bool:
    return rt().run(rt().store.limited("chat", _address(), settings().text_rate_per_address))


def _conversation() -> str:
    call_id = rt().run(rt().store.by_key(request.form.get("key", "")))
    if not call_id:
        abort(404)
    return call_id


def _refuse(prompt: str, language: str | None, status: int) -> tuple[Response, int]:
    conv = rt().conversations
    return jsonify(error=conv.text(prompt, conv.language_of({"language": language or ""}))), status


def _body() -> str:
    body = request.form.get("body", "").replace("\r\n", "\n").strip()
    if not body:
        abort(400)
    return body


@bp.post("/chat/start")
def start() -> Any:
    r, s = rt(), settings()
    language = request.form.get("language", "")
    if _limited_address():
        return _refuse("text_slow_down", language, 429)
    body = _body()
    if len(body) > s.text_max_chat_chars:
        return _refuse("text_too_long", language, 413)
    key = secrets.token_urlsafe(32)
    outcome = r.run(r.conversations.chat_start(key, body, language or None,
                                               request.form.get("zip", "")[:10] or None))
    return jsonify(key=key, state="waiting", language=r.conversations.language_of(
        r.run(r.store.hash(outcome.call_id or "")))), 201


@bp.post("/chat/send")
def send() -> Any:
    r = rt()
    status, prompt, language = r.run(_send(r, settings(), request.form.get("key", ""), _body(),
                                           _address()))
    if status == 404:
        abort(404)
    if prompt:
        return _refuse(prompt, language, status)
    return jsonify(state="ended" if status == 409 else "sent"), status


async def _send(r: Runtime, s: Settings, key: str, body: str,
                address: str) -> tuple[int, str, str]:
    """(status, prompt to refuse with, language): the whole of a send in one hand-off to
    the loop (one lookup, one pipeline for the conversation and both rate counters)."""
    store = r.store
    call_id = await store.by_key(key)
    if not call_id:
        return 404, "", ""
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(call_key(call_id))
        for kind, who in (("chat", address), ("conversation", call_id)):
            pipe.incr(rate_key(kind, who))
            pipe.expire(rate_key(kind, who), 60, nx=True)
        pipe.expire(chat_key(key), s.text_idle_end_s)
        raw, by_address, _, by_conversation, _, _ = await pipe.execute()
    data = {k.decode(): v.decode() for k, v in raw.items()}
    language = data.get("language", "")
    if by_address > s.text_rate_per_address or by_conversation > s.text_rate_per_conversation:
        return 429, "text_slow_down", language
    if len(body) > s.text_max_chat_chars:
        return 413, "text_too_long", language
    outcome = await r.conversations.chat_message(call_id, body, data)
    return (409 if outcome.status == "ended" else 202), "", language


@bp.post("/chat/poll")
def poll() -> Any:
    """New messages after ``after``: at once if there are any, else when one comes (or
    after POLL_S, with none)."""
    r = rt()
    call_id = r.run(r.store.by_key(request.form.get("key", "")))
    if not call_id:
        return jsonify(messages=[], state="ended", after=request.form.get("after", ""))
    after = request.form.get("after", "")[:40]
    if after and not _stream_id(after):
        abort(400)
    messages, state, _ = wait_for_messages(r, call_id, after, _wait())
    return jsonify(messages=[{"id": i, "sender": m.get("sender"), "body": m.get("body", "")}
                             for i, m in messages],
                   state=state, after=messages[-1][0] if messages else after)


def _wait() -> float:
    try:
        return min(POLL_S, max(0.0, float(request.form.get("wait", POLL_S) or POLL_S)))
    except ValueError:
        abort(400)


def wait_for_messages(r: Runtime, call_id: str, after: str, wait: float,
                      reader: str | None = None) -> tuple[list, str, dict[str, str]]:
    """A long poll: the messages after ``after`` at once if there are any, else as soon as
    one comes (the hub wakes this thread), or none after ``wait`` seconds. ``reader``: only
    the responder who has the conversation reads its messages."""
    deadline = time.monotonic() + wait
    wake = r.hub.register(call_id)
    try:
        while True:
            wake.clear()
            messages, data = r.run(r.store.read(call_id, after))
            if reader is not None and data.get("accepted_by") != reader:
                messages = []
            state = STATES.get(data.get("state", ""), "ended")
            if messages or state == "ended" or time.monotonic() >= deadline:
                return messages, state, data
            wake.wait(max(0.0, deadline - time.monotonic()))
    finally:
        r.hub.unregister(call_id, wake)


def _stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit()


@bp.post("/chat/call")
def call_me() -> Any:
    """The texter asks for a phone call: a responder calls them from the line's number."""
    r, s = rt(), settings()
    call_id = _conversation()
    if _limited_address():
        return jsonify(error="slow down"), 429
    number = request.form.get("phone", "").strip()[:32]
    reason = destinations.refusal(number, s) if number else "no number"
    e164 = destinations.to_e164(number, s.region) if not reason else None
    if not e164 or destinations.SIP_ENDPOINT.match(number):
        return jsonify(error=reason or "not a phone number"), 422
    ok = r.run(r.store.calls.update(call_id, callback_number=e164))
    if not ok:
        return jsonify(state="ended"), 409
    r.run(r.store.calls.event(call_id, "text_call_requested"))
    r.run(r.store.redis.publish("pr:text:notify", call_id))  # the responder's page shows it
    return jsonify(state="asked"), 202


@bp.post("/chat/delete")
def delete() -> Any:
    r = rt()
    call_id = _conversation()
    r.run(r.conversations.erase(call_id), timeout=60)
    return jsonify(state="erased")


@bp.post("/chat/leave")
def leave() -> Any:
    """"Leave quickly": ends the conversation on our side, and (without the page's script)
    sends the browser to the neutral page."""
    r = rt()
    key = request.form.get("key", "")
    if key and token_ok(r.secret, request.form.get("csrf_token", "")):
        call_id = r.run(r.store.by_key(key))
        if call_id:
            r.run(r.conversations.end(call_id, "texter_left", tell=False))
    if request.headers.get("X-Requested-With") == "fetch":
        return "", 204
    return redirect(settings().chat_leave_url or "/today", 303)

