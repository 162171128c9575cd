"""Asterisk's side of one FastAGI session (res/res_agi.c), as Asterisk 22.10.1 does it
on the wire: see /work/shared/reference/asterisk-captures/fastagi_*.txt.

The session connects, sends the agi_* block, then executes every line the server
sends as its own command (an embedded newline is a second command: that is how
injection happens, so the stand-in runs it and records it). It never closes the
socket after a hang-up; it sends an unsolicited ``HANGUP`` line and keeps serving the
commands allowed on a dead channel until the server closes.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import re
import threading
from typing import TYPE_CHECKING

from standin import sounds

# Re-exported: tests and older callers import these from here.
from standin.agi_commands import (  # noqa: F401
    AGI_PORT,
    COMMANDS,
    DEAD_511,
    Command,
    find_command,
    parse_args,
    parse_url,
)
from standin.channel import STATE_UP, AgiTranscript, Channel

if TYPE_CHECKING:
    from standin.pbx import StandinPBX

log = logging.getLogger(__name__)

AGI_VERSION = "22.10.1"
CONNECT_TIMEOUT_S = 2.0  # res_agi.c MAX_AGI_CONNECT (2000 ms)


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


class AgiSession:
    """One AGI() run: returns the AGISTATUS it ends with."""

    def __init__(self, pbx: StandinPBX, channel: Channel, url: str, args: list[str]) -> None:
        self.pbx = pbx
        self.ch = channel
        self.url = url
        self.args = args
        # AGI on a channel already hung up (the h extension) runs in dead mode from the start.
        self.dead = channel.interrupted
        self.status = "SUCCESS"
        self.transcript = AgiTranscript(url=url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.peer_gone = False

    # ---- wire ----------------------------------------------------------------------
    async def send(self, *lines: str) -> None:
        """Write lines (each ends in LF). A closed peer is not an error for Asterisk."""
        for line in lines:
            self.transcript.lines.append(("<<", line))
        if self.peer_gone or self.writer is None:
            return
        try:
            self.writer.write(b"".join(_encode(line) + b"\n" for line in lines))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.peer_gone = True
            self.transcript.lines.append(("--", "write failed: peer closed"))

    async def notify_hangup(self) -> None:
        """res_agi run_agi(): once the hang-up is seen, send HANGUP and go dead. An async
        goto (AMI Redirect, ChannelRedirect) is a soft hang-up to res_agi too: the same
        HANGUP, the same dead mode (tests/captures/fastagi_redirect_*)."""
        if self.dead or not self.ch.interrupted:
            return
        self.dead = True
        self.status = "HANGUP"
        if self.ch.get_variable("AGISIGHUP") != "no":
            await self.send("HANGUP")

    async def _read_line(self) -> bytes:
        assert self.reader is not None
        read = asyncio.ensure_future(self.reader.readline())
        if not self.dead:
            hang = asyncio.ensure_future(self.ch.interrupt_event.wait())
            await asyncio.wait({read, hang}, return_when=asyncio.FIRST_COMPLETED)
            hang.cancel()
            if not read.done():  # the caller hung up between commands: tell the server now
                await self.notify_hangup()
        try:
            return await read
        except (ConnectionError, OSError, ValueError):
            return b""

    # ---- the session -------------------------------------------------------------------
    def env_lines(self) -> list[str]:
        ch, script = self.ch, self.ch.script
        _, _, net_script = parse_url(self.url)
        name = script.raw_calleridname if script.raw_calleridname is not None \
            else (ch.caller_id_name or "unknown")
        lines = ["agi_network: yes"]
        if net_script:
            lines.append(f"agi_network_script: {net_script}")
        lines += [
            f"agi_request: {self.url}",
            f"agi_channel: {ch.name}",
            f"agi_language: {ch.language}",
            f"agi_type: {ch.tech}",
            f"agi_uniqueid: {ch.uniqueid}",
            f"agi_version: {AGI_VERSION}",
            f"agi_callerid: {ch.caller_id_num or 'unknown'}",
            f"agi_calleridname: {name}",
            f"agi_callingpres: {0 if ch.caller_id_num else 67}",
            "agi_callingani2: 0",
            "agi_callington: 0",
            "agi_callingtns: 0",
            f"agi_dnid: {ch.dnid or 'unknown'}",
            "agi_rdnis: unknown",
            f"agi_context: {ch.context}",
            f"agi_extension: {ch.exten}",
            f"agi_priority: {ch.priority}",
            "agi_enhanced: 0.0",
            "agi_accountcode: ",
            f"agi_threadid: {139658700000000 + os.getpid() * 1000 + threading.get_ident() % 1000}",
        ]
        lines += [f"agi_arg_{n}: {arg}" for n, arg in enumerate(self.args, 1)]
        lines += [f"{key}: {value}" for key, value in self.ch.script.extra_agi_env.items()]
        return [*lines, ""]

    async def run(self) -> str:
        self.ch.trace.transcripts.append(self.transcript)
        host, port, _ = parse_url(self.url)
        if not self.url.lower().startswith("agi://"):
            self.transcript.lines.append(("--", f"unsupported AGI url {self.url!r}"))
            return self._finish("FAILURE")
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=1 << 20), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            # res_agi.c handle_connection: "Couldn't connect to any host.  FastAGI failed."
            self.transcript.lines.append(("--", f"connect to {host}:{port} failed: {exc}"))
            return self._finish("FAILURE")
        self.transcript.lines.append(("--", f"connected to {host}:{port}"))
        try:
            await self.converse("server closed the socket")
        finally:
            if self.writer is not None:
                self.writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await self.writer.wait_closed()
        return self._finish(self.status)

    async def converse(self, closed: str) -> None:
        """run_agi(): send the agi_* lines, then answer commands until the other side closes
        (noted in the transcript as ``closed``) or reports failure."""
        await self.send(*self.env_lines())
        while True:
            raw = await self._read_line()
            if not raw:
                self.transcript.lines.append(("--", closed))
                return
            text = raw.decode("utf-8", "surrogateescape")
            line = text[:-1] if text.endswith("\n") else text
            self.transcript.lines.append((">>", line))
            if line[:7].lower() == "failure":  # run_agi: "inability to execute child"
                self.status = "FAILURE"
                return
            await self.notify_hangup()
            await self.handle(line)
            await self.notify_hangup()

    def _finish(self, status: str) -> str:
        self.transcript.status = status
        return status

    async def handle(self, line: str) -> None:
        """agi_handle_command(): find the command, check dead-channel rules, run it."""
        argv = parse_args(line)
        cmd = find_command(argv)
        if cmd is None:
            await self.send("510 Invalid or unknown command")
            return
        if self.dead and not cmd.dead_ok:
            await self.send(DEAD_511)
            return
        result = await getattr(self, "cmd_" + cmd.handler)(argv)
        if result == "usage":
            await self.send("520-Invalid command syntax.  Proper usage follows:",
                            *cmd.usage.split("\n"), "520 End of proper usage.")
        elif result == "fail" and not self.ch.interrupted:
            self.status = "FAILURE"  # e.g. STREAM FILE of a missing file (capture 02)

    # ---- commands (reply formats from the captures) ---------------------------------------
    async def cmd_answer(self, argv: list[str]) -> str:
        self.ch.state = STATE_UP
        await self.send("200 result=0")
        return "ok"

    async def cmd_noop(self, argv: list[str]) -> str:
        await self.send("200 result=0")
        return "ok"

    async def cmd_result0(self, argv: list[str]) -> str:
        """Commands the stand-in accepts without simulating (SAY *, SET MUSIC...)."""
        self.ch.trace.log.append(f"AGI command not simulated: {' '.join(argv)}")
        await self.send("200 result=0")
        return "ok"

    async def cmd_verbose(self, argv: list[str]) -> str:
        if len(argv) < 2:
            return "usage"
        await self.send("200 result=1")
        return "ok"

    async def cmd_set_variable(self, argv: list[str]) -> str:
        if len(argv) != 4:
            return "usage"
        self.ch.set_variable(argv[2], argv[3])
        await self.send("200 result=1")
        return "ok"

    async def cmd_get_variable(self, argv: list[str]) -> str:
        if len(argv) != 3:
            return "usage"
        value = self.ch.get_variable(argv[2])
        await self.send("200 result=0" if value is None else f"200 result=1 ({value})")
        return "ok"

    async def cmd_get_full_variable(self, argv: list[str]) -> str:
        if len(argv) not in (4, 5):
            return "usage"
        other = self.ch if len(argv) == 4 else self.pbx.channels.get(argv[4])
        if other is None:
            await self.send("200 result=0")
        else:
            await self.send(f"200 result=1 ({other.substitute(argv[3])})")
        return "ok"

    async def cmd_exec(self, argv: list[str]) -> str:
        if len(argv) < 2:
            return "usage"
        res = await self.pbx.interp.exec_app(self.ch, argv[1], argv[2] if len(argv) > 2 else "")
        if res is None:  # handle_exec: "Could not find application"
            self.ch.trace.log.append(f"AGI EXEC: no application {argv[1]}")
            res = -2
        await self.send(f"200 result={res}")
        return "ok"

    async def cmd_hangup(self, argv: list[str]) -> str:
        if len(argv) > 2:
            return "usage"
        target = self.ch if len(argv) == 1 else self.pbx.channels.get(argv[1])
        if target is None:
            await self.send("200 result=-1")
            return "ok"
        target.request_hangup("agi", at="AGI HANGUP")
        await self.send("200 result=1")
        return "ok"

    async def cmd_channel_status(self, argv: list[str]) -> str:
        if len(argv) not in (2, 3):
            return "usage"
        target = self.ch if len(argv) == 2 else self.pbx.channels.get(argv[2])
        await self.send(f"200 result={target.state if target else -1}")
        return "ok"

    async def cmd_database(self, argv: list[str]) -> str:
        op = argv[1].lower()
        db = self.pbx.astdb
        need = {"get": (4,), "put": (5,), "del": (4,), "deltree": (3, 4)}[op]
        if len(argv) not in need:
            return "usage"
        if op == "get":
            value = db.get((argv[2], argv[3]))
            await self.send("200 result=0" if value is None else f"200 result=1 ({value})")
        elif op == "put":
            db[(argv[2], argv[3])] = argv[4]
            await self.send("200 result=1")
        elif op == "del":
            await self.send(f"200 result={1 if db.pop((argv[2], argv[3]), None) else 0}")
        else:
            keys = [k for k in db if k[0] == argv[2] and (len(argv) == 3 or
                                                         k[1].startswith(argv[3]))]
            for k in keys:
                del db[k]
            await self.send(f"200 result={1 if keys else 0}")
        return "ok"

    async def cmd_stream_file(self, argv: list[str]) -> str:
        if len(argv) not in (4, 5):
            return "usage"
        if len(argv) == 5 and not argv[4].lstrip("-").isdigit():
            return "usage"
        samples, interrupted = await self.pbx.play_prompt(self.ch, argv[2], argv[3])
        if samples is None:
            await self.send("200 result=-1 endpos=0")
            return "fail"
        if interrupted:
            await self.send(f"200 result=-1 endpos={self.pbx.played_samples(samples)}")
            return "fail"
        if self.ch.last_key:  # a timed key, one of the escape digits (capture 02)
            await self.send(f"200 result={ord(self.ch.last_key[0])} endpos={self.ch.last_endpos}")
            return "ok"
        # A plain answer waits for the question: the scripted caller hears prompts out.
        await self.send(f"200 result=0 endpos={samples}")
        return "ok"

    async def cmd_get_option(self, argv: list[str]) -> str:
        if len(argv) not in (4, 5):
            return "usage"
        samples, interrupted = await self.pbx.play_prompt(self.ch, argv[2])
        if samples is None:
            await self.send("200 result=-1 endpos=0")
            return "fail"
        if interrupted or self.ch.hung_up:
            await self.send(f"200 result=-1 endpos={self.pbx.played_samples(samples)}")
            return "fail"
        token = self._answer("GET OPTION")
        digit = token[0] if token != "-" and token[0] in argv[3] else ""
        await self.send(f"200 result={ord(digit) if digit else 0} endpos={samples}")
        return "ok"

    def _answer(self, point: str) -> str:
        # Scripts run inside [pr-agi] (the FastAGI failover subroutine): the caller is where
        # it was called from.
        where = self.ch.context
        if where == "pr-agi":
            where = self.ch.get_variable("PR_AGI_CONTEXT") or where
        callback = where == "pr-callback" and bool(self.ch.script.callback_keys)
        token = self.ch.caller.callback_answer() if callback else self.ch.caller.answer()
        self.ch.trace.keys.append((point, token))
        return token

    async def cmd_get_data(self, argv: list[str]) -> str:
        if len(argv) < 3:
            return "usage"
        timeout_ms = _atoi(argv[3]) if len(argv) >= 4 else 0
        maxdigits = _atoi(argv[4]) if len(argv) >= 5 else 1024
        maxdigits = maxdigits if maxdigits > 0 else 1024
        keys = ""
        if argv[2]:
            for part in argv[2].split("&"):  # ast_app_getdata plays '&'-joined prompts
                await self.pbx.play_prompt(self.ch, part, "0123456789*#")
                keys = self.ch.last_keys
                if self.ch.interrupted or keys:
                    break
        if self.ch.interrupted:
            await self.send("200 result=-1")
            return "ok"
        if not keys:
            # A timed answer due while GET DATA waits for digits counts here.
            now = self.ch.trace.sim_time_s
            pressed = self.ch.caller.pressed_between(now, now + timeout_ms / 1000)
            if pressed is not None:
                keys, after = pressed
                self.ch.trace.keys.append(("GET DATA", f"{keys}@{after:g}"))
                if await self.pbx.wait(self.ch, after):
                    await self.send("200 result=-1")
                    return "ok"
        token = keys or self._answer("GET DATA")
        digits, timed_out = self.ch.caller.get_data_digits(token, maxdigits)
        # The timeout passes in (scaled) real time: a phone that presses nothing holds the
        # line that long, and the dispatcher's timers run in real time meanwhile.
        if timed_out and await self.pbx.wait(self.ch, timeout_ms / 1000):
            await self.send("200 result=-1")  # hung up while waiting (capture 08a)
            return "ok"
        await self.send(f"200 result={digits}" + (" (timeout)" if timed_out else ""))
        return "ok"

    async def cmd_wait_for_digit(self, argv: list[str]) -> str:
        if len(argv) != 4 or not argv[3].lstrip("-").isdigit():
            return "usage"
        if self.ch.interrupted:
            await self.send("200 result=-1")
            return "fail"
        token = self._answer("WAIT FOR DIGIT")
        if token == "-":
            if await self.pbx.wait(self.ch, max(int(argv[3]), 0) / 1000):
                await self.send("200 result=-1")
                return "fail"
            await self.send("200 result=0")
        else:
            await self.send(f"200 result={ord(token[0])}")
        return "ok"

    async def cmd_record_file(self, argv: list[str]) -> str:
        if len(argv) < 6 or not argv[5].lstrip("-").isdigit():
            return "usage"
        max_ms = int(argv[5])
        opts = argv[6:9]
        silence_ms = next((_atoi(o[2:]) * 1000 for o in opts if o.startswith("s=")), 0)
        # handle_recordfile: argv[6] that is neither an offset nor k=v, or any argv[7]
        # without '=', plays a beep first (it is not in the recording).
        if (len(argv) > 6 and not argv[6].lstrip("-").isdigit() and "=" not in argv[6]) or (
                len(argv) > 7 and "=" not in argv[7]):
            self.ch.advance_time(0.25)
        ending = self.ch.script.record_end
        if any(d in argv[4] for d in "0123456789*"):
            # A recording any menu key ends (a spoken menu choice) is an input point: the
            # scripted answer is a key pressed at once, or "-": the caller speaks (or not).
            token = self._answer("RECORD FILE")
            if token != "-" and token[0] in argv[4]:
                path = self.pbx.recording_path(argv[2], argv[3])
                sounds.write_recording(path, argv[3], array.array("h"))
                self.ch.trace.recordings.append(path)
                await self.send(f"200 result={ord(token[0])} (dtmf) endpos=0")
                return "ok"
            ending = "silence"
        take = sounds.simulate_recording(self.ch.script.speech, max_ms, silence_ms, argv[4],
                                         ending)
        path = self.pbx.recording_path(argv[2], argv[3])
        try:
            sounds.write_recording(path, argv[3], take.samples)
        except OSError as exc:
            self.ch.trace.log.append(f"RECORD FILE {path}: {exc}")
            await self.send("200 result=-1 (writefile)")
            return "fail"
        self.ch.trace.recordings.append(path)
        if await self.pbx.wait(self.ch, take.elapsed_ms / 1000):
            # Hung up or moved on while recording: what was said so far is in the file
            # (tests/captures/fastagi_redirect_recordfile.txt).
            part = take.samples[:len(take.samples) // 2]
            sounds.write_recording(path, argv[3], part)
            await self.send(f"200 result=-1 (hangup) endpos={len(part)}")
            return "fail"
        await self.send(f"200 result={take.result} ({take.marker}) endpos={len(take.samples)}")
        if take.marker == "hangup":
            self.ch.request_hangup("caller", at="RECORD FILE")
            return "fail"
        return "ok"


def _atoi(text: str) -> int:
    m = re.match(r"\s*[-+]?\d+", text)
    return int(m.group()) if m else 0
