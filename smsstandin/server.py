"""The SMS provider stand-in: its REST API, its signed webhooks, and scripted phones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.cookiejar
import logging
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

log = logging.getLogger(__name__)
LINK = re.compile(r"(https?://\S+/r/[A-Za-z0-9_\-]+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
GREETING = "Hello, I'm here with you. What is happening?"
BEHAVIOURS = ("answer", "decline", "never", "voicemail", "hangup-in-whisper")


def sign(url: str, params: dict[str, list[str]], token: str) -> str:
    """X-Twilio-Signature as the provider computes it: the URL, then each parameter's name
    and value(s) in sorted order, HMAC-SHA1 with the auth token, base64."""
    payload = url + "".join(name + value for name in sorted(params)
                            for value in sorted(set(params[name])))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def segments(body: str) -> int:
    ascii_only = all(ord(c) < 128 for c in body)
    per, single = (153, 160) if ascii_only else (67, 70)
    return 1 if len(body) <= single else -(-len(body) // per)


@dataclass
class Phone:
    kind: str = "answer"
    seconds: float = 2.0

    @classmethod
    def parse(cls, text: str) -> Phone:
        kind, _, secs = text.strip().lower().partition(":")
        if kind not in BEHAVIOURS:
            raise ValueError(f"unknown phone behaviour {text!r} (one of {', '.join(BEHAVIOURS)})")
        try:
            seconds = float(secs) if secs else 2.0
        except ValueError:
            raise ValueError(f"bad seconds in {text!r}") from None
        return cls(kind, seconds)


@dataclass
class Sent:
    sid: str
    to: str
    sender: str
    body: str
    at: float


@dataclass
class Responder:
    """What a scripted responder phone did with an offer."""

    number: str
    link: str
    behaviour: str
    steps: list[str] = field(default_factory=list)


class SmsStandin:
    def __init__(self, account: str, token: str, webhook_url: str, host: str = "127.0.0.1",
                 port: int = 0, time_scale: float = 1.0, line_number: str = "") -> None:
        self.account = account
        self.token = token
        self.webhook_url = webhook_url
        self.time_scale = time_scale
        self.line_number = line_number
        self.outbox: list[Sent] = []
        self.responders: list[Responder] = []
        self.default = Phone("answer", 2.0)
        self.phones: dict[str, Phone] = {}
        self.talk_s: float | None = None
        self.cond = threading.Condition()
        self.app = self._app()
        self.server = make_server(host, port, self.app, threaded=True)
        self.port = self.server.server_port
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SmsStandin:
        self._thread = threading.Thread(target=self.server.serve_forever, name="sms-standin",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- the provider's REST API ------------------------------------------------------------
    def _app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/2010-04-01/Accounts/<account>/Messages.json")
        def create_message(account: str) -> Any:
            auth = request.authorization
            if account != self.account or auth is None or auth.username != self.account \
                    or not hmac.compare_digest(auth.password or "", self.token):
                return jsonify(code=20003, message="Authenticate", more_info="", status=401), 401
            to, sender, body = (request.form.get(k, "") for k in ("To", "From", "Body"))
            if not to:
                return jsonify(code=21604, message="A 'To' phone number is required.", status=400), 400
            if not body:
                return jsonify(code=21602, message="Message body is required.", status=400), 400
            sent = Sent(_sid(), to, sender, body, time.time())
            with self.cond:
                self.outbox.append(sent)
                self.cond.notify_all()
            found = LINK.search(body)
            if found:
                self._answer_offer(to, found.group(1))
            now = formatdate(usegmt=True)
            return jsonify(sid=sent.sid, account_sid=self.account, to=to, body=body,
                           status="queued", **{"from": sender}, num_segments=str(segments(body)),
                           direction="outbound-api",
                           date_created=now, date_updated=now, api_version="2010-04-01",
                           uri=f"/2010-04-01/Accounts/{self.account}/Messages/{sent.sid}.json"), 201

        @app.post("/standin/texts")
        def text_from_phone() -> Any:
            status, sid = self.text(request.form.get("From", ""), request.form.get("Body", ""),
                                    to=request.form.get("To") or None,
                                    sid=request.form.get("MessageSid") or None)
            return jsonify(status=status, sid=sid)

        @app.get("/standin/messages")
        def messages() -> Any:
            to = request.args.get("to", "")
            after = int(request.args.get("after", "0") or 0)
            wait = min(30.0, float(request.args.get("wait", "0") or 0))
            found = self.wait_for(to, after + 1, wait) if wait else self.messages_to(to)
            return jsonify(messages=[{"sid": m.sid, "to": m.to, "from": m.sender, "body": m.body,
                                      "at": m.at} for m in found[after:]], count=len(found))

        @app.post("/standin/phones")
        def phones() -> Any:
            try:
                self.set_phones({k: v for k, _, v in (p.partition("=") for p in
                                                      request.form.getlist("Phone"))},
                                default=request.form.get("Default") or None,
                                talk_s=float(request.form["Talk"]) if request.form.get("Talk") else None)
            except ValueError as exc:
                return jsonify(error=str(exc)), 400
            return jsonify(ok=True)

        return app

    # ---- people's phones ------------------------------------------------------------------------
    def text(self, sender: str, body: str, to: str | None = None, sid: str | None = None,
             signature: str | None = None, url: str | None = None) -> tuple[int, str]:
        """A texter's phone texts the line: the provider's signed webhook POST. Returns the
        webhook's HTTP status and the MessageSid (pass ``sid`` again to replay it)."""
        sid = sid or _sid()
        params = {"MessageSid": [sid], "SmsSid": [sid], "SmsMessageSid": [sid],
                  "AccountSid": [self.account], "From": [sender], "To": [to or self.line_number],
                  "Body": [body], "NumMedia": ["0"], "NumSegments": [str(segments(body))],
                  "SmsStatus": ["received"], "ApiVersion": ["2010-04-01"]}
        target = url or self.webhook_url
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "User-Agent": "TwilioProxy/1.1",
                   "X-Twilio-Signature": signature if signature is not None else
                   sign(target, params, self.token)}
        if signature == "":
            del headers["X-Twilio-Signature"]
        data = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs]).encode()
        req = urllib.request.Request(target, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, sid
        except urllib.error.HTTPError as exc:
            return exc.code, sid

    def messages_to(self, number: str) -> list[Sent]:
        with self.cond:
            return [m for m in self.outbox if m.to == number]

    def wait_for(self, number: str, count: int, timeout: float = 10.0) -> list[Sent]:
        """Until ``count`` texts went to ``number`` (or the timeout); the texts so far."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.outbox if m.to == number]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self.cond.wait(left)

    def set_phones(self, phones: dict[str, str], default: str | None = None,
                   talk_s: float | None = None) -> None:
        parsed = {k.strip(): Phone.parse(v) for k, v in phones.items()}  # all or none
        if default:
            self.default = Phone.parse(default)
        self.phones = parsed
        self.talk_s = talk_s

    def _answer_offer(self, number: str, link: str) -> None:
        phone = self.phones.get(number, self.default)
        record = Responder(number, link, f"{phone.kind}:{phone.seconds:g}")
        with self.cond:
            self.responders.append(record)
        if phone.kind == "never":
            return
        threading.Thread(target=self._play, args=(phone, record), daemon=True,
                         name=f"responder {number[-4:]}").start()

    def _play(self, phone: Phone, record: Responder) -> None:
        """A responder's thumb on their phone's browser."""
        cookies = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(
            http.cookiejar.CookieJar()))
        base = record.link.rsplit("/r/", 1)[0]

        def go(url: str, form: dict[str, str] | None = None) -> str:
            data = urllib.parse.urlencode(form).encode() if form is not None else None
            with cookies.open(urllib.request.Request(url, data=data), timeout=30) as response:
                return response.read().decode()

        def step(name: str) -> None:
            record.steps.append(name)

        try:
            time.sleep((phone.seconds if phone.kind == "answer" else 1.0) * self.time_scale)
            go(record.link)
            page = go(record.link, {})  # "Open": uses the link, lands on /r/c
            step("opened")
            token = CSRF.search(page)
            if phone.kind in ("voicemail", "hangup-in-whisper") or token is None:
                return
            if phone.kind == "decline":
                go(base + "/r/c/pass", {"csrf_token": token.group(1)})
                step("passed")
                return
            page = go(base + "/r/c/take", {"csrf_token": token.group(1)})
            if "You are with them" not in page:
                step("taken by someone else")
                return
            step("took it")
            go(base + "/r/c/send", {"csrf_token": token.group(1), "body": GREETING})
            if self.talk_s is not None:
                time.sleep(self.talk_s * self.time_scale)
                go(base + "/r/c/end", {"csrf_token": token.group(1)})
                step("ended it")
        except (OSError, urllib.error.URLError) as exc:
            step(f"failed: {exc}")
