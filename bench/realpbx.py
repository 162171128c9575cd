"""The real Asterisk for the benchmarks' `--pbx real` mode (bench_agi.py, bench_dispatch.py).

localpbx.harness.RealLine renders the PBX from our configuration and starts it with the
world Asterisk; this module adds what a benchmark needs on top of it:

- silent callers without SIP: AMI Originate of ``Local/6175550100@from-direct/n`` with
  ``Application: Wait``: the ;2 half runs our dialplan (the IVR, then the waiting room),
  the ;1 half only listens. Their uniqueids (ChannelId / OtherChannelId) carry a tag, so
  the events of one run are told apart from everything else on the PBX;
- event times as Asterisk stamps them: ``timestampevents`` is turned on in this run's
  rendered manager.conf (a copy under the run's temporary folder, then `manager reload`),
  because the time an event reaches this process also holds this process's own queueing
  (it parses every event the PBX sends), and the gaps measured are about a millisecond;
- short tone prompts (every file the line plays, 0.4 s), so a silent call lasts seconds;
- for responders' phones (real SIP and RTP between the PBX and the world), wider RTP port
  ranges: localpbx gives each Asterisk 200 ports, i.e. 100 legs, and 50 callers ringing 4
  phones each make 200 (rtp.conf edited in the run's copy, then res_rtp_asterisk reloaded).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from localpbx.ami import AmiConnection, Message
from localpbx.harness import RealLine
from localpbx.install import installed

T = TypeVar("T")
NOT_INSTALLED = "Asterisk is not installed: run scripts/install-asterisk"
DIRECT_LINE = "Local/6175550100@from-direct/n"  # /n: no optimisation, ;2 stays a channel of its own
# Each question waits its shortest allowed time (crisisline.config: 1000-30000 ms): a silent
# caller spends a second per question, as fast as a call can honestly go.
QUESTION_TIMEOUTS = {"PR_MENU_TIMEOUT_MS": "1000", "PR_ZIP_TIMEOUT_MS": "1000",
                     "PR_CONSENT_TIMEOUT_MS": "1000"}
SILENT_KEYS = "- - -"  # menu, ZIP, consent: nothing pressed (default language, no ZIP, no message)


def require_asterisk() -> Path:
    """The install prefix, or exit 2 with what to do (before anything is rendered)."""
    prefix = installed()
    if prefix is None:
        print(NOT_INSTALLED, file=sys.stderr)
        raise SystemExit(2)
    return prefix


def status_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def event_time(event: Message) -> float:
    """When Asterisk produced the event (its Timestamp header), else when it arrived."""
    try:
        return float(event["Timestamp"])
    except (KeyError, ValueError):
        return time.time()


async def enable_event_timestamps(line: RealLine) -> bool:
    """Turn on timestampevents in the PBX's rendered manager.conf and reload the manager
    (logged-in sessions stay). True when events now carry a Timestamp."""
    assert line.layout is not None and line.pbx_proc is not None and line.observer is not None
    conf = line.layout.etc / "manager.conf"
    text = conf.read_text()
    if "timestampevents" not in text:
        conf.write_text(text.replace("[general]\n", "[general]\ntimestampevents = yes\n", 1))
    await asyncio.to_thread(line.pbx_proc.cli, "manager reload")
    reply = await line.observer.action({"Action": "Ping"})
    return "Timestamp" in reply


def _udp_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False


def rtp_ranges(count: int, size: int) -> list[tuple[int, int]]:
    """``count`` even-aligned UDP ranges of ``size`` ports in 11000-19999: apart from each
    other, below localpbx's own choices (20000-30000) and the kernel's ephemeral ports."""
    low, high = 11000, 20000
    for _ in range(50):
        starts = sorted(random.sample(range(low, high - size, 2), count))
        if any(b - a < size for a, b in itertools.pairwise(starts)):
            continue
        if all(_udp_free(p) for s in starts for p in (s, s + size // 2, s + size - 2)):
            return [(s, s + size - 1) for s in starts]
    raise OSError(f"no {count} free RTP ranges of {size} ports")


async def widen_rtp(line: RealLine, size: int) -> list[tuple[int, int]]:
    """Give the PBX and the world ``size`` RTP ports each (``size``/2 legs), in the run's own
    rendered rtp.conf, then `module reload res_rtp_asterisk.so`; checked with `rtp show
    settings`. Returns the ranges (PBX, world)."""
    assert line.layout is not None and line.world is not None
    assert line.pbx_proc is not None and line.world_proc is not None
    ranges = rtp_ranges(2, size)
    for conf, proc, (start, end) in ((line.layout.etc / "rtp.conf", line.pbx_proc, ranges[0]),
                                     (line.world.conf.parent / "rtp.conf", line.world_proc,
                                      ranges[1])):
        text = re.sub(r"(?m)^rtpstart\s*=.*$", f"rtpstart = {start}", conf.read_text())
        conf.write_text(re.sub(r"(?m)^rtpend\s*=.*$", f"rtpend = {end}", text))
        await asyncio.to_thread(proc.cli, "module reload res_rtp_asterisk.so")
        shown = await asyncio.to_thread(proc.cli, "rtp show settings")
        if not re.search(rf"Port start:\s+{start}\b", shown):
            raise RuntimeError(f"Asterisk did not take RTP ports {start}-{end}: {shown.strip()}")
    return ranges


async def start_line(*, state: Path, prompts: Path, agi_url: str, desk: bool = False,
                     extra_env: dict[str, str] | None = None,
                     rtp_ports: int = 0) -> tuple[RealLine, bool]:
    """The PBX and the world, started, with event timestamps when Asterisk agrees and, with
    ``rtp_ports``, that many RTP ports each; both are stopped again if anything here fails.
    Returns (line, timestamps on)."""
    line = RealLine(state=state, prompts=prompts, agi_url=agi_url, desk=desk, extra_env=extra_env)
    try:
        await line.start()
        stamped = await enable_event_timestamps(line)
        if rtp_ports:
            await widen_rtp(line, rtp_ports)
    except BaseException:
        await line.stop()
        raise
    return line, stamped


def asterisk_errors(line: RealLine, since: int) -> list[str]:
    """Lines the PBX logged (logger.conf: errors only) after byte offset ``since``."""
    if line.layout is None or not line.layout.log.exists():
        return []
    with line.layout.log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [ln for ln in text.splitlines() if "ERROR" in ln or "WARNING" in ln]


def log_size(line: RealLine) -> int:
    return line.layout.log.stat().st_size if line.layout and line.layout.log.exists() else 0


async def connect_ami(line: RealLine) -> AmiConnection:
    """The dispatcher's AMI user (allowed to Originate), without events: the observer
    already hears every one."""
    assert line.layout is not None
    return await AmiConnection.connect(line.layout.host, line.layout.ami_port, "peoples-response",
                                       line.ami_secret, events="off")


class SilentCallers:
    """Callers who press nothing, placed as Local channels; what the PBX did with each.

    Caller i is ``<tag>-<i>-a`` (;1, waits silently) and ``<tag>-<i>-b`` (;2, runs our
    dialplan); everything is keyed by i and timed with event_time. With
    ``hang_up_in_room`` a caller hangs up the moment they are in their room (ConfbridgeJoin),
    so the h extension's `hangup` AGI session runs as well, or in the fallback group.
    """

    def __init__(self, line: RealLine, ami: AmiConnection, tag: str, *,
                 hang_up_in_room: bool) -> None:
        assert line.observer is not None
        self.line = line
        self.ami = ami
        self.tag = tag
        self.hang_up_in_room = hang_up_in_room
        self.placed_at = 0.0
        self.channels: dict[int, str] = {}  # i -> the ;2 channel's name
        self.joined: dict[int, float] = {}  # i -> its first ConfbridgeJoin into call-<id>
        self.rooms: dict[int, str] = {}
        self.gone: dict[int, float] = {}  # i -> the ;2 channel's Hangup (its h extension ran)
        self.fallback: set[int] = set()
        self.agi_status: dict[int, list[str]] = {}
        self.refused: list[str] = []
        self.listeners: list[Callable[[int, Message], None]] = []
        self._changed = asyncio.Event()
        line.observer.subscribers.append(self.on_event)

    def close(self) -> None:
        if self.line.observer is not None and self.on_event in self.line.observer.subscribers:
            self.line.observer.subscribers.remove(self.on_event)

    def index(self, uniqueid: str) -> tuple[int, str] | None:
        """(i, "a" | "b") for one of ours, else None."""
        head, _, rest = uniqueid.partition("-")
        number, _, half = rest.partition("-")
        if head != self.tag or half not in ("a", "b") or not number.isdigit():
            return None
        return int(number), half

    def on_event(self, event: Message) -> None:
        found = self.index(event.get("Uniqueid", ""))
        if found is None:
            return
        i, half = found
        name = event.get("Event", "")
        if name == "OriginateResponse" and event.get("Response") != "Success":
            self.refused.append(f"caller {i}: Originate failed, reason {event.get('Reason')}")
        if half != "b":
            self._changed.set()
            return
        if name == "Newchannel":
            self.channels[i] = event.get("Channel", "")
        elif name == "ConfbridgeJoin" and i not in self.joined \
                and event.get("Conference", "").startswith("call-"):
            self.joined[i] = event_time(event)
            self.rooms[i] = event.get("Conference", "")
            if self.hang_up_in_room:
                self.hangup(i)
        elif name == "Newexten" and event.get("Context") == "pr-fallback" \
                and i not in self.fallback:
            self.fallback.add(i)
            if self.hang_up_in_room:  # nobody answers the fallback group here: don't wait on it
                self.hangup(i)
        elif name == "VarSet" and event.get("Variable") == "AGISTATUS":
            self.agi_status.setdefault(i, []).append(event.get("Value", ""))
        elif name == "Hangup":
            self.gone[i] = event_time(event)
        for listener in self.listeners:
            listener(i, event)
        self._changed.set()

    async def place(self, n: int) -> None:
        """All n at once, as the stand-in's gather does; returns once Asterisk queued them."""
        self.placed_at = time.time()
        replies = await asyncio.gather(*(self.ami.action({
            "Action": "Originate", "Channel": DIRECT_LINE, "Application": "Wait", "Data": "600",
            "Async": "true", "ChannelId": f"{self.tag}-{i}-a",
            "OtherChannelId": f"{self.tag}-{i}-b"}, timeout=60) for i in range(n)),
            return_exceptions=True)
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                self.refused.append(f"caller {i}: {type(reply).__name__}: {reply}")
            elif reply.get("Response") != "Success":
                self.refused.append(f"caller {i}: {reply.get('Message')}")

    def hangup(self, i: int) -> None:
        """The caller hangs up (the ;2 half, where our dialplan runs: its h extension next)."""
        if i in self.channels and i not in self.gone:
            self.ami.send({"Action": "Hangup", "Channel": self.channels[i]})

    def hangup_all(self) -> None:
        for i in list(self.channels):
            self.hangup(i)

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Until ``done()`` (checked on every event of ours), or the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # (Ctrl-C, SIGTERM) that lands as the event fires, and this loop fires a lot.
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=min(left, 1.0))
            finally:
                waiter.cancel()
        return True


async def wait_ready(proc: subprocess.Popen, marker: bytes, timeout: float, what: str) -> None:
    """Until the process prints its ready line (FastAGI on / dispatcher: AMI)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    if marker not in line:
        raise RuntimeError(f"{what} did not start: {line!r}")


async def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; by the Popen we started, never by name."""
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    if proc.stdout is not None:
        proc.stdout.close()


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, where Ctrl-C or SIGTERM ends the run quietly with exit code 130 once
    the finally blocks have stopped Asterisk and the subprocesses."""
    async def guarded() -> T:
        cancel_on_sigterm()
        return await main

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: Asterisk and the benchmark's processes are stopped", file=sys.stderr)
        raise SystemExit(130) from None


def cancel_on_sigterm() -> None:
    """SIGTERM ends the run as Ctrl-C does (asyncio.run cancels the main task on SIGINT):
    the finally blocks stop Asterisk and the subprocesses."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
