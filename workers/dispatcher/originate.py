"""Originates in flight on one AMI session, written and answered without panoramisk.

A dispatcher sends about four Originates per call. Through panoramisk each one was an
Action (a case-insensitive dict: a lower() per key, read back a dozen times), a Message per
reply and a task waiting for the answer: at 500 callers about a tenth of the dispatcher's
CPU. Here an Originate is a line of text written at once, its two replies (``Response:
Success`` "successfully queued", then the ``OriginateResponse`` event; or one ``Response:
Error``) are picked out of the stream by their ActionID (ami._Protocol) and parsed as plain
dicts, and the result goes to ``on_result`` when the last one comes, or when none came in
time (``Response: Failure``).

Like panoramisk's own actions: one written while the session is down, or not answered at all
before it dropped, is written again after the next login (Asterisk's FullyBooted); one that
had its first reply is not (it rings already; its OriginateResponse is lost with the session,
and the time limit ends it). Every Originate carries our ChannelId, so one written twice is
refused by Asterisk rather than ringing a phone twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

PREFIX = "pr-originate-"  # our ActionIDs (panoramisk's are action/<uuid>/...)
MARK = "\r\nActionID: " + PREFIX  # how a reply to one of them is told apart, unparsed
SLACK_S = 30.0  # past the ring timeout, how long an answer may still take
Result = dict[str, str]


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...


class _Pending:
    __slots__ = ("answered", "channel_id", "text", "timer")

    def __init__(self, channel_id: str, text: bytes) -> None:
        self.channel_id = channel_id
        self.text = text
        self.answered = False  # Asterisk queued it: it rings (not to be written again)
        self.timer: asyncio.TimerHandle | None = None


def originate_text(action_id: str, fields: Sequence[tuple[str, str]]) -> bytes:
    """The Originate as AMI reads it; a field with a line break in it would be read as more
    fields (another Channel, say): refused."""
    lines = ["Action: Originate", f"ActionID: {action_id}"]
    for key, value in fields:
        if "\r" in value or "\n" in value:
            raise ValueError(f"Originate {key} has a line break in it: {value!r}")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Originates:
    def __init__(self, on_result: Callable[[str, Result], None]) -> None:
        self.on_result = on_result  # (channel id, the last reply) once per Originate
        self._pending: dict[str, _Pending] = {}
        self._numbers = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, transport: Writer | None, channel_id: str,
             fields: Sequence[tuple[str, str]], timeout_s: float) -> None:
        """Write it now if the session is up (else after the next login)."""
        action_id = f"{PREFIX}{next(self._numbers)}"
        try:
            text = originate_text(action_id, fields)
        except ValueError as exc:
            self._finish_soon(channel_id, {"Response": "Failure", "Reason": "0",
                                           "Message": str(exc)})
            return
        pending = _Pending(channel_id, text)
        pending.timer = asyncio.get_running_loop().call_later(
            timeout_s + SLACK_S, self._expire, action_id)
        self._pending[action_id] = pending
        self._write(transport, pending)

    def answer(self, reply: dict[str, str]) -> None:
        """A reply carrying one of our ActionIDs (one we no longer wait for: dropped)."""
        pending = self._pending.get(reply.get("ActionID", ""))
        if pending is None:
            return
        if reply.get("Event") != "OriginateResponse" and reply.get("Response") == "Success":
            pending.answered = True  # queued: its OriginateResponse comes when it is decided
            return
        self._done(reply["ActionID"], reply)

    def resend(self, transport: Writer | None) -> None:
        """Logged in again: those never answered go out again (ChannelId: never twice)."""
        for pending in list(self._pending.values()):
            if not pending.answered:
                self._write(transport, pending)

    def close(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()

    @staticmethod
    def _write(transport: Writer | None, pending: _Pending) -> None:
        if transport is not None and not transport.is_closing():
            transport.write(pending.text)

    def _expire(self, action_id: str) -> None:
        self._done(action_id, {"Response": "Failure", "Reason": "0",
                               "Message": "no answer from Asterisk in time"})

    def _done(self, action_id: str, result: Any) -> None:
        pending = self._pending.pop(action_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self.on_result(pending.channel_id, result)

    def _finish_soon(self, channel_id: str, result: Result) -> None:
        # (Not from inside send: the caller's own bookkeeping comes first, as for an answer.)
        asyncio.get_running_loop().call_soon(self.on_result, channel_id, result)
