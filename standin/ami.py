"""The stand-in's Asterisk Manager Interface (AMI) server, over a StandinPBX.

Wire behaviour follows main/manager.c (session_do, do_message, get_input,
process_message, action_login) and the captures recorded from Asterisk 22.10.1
(reference/asterisk-captures/ami_*.txt): a one-line banner, CRLF lines (a bare LF is
accepted too, as get_input does), ``Key: Value`` blocks ended by an empty line, the
ActionID echoed, events fanned out to every logged-in session between actions.
The actions themselves are in ami_actions.py.

STAND-IN EXTENSIONS (not Asterisk; only for tests and ``simulate``):

``Action: StandinPlaceCall``
    Places a scripted caller through ``[from-<Source>]``. Headers: ``Source`` (direct,
    911, 988...), ``Exten`` (default ``s``), ``Keys`` (space-separated answers, ``-`` =
    no key), ``HangupAfter`` (hang up after the Nth prompt), ``CallerID``
    (``"Name" <num>``), repeatable ``Var: NAME=VALUE`` (channel variables), ``Stay``
    (seconds in a room, empty = until the call ends), ``Say`` / ``Message`` (8 kHz WAV
    files the caller says at the language menu / as their message). Replies ``Response:
    Success`` with ``Channel`` and ``Uniqueid``; when the call has ended, ``Event:
    StandinCallEnded`` goes to the same session with the same ActionID, ``Channel``,
    ``Uniqueid`` and ``Trace`` (the CallTrace as one-line JSON). With panoramisk the
    reply resolves the action; the end event reaches ``register_event`` callbacks.
``Action: StandinPhones``
    Replaces the phone table (see phones.py): ``Default: BEHAVIOUR`` and repeatable
    ``Phone: MATCH=BEHAVIOUR`` (MATCH: dial string, number / endpoint, or PR_RESPONDER id).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from standin import ami_perms
from standin.ami_actions import ACTIONS
from standin.phones import cause_text, phones_for

if TYPE_CHECKING:
    from standin.pbx import StandinPBX

log = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]
MAX_LINE = 1024  # mansession inbuf is 1025 bytes with the terminating NUL


class Message:
    """One action as received: its header lines, looked up as astman_get_header does."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def get(self, key: str, skip_empty: bool = False) -> str:
        """The first ``Key:`` header (case-insensitive), blanks after the colon skipped."""
        for value in self.get_all(key):
            if value or not skip_empty:
                return value
        return ""

    def get_all(self, key: str) -> list[str]:
        prefix = key.lower() + ":"
        return [line[len(prefix):].lstrip(" \t") for line in self.lines
                if line[:len(prefix)].lower() == prefix]

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


def _clean(value: object) -> str:
    # A CR or LF inside a value would end the header (or the block) early on the wire.
    return str(value).replace("\r", " ").replace("\n", " ")


def encode_block(pairs: Iterable[tuple[str, object]]) -> bytes:
    return "".join(f"{k}: {_clean(v)}\r\n" for k, v in pairs).encode("utf-8") + b"\r\n"


class AmiSession:
    """One TCP connection (mansession)."""

    def __init__(self, server: AmiServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader, self.writer = reader, writer
        self.authenticated = False
        self.username = ""
        self.event_mask = ami_perms.ALL  # build_mansession: send_events = -1
        self.challenge = ""
        self.closed = False
        self.held: list[bytes] | None = None  # events held back during a blocking action
        self.started = time.time()

    # ---- output -----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
        except (ConnectionError, OSError, RuntimeError):
            self.closed = True

    def send(self, pairs: Iterable[tuple[str, object]]) -> None:
        self.write(encode_block(pairs))

    def respond(self, m: Message, response: str, message: str | None = None,
                extra: Pairs | None = None) -> None:
        """astman_send_response_full: Response, ActionID, Message, then the rest."""
        pairs: Pairs = [("Response", response)]
        if m.action_id:
            pairs.append(("ActionID", m.action_id))
        if message is not None:
            pairs.append(("Message", message))
        self.send(pairs + (extra or []))

    def ack(self, m: Message, message: str | None = None, extra: Pairs | None = None) -> None:
        self.respond(m, "Success", message, extra)

    def error(self, m: Message, message: str) -> None:
        self.respond(m, "Error", message)

    def list_ack(self, m: Message, message: str) -> None:
        """astman_send_listack: the list follows as events carrying the ActionID."""
        pairs: Pairs = [("Response", "Success")]
        if m.action_id:
            pairs.append(("ActionID", m.action_id))
        self.send([*pairs, ("EventList", "start"), ("Message", message)])

    def list_item(self, m: Message, event: str, fields: Iterable[tuple[str, object]]) -> None:
        pairs: list[tuple[str, object]] = [("Event", event)]
        if m.action_id:
            pairs.append(("ActionID", m.action_id))
        self.send([*pairs, *fields])

    def list_complete(self, m: Message, event: str, count: int) -> None:
        self.list_item(m, event, [("EventList", "Complete"), ("ListItems", count)])

    def deliver(self, data: bytes, category: int = 0) -> None:
        """An event: written now, or held while a blocking action runs (capture 16); only
        when the session's event mask holds the event's classes."""
        if not self.authenticated or not ami_perms.wants(self.event_mask, category):
            return
        if self.held is not None:
            self.held.append(data)
        else:
            self.write(data)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for data in held:
            self.write(data)

    # ---- input ----------------------------------------------------------------------------
    async def read_message(self) -> Message | None:
        """Lines up to an empty one (do_message); None at EOF or on the auth timeout."""
        lines: list[str] = []
        too_long = False
        while True:
            timeout = None
            if not self.authenticated:
                timeout = self.server.auth_timeout_s - (time.time() - self.started)
                if timeout <= 0:
                    return None
            try:
                raw = await asyncio.wait_for(self.reader.readline(), timeout)
            except (TimeoutError, ConnectionError, OSError):
                return None
            except (ValueError, asyncio.LimitOverrunError):
                raw, too_long = b"x\n", True  # a line longer than the stream limit
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\n")
            line = line[:-1] if line.endswith("\r") else line
            if not line:
                m = Message(lines)
                m.too_long = too_long  # type: ignore[attr-defined]
                return m
            if len(line) > MAX_LINE:
                too_long = True  # get_input: "Discarding message ... Line too long"
                continue
            if len(lines) < 128:  # AST_MAX_MANHEADERS; the rest is dropped
                lines.append(line)

    async def run(self) -> None:
        self.write(f"Asterisk Call Manager/{self.server.version}\r\n".encode())
        try:
            while not self.closed:
                m = await self.read_message()
                if m is None:
                    break
                if getattr(m, "too_long", False):
                    self.error(m, "Failed to parse message: line too long")
                    continue
                if not await self.process(m):
                    break
                with contextlib.suppress(ConnectionError, OSError):
                    await self.writer.drain()
        finally:
            await self.close()

    async def process(self, m: Message) -> bool:
        """process_message(): False ends the session."""
        action = m.get("Action", skip_empty=True)
        if not action:
            self.error(m, "Missing action in request")
            return True
        name = action.lower()
        if not self.authenticated and name not in ("login", "logoff", "challenge"):
            self.error(m, "Permission denied")
            return True
        handler = {"login": login, "logoff": logoff, "challenge": challenge,
                   **ACTIONS}.get(name)
        if handler is None:
            self.error(m, f"Invalid/unknown command: {action}. "
                          "Use Action: ListCommands to show available commands.")
            return True
        try:
            return await handler(self, m) is not False
        except Exception:  # a stand-in bug: answer like a failed action, keep serving
            log.exception("stand-in AMI action %s failed", action)
            self.error(m, "Internal Error")
            return True

    async def close(self) -> None:
        if self in self.server.sessions:
            self.server.sessions.remove(self)
        self.closed = True
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self.writer.close()
            await self.writer.wait_closed()


# ---- the actions that manage the session itself (manager.c) -------------------------------
async def login(s: AmiSession, m: Message) -> bool:
    srv = s.server
    if s.authenticated:
        s.ack(m, "Already authenticated")
        return True
    user, secret, key = m.get("Username"), m.get("Secret"), m.get("Key")
    ok = user.lower() == srv.username.lower()
    if ok and m.get("AuthType").lower() == "md5":
        digest = hashlib.md5((s.challenge + srv.secret).encode()).hexdigest()
        ok = bool(s.challenge) and key.lower() == digest
    elif ok:
        ok = secret == srv.secret
    if not ok:
        await asyncio.sleep(srv.auth_fail_delay_s)  # action_login: sleep(1) before answering
        s.error(m, "Authentication failed")
        return False
    s.authenticated, s.username = True, user
    mask = ami_perms.strings_to_mask(m.get("Events"))
    if mask >= 0:
        s.event_mask = mask
    s.ack(m, "Authentication accepted")
    if s.event_mask & ami_perms.SYSTEM:
        up = int(time.time() - srv.started)
        s.send([("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", up),
                ("LastReload", up), ("Status", "Fully Booted")])
    srv.security_event(s, user)
    return True


async def logoff(s: AmiSession, m: Message) -> bool:
    s.respond(m, "Goodbye", "Thanks for all the fish.")
    return False


async def challenge(s: AmiSession, m: Message) -> bool:
    if m.get("AuthType").lower() != "md5":
        s.error(m, "Must specify AuthType")
        return True
    s.challenge = s.challenge or str(int(time.time() * 1000) % 1_000_000_000)
    s.ack(m, extra=[("Challenge", s.challenge)])
    return True


class AmiServer:
    """``await AmiServer(pbx, username=..., secret=...).start()``; ``close()`` sends
    ``Event: Shutdown`` to every session and closes them (capture 14)."""

    def __init__(self, pbx: StandinPBX, *, username: str, secret: str,
                 host: str = "127.0.0.1", port: int = 5038, version: str = "11.0.0",
                 auth_fail_delay_s: float = 1.0, auth_timeout_s: float = 30.0) -> None:
        if not secret:
            raise ValueError("the stand-in AMI needs a secret")
        self.pbx = pbx
        self.username, self.secret = username, secret
        self.host, self.port = host, port
        self.version = version  # 22.10.1 sent 11.0.0 (capture 10a); manager.c says 13.0.0
        self.auth_fail_delay_s = auth_fail_delay_s
        self.auth_timeout_s = auth_timeout_s  # manager.conf authtimeout
        self.sessions: list[AmiSession] = []
        self.started = time.time()
        self.first_seen: dict[str, float] = {}  # channel -> when it appeared
        self.muted: set[tuple[str, str]] = set()  # (room, channel) muted by ConfbridgeMute
        self.tasks: set[asyncio.Task[Any]] = set()
        self.phones = phones_for(pbx)
        self._server: asyncio.Server | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> AmiServer:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=64 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0: the one we got
        self._unsubscribe = self.pbx.subscribe(self.on_event)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = AmiSession(self, reader, writer)
        self.sessions.append(session)
        await session.run()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task the server keeps (and cancels on close)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ---- events ---------------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        name = event.get("Event", "")
        channel = event.get("Channel", "")
        if name == "Newchannel" and channel:
            self.first_seen[channel] = time.monotonic()
        if name == "Hangup":
            self.first_seen.pop(channel, None)
            self.muted = {(r, c) for r, c in self.muted if c != channel}
            if "Cause" in event:  # Asterisk's own wording (main/channel.c causes[])
                event = {**event, "Cause-txt": cause_text(int(event["Cause"] or 0))}
        # The PBX reports rooms only as Confbridge* events; Asterisk's bridge core sends
        # its own around them (capture 12): BridgeCreate, BridgeEnter, BridgeLeave,
        # BridgeDestroy, with the same bridge (and channel) headers.
        bridge = {k: v for k, v in event.items()
                  if k not in ("Event", "Privilege", "Conference", "Admin", "Muted")}
        if name in ("ConfbridgeStart", "ConfbridgeJoin"):
            self.broadcast([("Event", "BridgeCreate" if name == "ConfbridgeStart"
                             else "BridgeEnter"), ("Privilege", "call,all"), *bridge.items()])
        self.broadcast(event.items())
        if name in ("ConfbridgeLeave", "ConfbridgeEnd"):
            self.broadcast([("Event", "BridgeLeave" if name == "ConfbridgeLeave"
                             else "BridgeDestroy"), ("Privilege", "call,all"), *bridge.items()])

    def broadcast(self, pairs: Iterable[tuple[str, object]]) -> None:
        pairs = list(pairs)
        data, category = encode_block(pairs), ami_perms.event_category(pairs)
        for session in list(self.sessions):
            session.deliver(data, category)

    def security_event(self, s: AmiSession, user: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
        sock = s.writer.get_extra_info("sockname") or ("127.0.0.1", self.port)
        peer = s.writer.get_extra_info("peername") or ("127.0.0.1", 0)
        self.broadcast([
            ("Event", "SuccessfulAuth"), ("Privilege", "security,all"), ("EventTV", now),
            ("Severity", "Informational"), ("Service", "AMI"), ("EventVersion", "1"),
            ("AccountID", user), ("SessionID", hex(id(s))),
            ("LocalAddress", f"IPV4/TCP/{sock[0]}/{sock[1]}"),
            ("RemoteAddress", f"IPV4/TCP/{peer[0]}/{peer[1]}"), ("UsingPassword", "0"),
            ("SessionTV", now)])

    async def close(self) -> None:
        """'core stop now': Shutdown to every session, then close everything."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self.broadcast([("Event", "Shutdown"), ("Privilege", "system,all"),
                        ("Shutdown", "Cleanly"), ("Restart", "False")])
        for session in list(self.sessions):
            session.release()
            await session.close()
        for task in list(self.tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AmiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
