"""The dispatcher's AMI connection: panoramisk's Manager, wrapped for what it gets wrong.

Originates don't go through panoramisk (originate.py: its Action objects were a tenth of our
CPU at 500 callers); they are never awaited on the dispatch path (their answer comes when
the phone is answered or not, up to the ring timeout). Every Originate carries our own
ChannelId, so one written again after a reconnect is refused by Asterisk instead of ringing
a responder twice. Leg channel names come from Newchannel events (Uniqueid == ChannelId)
and are kept in Redis, so a restarted dispatcher can still hang them up. It logs in for
the event classes it reads (call: Newchannel, Hangup, OriginateResponse; user: our
UserEvents; system: FullyBooted), so Asterisk doesn't send it every dialplan step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from crisisline.config import Settings
from workers.dispatcher.originate import MARK, PREFIX, Originates, Writer

log = logging.getLogger(__name__)
EventHandler = Callable[[dict[str, str]], Awaitable[None]]
EVENT_CLASSES = "call,user,system"
# The events the handlers read (watch.py): the others (Newstate, DialBegin, NewCallerid...)
# are dropped before they cost a dict and a task each (a few per leg, at 500 callers
# thousands a minute).
HANDLED_EVENTS = frozenset({"Newchannel", "Hangup", "ConfbridgeJoin", "ConfbridgeLeave",
                            "ConfbridgeEnd", "UserEvent", "DialEnd"})
# Events handled at once, at most (the others wait their turn, in order): 500 callers joining
# their rooms together were 500 Redis reads at once, more than the connection pool holds.
HANDLING = 64


# Events panoramisk itself needs whatever the handlers read (its own login and shutdown).
PANORAMISK_EVENTS = frozenset({"FullyBooted", "Shutdown"})
EOL2 = "\r\n\r\n"


class _Protocol(AMIProtocol):
    """panoramisk's protocol, dropping the events no handler reads before they are parsed
    (most of what Asterisk sends about calls: Newstate, DialBegin...) and handing the ones
    they read to the gateway as plain dicts (AmiGateway.deliver). An event with an ActionID
    is an action's answer (list items, OriginateResponse), and panoramisk needs its own
    events (login, shutdown): those, and actions' responses, take panoramisk 1.4's own way
    (Message, dispatch)."""

    def data_received(self, data: bytes) -> None:
        gateway = getattr(self.factory, "pr_gateway", None)
        wanted = gateway.events if gateway is not None else None
        if wanted is None or self.version is None or getattr(self.factory, "save_stream", None):
            super().data_received(data)
            return
        text = data.decode(getattr(self, "encoding", "ascii"), "ignore")
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(EOL2)
        self.queue.append(blocks.pop(-1))
        for block in blocks:
            block = block.strip()
            if MARK in block:  # one of our Originates answered (originate.py)
                gateway.originates.answer(_parse_event(block))
                continue
            if block.startswith("Event: "):
                name = block[7:block.find("\r\n")] if "\r\n" in block else block[7:]
                if "\r\nActionID: " not in block and name not in PANORAMISK_EVENTS:
                    if name in wanted:
                        # An event a handler reads: straight to them as a plain dict.
                        # panoramisk's Message (a case-insensitive dict, a lower() per
                        # key) and its dispatch were a fifth of our CPU at 500 callers.
                        gateway.deliver(_parse_event(block))
                    continue
            message = Message.from_line(block)
            if message is not None:
                self.handle_message(message)

    def handle_message(self, message: Any) -> None:
        """panoramisk's, but our Originates' answers go to them (the slow path of
        data_received: before the banner, or saving the stream)."""
        gateway = getattr(self.factory, "pr_gateway", None)
        if gateway is not None and str(message.action_id or "").startswith(PREFIX):
            gateway.originates.answer(_as_dict(message))
            return
        super().handle_message(message)

    def send(self, data: Any, as_list: bool = False) -> Any:
        """panoramisk's send; on a connection that is closing, the action is kept for its
        re-send after the reconnect without being written, as on asyncio's loop (uvloop
        raises on such a write, and panoramisk logged a traceback for each: hundreds while a
        node was down)."""
        transport = getattr(self, "transport", None)
        if transport is None or not transport.is_closing():
            return super().send(data, as_list)
        self.transport = _NOWHERE
        try:
            return super().send(data, as_list)
        finally:
            self.transport = transport


class _Nowhere:
    """Where an action goes while its connection is down: panoramisk re-sends it later."""

    def write(self, data: bytes) -> None:
        pass


_NOWHERE = _Nowhere()


def _parse_event(block: str) -> dict[str, str]:
    """``Key: value`` lines as a dict (a key given twice: the last value, as _as_dict)."""
    event: dict[str, str] = {}
    for line in block.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            event[key] = value
        elif line.endswith(":"):
            event[line[:-1]] = ""
    return event


def _as_dict(message: Any) -> dict[str, str]:
    """A panoramisk Message as a plain dict (its own mapping protocol is slow: a generator
    and a lower() per key)."""
    store = getattr(message, "_store", None)  # CaseInsensitiveDict: lower -> (key, value)
    if isinstance(store, dict):
        return {str(k): v if type(v) is str else str(v) for k, v in store.values()}
    return {str(k): str(v) for k, v in dict(message).items()}


SUPERVISOR_PREFIX = "prs-"  # a supervisor's leg into a call's room


def supervisor_leg_id(call_id: str, n: int) -> str:
    return f"{SUPERVISOR_PREFIX}{call_id}-{n}"


def parse_supervisor_leg_id(uniqueid: str) -> str | None:
    """The call id of one of our supervisor legs, else None."""
    if not uniqueid.startswith(SUPERVISOR_PREFIX):
        return None
    call_id, _, n = uniqueid[len(SUPERVISOR_PREFIX):].rpartition("-")
    return call_id if call_id and n.isdigit() else None


def leg_id(call_id: str, cycle: int, wave: int, rid: str) -> str:
    """Our ChannelId for a responder's leg: unique, and parseable back."""
    return f"pr-{call_id}-{cycle}-{wave}-{rid}"


def parse_leg_id(uniqueid: str) -> tuple[str, int, int, str] | None:
    parts = uniqueid.split("-", 4)
    if len(parts) != 5 or parts[0] != "pr":
        return None
    try:
        return parts[1], int(parts[2]), int(parts[3]), parts[4]
    except ValueError:
        return None


class AmiGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.manager: Manager | None = None
        self.handlers: list[EventHandler] = []
        # Run on each event as it is read, before any handler: False when no handler needs
        # it (duty.py: a node another dispatcher acts on; events nothing acts on). A task
        # per event was a good part of our CPU at 500 callers.
        self.sift: Callable[[dict[str, str]], bool] | None = None
        self.events: frozenset[str] | None = HANDLED_EVENTS  # None: every event
        self._handling = asyncio.Semaphore(HANDLING)
        self.originate_results: list[Callable[[str, dict[str, str]], Awaitable[None]]] = []
        self._pending: set[asyncio.Task] = set()
        self.originates = Originates(self._originated)
        # The session Originates are written to: logged in and fully booted (None: down).
        self._ready: Writer | None = None
        # Since when this AMI session has heard every event (None: not logged in now). What
        # happened before it, such as a caller's PRFallback, may have gone unheard.
        self.listening_since: float | None = None

    async def connect(self) -> None:
        s = self.settings
        if not s.ami_secret:
            raise RuntimeError("PR_AMI_SECRET is not set: the dispatcher can't log in to AMI")
        self.manager = Manager(host=s.ami_host, port=s.ami_port, username=s.ami_user,
                               secret=s.ami_secret, ping_delay=5, reconnect_timeout=1,
                               events=EVENT_CLASSES, on_login=self._logged_in,
                               on_disconnect=self._lost, loop=asyncio.get_running_loop(),
                               protocol_factory=_Protocol)
        self.manager.pr_gateway = self  # type: ignore[attr-defined]  # its events (_Protocol)
        self.manager.register_event("*", self._on_event)
        self.manager.register_event("FullyBooted", self._booted)
        await self.manager.connect()
        log.info("AMI connected to %s:%d", s.ami_host, s.ami_port)

    def _logged_in(self, _manager: Manager) -> None:
        self.listening_since = time.time()

    def _lost(self, _manager: Manager, _exc: Exception | None) -> None:
        self.listening_since = None
        self._ready = None

    def _booted(self, manager: Manager, _message: Any) -> None:
        """Asterisk takes actions on this session now (as panoramisk waits for it): the
        Originates not answered yet go out again, once per session."""
        transport = getattr(getattr(manager, "protocol", None), "transport", None)
        if transport is None or transport is self._ready:
            return
        self._ready = transport
        self.originates.resend(transport)

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
        self.originates.close()
        for task in list(self._pending):
            task.cancel()

    def _on_event(self, _manager: Manager, message: Any) -> Awaitable[None] | None:
        """panoramisk runs what this returns as a task: nothing at all for an event no
        handler reads."""
        if self.events is not None:
            store = getattr(message, "_store", None)
            name = store.get("event", ("", ""))[1] if isinstance(store, dict) else message.get("Event")
            if name not in self.events:
                return None
        self.deliver(_as_dict(message))
        return None

    def deliver(self, event: dict[str, str]) -> None:
        """An event a handler reads (already filtered by name: _Protocol)."""
        if self.sift is not None and not self.sift(event):
            return
        task = asyncio.ensure_future(self._handle(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _handle(self, event: dict[str, str]) -> None:
        async with self._handling:
            for handler in self.handlers:
                try:
                    await handler(event)
                except Exception:
                    log.exception("AMI event handler failed on %s", event.get("Event"))

    async def action(self, action: dict[str, Any]) -> dict[str, str]:
        assert self.manager is not None
        reply = await asyncio.wait_for(self.manager.send_action(action), 10)
        if isinstance(reply, list):
            reply = reply[0] if reply else {}
        return {str(k): str(v) for k, v in dict(reply).items()}

    def originate(self, channel_id: str, destination: str, context: str, variables: dict[str, str],
                  timeout_s: float, caller_id: str = "People's Response <0>",
                  application: str | None = None, data: str = "") -> None:
        """Ring a phone in the background; the result comes to ``originate_results``.

        With ``application`` the answered phone runs it (e.g. ConfBridge) instead of
        ``context``."""
        where = ((("Application", application), ("Data", data)) if application else
                 (("Context", context), ("Exten", "s"), ("Priority", "1")))
        fields = [("Channel", destination), *where, ("Async", "true"),
                  ("Timeout", str(int(timeout_s * 1000))), ("ChannelId", channel_id),
                  ("CallerID", caller_id), *(("Variable", f"{k}={v}") for k, v in variables.items())]
        self.originates.send(self._ready, channel_id, fields, timeout_s)

    def _originated(self, channel_id: str, result: dict[str, str]) -> None:
        if not self.originate_results:
            return

        async def tell() -> None:
            for callback in self.originate_results:
                try:
                    await callback(channel_id, result)
                except Exception as exc:  # Redis away a moment: the reconciler catches up
                    log.warning("after Originate %s: %s", channel_id, exc)

        task = asyncio.create_task(tell())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def setvar(self, channel: str, variable: str, value: str) -> bool:
        try:
            reply = await self.action({"Action": "Setvar", "Channel": channel,
                                       "Variable": variable, "Value": value})
        except Exception as exc:
            log.debug("setvar %s on %s: %s", variable, channel, exc)
            return False
        return reply.get("Response") == "Success"

    async def listing(self, action: dict[str, Any], item: str) -> list[dict[str, str]] | None:
        """A list action's item events (CoreShowChannels: CoreShowChannel), or None when
        Asterisk could not be asked (an empty list is a real answer)."""
        assert self.manager is not None
        try:
            reply = await asyncio.wait_for(self.manager.send_action(action), 10)
        except Exception as exc:
            log.warning("AMI %s: %s", action.get("Action"), exc)
            return None
        messages = reply if isinstance(reply, list) else [reply]
        if messages and str(dict(messages[0]).get("Response", "")) == "Error":
            # ConfbridgeListRooms answers "No active conferences." as an error: an empty list.
            return []
        return [{str(k): str(v) for k, v in dict(m).items()} for m in messages
                if str(dict(m).get("Event", "")) == item]

    async def hangup(self, channel: str, cause: int = 16) -> None:
        try:
            await self.action({"Action": "Hangup", "Channel": channel, "Cause": str(cause)})
        except Exception as exc:
            log.debug("hangup %s: %s", channel, exc)

    async def redirect(self, channel: str, context: str, exten: str = "s") -> bool:
        try:
            reply = await self.action({"Action": "Redirect", "Channel": channel,
                                       "Context": context, "Exten": exten, "Priority": "1"})
        except Exception as exc:
            log.warning("redirect %s -> %s failed: %s", channel, context, exc)
            return False
        return reply.get("Response") == "Success"
