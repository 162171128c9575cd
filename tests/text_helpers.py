"""The text line end to end in one test: the dispatcher (over the stand-in PBX's AMI, as in
dispatch_helpers), the public chat app on a real port (Werkzeug's threaded server, as
`peoples-response chat` runs it), and the SMS provider stand-in, all on real Redis and SQL.

HTTP from an async test goes through threads (``await system.http(...)``) so the dispatcher
running in the test's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from crisisline import db
from crisisline.config import Settings
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from crisisline.roster.store import RosterStore
from crisisline.stores.texts import chat_key, from_key
from smsstandin.server import SmsStandin
from tests.dispatch_helpers import SECRET, System, running_system
from textline import create_app
from textline.runtime import Runtime

ACCOUNT = "AC" + "0" * 32
TOKEN = "test-sms-token-0123456789abcdef"
TEXTER = "+17815550142"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGE_TOKEN = re.compile(r'data-token="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text_roster(*people: tuple[str, str | None, str, str]) -> RosterSnapshot:
    """(id, team, languages, phone) each; on call all week. Teams as dispatch_helpers'."""
    teams = (Team("dot", "Dorchester team", frozenset({"Dorchester"}), frozenset({"rox"})),
             Team("rox", "Roxbury team", frozenset({"Roxbury"})))
    responders = tuple(Responder(rid, rid.title(), phone, frozenset(langs.split(",")), team, False)
                       for rid, team, langs, phone in people)
    shifts = tuple(Shift(r.id, day, time(0), time(0)) for r in responders for day in range(7))
    return RosterSnapshot(teams, responders, shifts)


def text_settings(settings: Settings, chat_port: int, standin_url: str, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "chat_public_url": f"http://127.0.0.1:{chat_port}", "sms_api_url": standin_url,
        "sms_account": ACCOUNT, "sms_token": TOKEN, "chat_secret_key": "test-chat-secret",
        "text_wave_timeout_s": 5.0}
    values.update(over)
    return dataclasses.replace(settings, **values)


class Browser:
    """A responder's (or anyone's) phone browser: cookies kept, forms posted."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(
            http.cookiejar.CookieJar()))

    def get(self, url: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(url))

    def post(self, url: str, form: dict[str, str], headers: dict[str, str] | None = None
             ) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(url, data=data, headers=headers or {}))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@dataclass
class TextSystem:
    calls: System
    app: Flask
    standin: SmsStandin
    base: str
    runtime: Runtime
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.calls.settings

    @property
    def db(self):
        return self.calls.db

    async def http(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    async def text(self, body: str, sender: str = TEXTER, **kw: Any) -> tuple[int, str]:
        """A texter's phone texts the line (the provider's signed webhook)."""
        return await asyncio.to_thread(self.standin.text, sender, body, **kw)

    def texts_to(self, number: str = TEXTER) -> list[str]:
        return [m.body for m in self.standin.messages_to(number)]

    def conversation_of(self, number: str = TEXTER) -> str | None:
        found = self.db.client.get(from_key(number))
        return found or None

    def conversation_of_key(self, key: str) -> str | None:
        return self.db.client.get(chat_key(key)) or None

    async def until(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        return predicate()

    def link_for(self, number: str) -> str | None:
        for m in reversed(self.standin.messages_to(number)):
            found = re.search(r"(http://\S+/r/[A-Za-z0-9_\-]+)", m.body)
            if found:
                return found.group(1)
        return None

    def start_dispatcher_process(self) -> subprocess.Popen:
        """`peoples-response dispatcher` as its own process, with the text line's settings."""
        s = self.settings
        RosterStore(db.engine_for(s), s.timezone).replace_all(self.calls.roster)
        env = {**os.environ, "PR_VAR_DIR": s.var_dir, "PR_REDIS_URL": s.effective_redis_url,
               "PR_AMI_PORT": str(s.ami_port), "PR_AMI_SECRET": SECRET,
               "PR_WAVE_TIMEOUT_S": str(s.wave_timeout_s), "PR_MAX_WAIT_S": str(s.max_wait_s),
               "PR_DISPATCH_LEASE_S": "1.5", "PR_LOG_LEVEL": "WARNING",
               "PR_TEXT_WAVE_TIMEOUT_S": str(s.text_wave_timeout_s),
               "PR_CHAT_PUBLIC_URL": s.chat_url, "PR_SMS_API_URL": s.sms_api_url,
               "PR_SMS_ACCOUNT": s.sms_account, "PR_SMS_TOKEN": s.sms_token}
        proc = subprocess.Popen([sys.executable, "-m", "peoples_response.cli", "dispatcher"],
                                env=env, stdout=subprocess.DEVNULL)
        self.processes.append(proc)
        self.calls.processes.append(proc)
        return proc


@asynccontextmanager
async def text_system(settings: Settings, roster: RosterSnapshot, *, dispatchers: int = 1,
                      time_scale: float = 0.02, upkeep: bool = False,
                      **over: Any) -> AsyncIterator[TextSystem]:
    chat_port = free_port()
    standin = SmsStandin(ACCOUNT, TOKEN, f"http://127.0.0.1:{chat_port}/sms/inbound",
                         line_number=settings.sms_number, time_scale=time_scale).start()
    settings = text_settings(settings, chat_port, standin.url, **over)
    try:
        async with running_system(settings, roster, dispatchers=dispatchers,
                                  wave_timeout_s=settings.wave_timeout_s,
                                  max_wait_s=settings.max_wait_s) as calls:
            runtime = Runtime(calls.settings, upkeep=upkeep)
            app = create_app(calls.settings, runtime=runtime, testing=True)
            server = make_server("127.0.0.1", chat_port, app, threaded=True)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield TextSystem(calls, app, standin, f"http://127.0.0.1:{chat_port}", runtime)
            finally:
                server.shutdown()
                server.server_close()
                runtime.close()
    finally:
        standin.stop()


def page_token(html: str) -> str:
    found = PAGE_TOKEN.search(html)
    assert found, "no form token on the chat page"
    return found.group(1)


def chat_json(browser: Browser, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, body = browser.post(url, form, headers={"X-Requested-With": "fetch"})
    return status, (json.loads(body) if body.startswith("{") else {})
