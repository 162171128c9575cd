"""``peoples-response simulate text``: one scripted text conversation, one JSON object.

With ``up`` running (its chat app, dispatcher and SMS provider stand-in), the texter's
messages (``--messages``, separated by ``|``) are sent one after another as a person would:

- ``--channel sms``: from a phone, through the stand-in, which signs the provider's webhook
  to the chat app; each message goes once the line has answered the previous one (the
  webhook answers after the line's replies went out). A first message that is a menu number
  ("2") chooses the language, as a poster may tell people to;
- ``--channel chat``: through the chat page's own requests; a first message that is a menu
  number is the language button pressed, the next one starts the conversation.

Responders' phones are the stand-in's (``--responders`` as for calls: ``answer:SECONDS``,
``decline``, ``never``, ``voicemail``, ``hangup-in-whisper``): an offer's link is opened,
taken or passed as scripted. Desk phones (``PJSIP/...``) take texts from the panel, which no
script plays: here they never answer. Once someone has it, ``--talk`` seconds later the
conversation ends (the responder ends it; on the chat page the texter leaves).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import redis

from crisisline import db, destinations
from crisisline.config import Settings
from crisisline.roster.store import RosterStore
from crisisline.stores import sync_redis
from crisisline.stores.calls import EVENTS, call_key
from crisisline.stores.texts import chat_key, from_key
from peoples_response.simulate_report import rings
from peoples_response.up import read_runtime

POLL_S = 0.1


def _post(url: str, fields: dict[str, str] | list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"X-Requested-With": "fetch"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read().decode()
            return response.status, json.loads(body) if body.startswith("{") else {}
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        return exc.code, json.loads(body) if body.startswith("{") else {}


def _phones(settings: Settings, spec: str, talk: float) -> list[tuple[str, str]]:
    """The stand-in's phone table from --responders (ids are looked up in the roster)."""
    fields = [("Talk", f"{talk:g}")]
    if not spec:
        return fields
    if "=" not in spec:
        return [*fields, ("Default", spec.strip())]
    snap = RosterStore(db.engine_for(settings), settings.timezone).snapshot()
    fields.append(("Default", "answer:1"))
    for pair in spec.split(","):
        rid, _, behaviour = pair.partition("=")
        responder = snap.responder(rid.strip())
        if responder is None:
            raise SystemExit(f"simulate text: no responder {rid.strip()!r} in the roster")
        number = destinations.to_e164(responder.phone, settings.region) or responder.phone
        fields.append(("Phone", f"{number}={behaviour.strip()}"))
    return fields


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_S)
    return bool(predicate())


def _events_for(client: redis.Redis, call_id: str) -> list[dict[str, str]]:
    out = []
    for _, body in client.xrange(EVENTS):
        fields = {k.decode(): v.decode() for k, v in body.items()}
        if fields.get("call_id") == call_id:
            out.append(fields)
    return out


def _hash(client: redis.Redis, call_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(call_key(call_id)).items()}


def _by_sms(standin: str, sender: str, messages: list[str], client: redis.Redis) -> str | None:
    call_id = None
    for body in messages:
        _, reply = _post(standin + "/standin/texts", {"From": sender, "Body": body})
        if reply.get("status") != 200:
            raise SystemExit(f"simulate text: the chat app answered the provider's webhook with "
                             f"{reply.get('status')}")
        found = client.get(from_key(sender))
        call_id = found.decode() if found else call_id
    return call_id


def _by_chat(chat: str, messages: list[str],
             client: redis.Redis) -> tuple[str | None, dict[str, str]]:
    with urllib.request.urlopen(chat + "/", timeout=30) as response:
        page = response.read().decode()
    token = re.search(r'data-token="([^"]+)"', page)
    langs = re.search(r"data-languages='([^']*)'", page)
    if not token or not langs:
        raise SystemExit(f"simulate text: {chat}/ is not the chat page")
    languages = json.loads(html.unescape(langs.group(1)))
    by_key = {info["key"]: code for code, info in languages.items()}
    language = ""
    if messages and messages[0].strip() in by_key:
        language = by_key[messages[0].strip()]
        messages = messages[1:]
    key = ""
    for body in messages:
        if not key:
            status, reply = _post(chat + "/chat/start", {"csrf_token": token.group(1),
                                                         "language": language, "body": body})
            key = reply.get("key", "")
        else:
            status, reply = _post(chat + "/chat/send", {"csrf_token": token.group(1), "key": key,
                                                        "body": body})
        if status >= 400:
            raise SystemExit(f"simulate text: the chat page refused a message ({status}: "
                             f"{reply.get('error', '')})")
    found = client.get(chat_key(key)) if key else None
    return (found.decode() if found else None), {"key": key, "csrf_token": token.group(1)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    runtime = read_runtime(settings)
    redis_url = (settings.redis_sentinels and settings.effective_redis_url) \
        or settings.redis_url or runtime.get("redis_url") or settings.effective_redis_url
    client = sync_redis(redis_url)
    try:
        client.ping()
    except redis.ConnectionError:
        print(f"simulate text: no Redis at {redis_url}; is `peoples-response up` running?",
              file=sys.stderr)
        return 2
    chat = (runtime.get("chat") or settings.chat_url).rstrip("/")
    standin = (runtime.get("sms_standin") or "").rstrip("/")
    messages = [m.strip() for m in args.messages.split("|") if m.strip()]
    if not messages:
        print('simulate text: give the texter\'s words, e.g. --messages "2|hola"', file=sys.stderr)
        return 2
    if not standin and (args.channel == "sms" or args.responders):
        print("simulate text: needs the SMS provider stand-in that `up` runs (no PR_SMS_API_URL)",
              file=sys.stderr)
        return 2
    try:
        if standin:
            status, reply = _post(standin + "/standin/phones",
                                  _phones(settings, args.responders, args.talk))
            if status != 200:
                raise SystemExit(f"simulate text: --responders: {reply.get('error')}")
        page: dict[str, str] = {}
        sender = args.sender or f"+1781555{secrets.choice(range(100, 200)):04d}"
        if args.channel == "sms":
            call_id = _by_sms(standin, sender, messages, client)
        else:
            call_id, page = _by_chat(chat, messages, client)
    except (OSError, urllib.error.URLError) as exc:
        print(f"simulate text: lost the text line ({exc}); is `peoples-response up` running?",
              file=sys.stderr)
        return 1
    if call_id is None:
        print("simulate text: no conversation was started", file=sys.stderr)
        return 1
    wait = args.wait if args.wait is not None else settings.max_wait_s
    _wait(lambda: _hash(client, call_id).get("state") not in ("ivr", "waiting", "dispatching"),
          wait)
    if _hash(client, call_id).get("state") == "bridged":
        if args.channel == "chat":
            time.sleep(args.talk)
            _post(chat + "/chat/leave", page)  # the texter leaves
        _wait(lambda: _hash(client, call_id).get("state") not in ("bridged",), args.talk + 30)
    print(json.dumps(describe(client, call_id, args.channel)))
    return 0


def describe(client: redis.Redis, call_id: str, channel: str) -> dict[str, Any]:
    """The JSON a user sees; documented in README."""
    data = _hash(client, call_id)
    events = _events_for(client, call_id)
    state = data.get("state", "")
    if data.get("accepted_by"):
        outcome = "bridged"
    elif state in ("waiting", "dispatching", "ivr"):
        outcome = "waiting"
    else:
        outcome = "abandoned"
    tth = data.get("time_to_human_s")
    return {
        "conversation_id": call_id,
        "channel": data.get("x_channel") or channel,
        "language": data.get("language") or None,
        "neighborhood": data.get("neighborhood") or None,
        "rung": rings(events, float(data.get("created_at") or 0)),
        "answered_by": data.get("accepted_by") or None,
        "time_to_human_s": float(tth) if tth else None,
        "outcome": outcome,
    }
