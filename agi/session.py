"""One FastAGI session: the commands our IVR uses, with hang-up as an exception.

A command that Asterisk answers with ``result=-1`` may mean "the caller hung up" or "the
file is missing"; the ``HANGUP`` line that tells them apart arrives ~40 ms *after* that
reply. So after a -1 we ask ``CHANNEL STATUS`` (refused with 511 on a dead channel, and
any pending ``HANGUP`` line is read first): deterministic, no guessing by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agi.protocol import (
    AgiCommandError,
    AgiProtocolError,
    Headers,
    Reply,
    parse_reply,
    quote,
    read_line,
)

log = logging.getLogger(__name__)

# Commands res_agi still runs on a dead channel (res/res_agi.c, dead=1 in its command table).
DEAD_CHANNEL_OK = frozenset({
    "DATABASE DEL", "DATABASE DELTREE", "DATABASE GET", "DATABASE PUT", "EXEC",
    "GET VARIABLE", "GET FULL VARIABLE", "NOOP", "SET VARIABLE", "VERBOSE",
})
ESCAPE_ALL = "0123456789*#"


class CallerHungUp(Exception):
    """The caller is gone, or Asterisk moved the channel elsewhere (a redirect looks the
    same on the wire: ``result=-1``, ``HANGUP``, then 511; tests/captures/fastagi_redirect_*).
    Not an error: every step must expect it; :meth:`AgiSession.moved` tells them apart."""


class PlaybackFailed(Exception):
    """A file could not be played on a live channel (missing or unreadable prompt)."""


class AgiSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 headers: Headers, command_timeout: float = 120.0) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = headers
        self.command_timeout = command_timeout
        self.hung_up = False
        self.call_id: str | None = None  # set by a handler once it has created a call
        self.turnarounds: list[float] = []  # seconds per command, for the benchmark

    # ---- wire ---------------------------------------------------------------------------
    async def command(self, name: str, *args: object, raw: str = "") -> Reply:
        """Send one command and return its 200 reply. Raises CallerHungUp, AgiCommandError."""
        if self.hung_up and name not in DEAD_CHANNEL_OK:
            raise CallerHungUp(name)
        line = name + "".join(" " + quote(a) for a in args) + raw
        started = time.perf_counter()
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        reply = await self._read_reply(name)
        self.turnarounds.append(time.perf_counter() - started)
        return reply

    async def _read_reply(self, name: str) -> Reply:
        while True:
            line = (await read_line(self.reader, self.command_timeout)).rstrip("\r")
            if line == "HANGUP":
                # Out-of-band: the caller left. The reply to our command is still coming.
                self.hung_up = True
                continue
            if line.startswith("200 "):
                return parse_reply(line)
            if line.startswith("511"):
                self.hung_up = True
                raise CallerHungUp(name)
            if line.startswith("520-"):
                usage = []
                while not line.startswith("520 "):
                    line = await read_line(self.reader, self.command_timeout)
                    usage.append(line)
                raise AgiCommandError(520, f"{name}: invalid syntax; usage: {' '.join(usage)[:300]}")
            if line.startswith(("510", "520")):
                raise AgiCommandError(int(line[:3]), f"{name}: {line[4:]}")
            if line == "" or line.startswith("100 "):
                continue  # "100 result=0 Trying..." precedes some replies; blank lines are noise
            raise AgiProtocolError(f"unexpected reply to {name}: {line[:200]!r}")

    async def _alive_after_failure(self) -> bool:
        """After a -1: is the caller still there?"""
        if self.hung_up:
            return False
        try:
            await self.command("CHANNEL STATUS")
        except CallerHungUp:
            return False
        return not self.hung_up

    async def _play_result(self, name: str, reply: Reply, what: str) -> Reply:
        if reply.result == "-1":
            if not await self._alive_after_failure():
                raise CallerHungUp(name)
            raise PlaybackFailed(what)
        return reply

    # ---- commands the IVR uses ------------------------------------------------------------
    async def answer(self) -> None:
        await self.command("ANSWER")

    async def stream_file(self, path: str, escape_digits: str = "") -> str:
        """Play a file; returns the key that interrupted it, or ''."""
        reply = await self.command("STREAM FILE", path, escape_digits)
        await self._play_result("STREAM FILE", reply, path)
        return chr(reply.number) if reply.number > 0 else ""

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a file and collect digits: (digits, timed_out)."""
        reply = await self.command("GET DATA", path, timeout_ms, max_digits)
        await self._play_result("GET DATA", reply, path)
        return reply.result, reply.timed_out

    async def wait_for_digit(self, timeout_ms: int) -> str:
        reply = await self.command("WAIT FOR DIGIT", timeout_ms)
        if reply.result == "-1":
            self.hung_up = self.hung_up or not await self._alive_after_failure()
            raise CallerHungUp("WAIT FOR DIGIT")
        return chr(reply.number) if reply.number > 0 else ""

    async def record_file(self, path: str, fmt: str, escape_digits: str, timeout_ms: int,
                          silence_s: int, beep: bool = True) -> Reply:
        """``silence_s`` 0: no silence detection; ``beep`` False: no tone first (a spoken
        menu choice is not a message)."""
        lead = ("0", "BEEP") if beep else ()
        reply = await self.command("RECORD FILE", path, fmt, escape_digits, timeout_ms, *lead,
                                   raw=f" s={int(silence_s)}" if silence_s > 0 else "")
        if reply.data == "hangup" or (reply.result == "-1" and not await self._alive_after_failure()):
            self.hung_up = True
            raise CallerHungUp("RECORD FILE")
        return reply

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command("GET VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def moved(self) -> str:
        """After CallerHungUp: where the channel was sent ("connect", "callback", "fallback")
        when it was redirected rather than hung up; "" for a real hang-up.

        Whoever redirects a caller (a responder's leg in [pr-responder], the dispatcher) first
        sets SHARED(PR_MOVED) on the caller's channel; GET FULL VARIABLE still works on a
        channel res_agi considers dead (tests/captures/fastagi_redirect_*)."""
        try:
            reply = await self.command("GET FULL VARIABLE", "${SHARED(PR_MOVED)}")
        except (CallerHungUp, AgiCommandError):
            return ""
        return (reply.data or "") if reply.result == "1" else ""

    async def fail(self) -> None:
        """Make the dialplan see AGISTATUS=FAILURE (res_agi: a line starting "failure"),
        meaning "ring the fallback group": PR_AGI_GAVE_UP tells [pr-agi] not to take it for a
        server that refused the connection and ask the next one."""
        with contextlib.suppress(CallerHungUp, AgiCommandError, AgiProtocolError, OSError,
                                 RuntimeError):
            await self.set_variable("PR_AGI_GAVE_UP", "1")
        try:
            self.writer.write(b"failure\n")
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def close(self) -> None:
        try:
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, RuntimeError):
            pass
