"""FastAGI server vs classic AGI: N concurrent scripted calls (1, 100, 1000) through our dialplan.

FastAGI: one `peoples-response agi` process on loopback, all N calls at once, real Redis.
Baseline, same run: the same flow served the classic way, as Asterisk's AGI(script) runs it:
one `peoples-response agi --classic` process per AGI session over its stdin/stdout, fed
exactly what Asterisk sends (agi_request = the script, agi_arg_1 = "intake?source=direct";
no agi_network lines), the replies coming from the stand-in's own Asterisk-side commands.

The stand-in PBX (time_scale=0: prompts aren't waited for) runs dialplan/extensions.conf
in this process: every call runs `intake` from [pr-intake] and, once the caller leaves the
waiting room, `hangup` from the h extension; both are AGI sessions in both modes (so a
classic call launches two processes, one after the other).

Printed per N: calls/s; p50/p99 of the AGI command turnaround, measured on the PBX side
from a reply written to the next command read (the server's think time; the first command
after the agi_* block is reported apart, as it includes a classic process's start-up);
the AGI side's CPU seconds per call (FastAGI: /proc/<pid>/stat of the server; classic: each
child's own rusage from wait4); peak memory (FastAGI: VmHWM, and (VmHWM - idle RSS) / N per
call; classic: the largest sum of the children's RSS alive at once, and the mean peak RSS
of one child per call); how many calls reached the Redis queue ("queued" events) and their
waiting room. Ratios are FastAGI/classic.

Classic runs at most --classic-concurrency processes at once (1000 at once would need
~40 GB) and, as each process spends about half a CPU-second starting Python and loading the
prompt catalog, at most --classic-max-calls calls per size: calls/s and the per-call
figures are rates, and the output says when a size was sampled. Redis database 15 is
flushed at start, between runs and at the end.

--pbx real: the same N silent callers (nothing pressed: default language, ZIP skipped, no
message; 0.4 s tone prompts; each question waits 1 s) through the real Asterisk rendered
from our configuration (Local channels into [from-direct], no SIP) and, in the same run,
through the stand-in at time scale 1 (prompts and timeouts in real time), both served by
a `peoples-response agi` process. The real PBX's turnaround is read from its AMI events
(AGIExecEnd -> the next AGIExecStart of the channel, as Asterisk timestamps them); the
PBX's own CPU per call is the Asterisk process's, next to this process's for the
stand-in (it runs here). Ratios are real/stand-in.

    .venv/bin/python bench/bench_agi.py [--quick | --sizes 1,100,1000]
    .venv/bin/python bench/bench_agi.py --pbx real [--sizes 1,100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import free_port, pct, stat_cpu_seconds  # noqa: E402
from bench.realpbx import (  # noqa: E402
    QUESTION_TIMEOUTS,
    SILENT_KEYS,
    SilentCallers,
    asterisk_errors,
    connect_ami,
    event_time,
    log_size,
    require_asterisk,
    run_interruptible,
    start_line,
    stop_process,
    wait_ready,
)
from crisisline import config  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.stores.calls import EVENTS  # noqa: E402
from localpbx.ami import Message  # noqa: E402
from localpbx.tones import short_prompts  # noqa: E402
from standin.agi_commands import parse_url  # noqa: E402
from standin.agi_session import CONNECT_TIMEOUT_S, AgiSession  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.dialplan import separate_args  # noqa: E402
from standin.pbx import StandinPBX  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
CORE_SOUNDS = [Path("/usr/share/asterisk/sounds")]
KEYS = "2 02121 2"  # Spanish, ZIP 02121, no recording: the same flow in both modes
CLASSIC_SCRIPT = "peoples-response-agi"  # what AGI(<script>,...) names; agi_request carries it
AGI_CMD = [sys.executable, "-m", "peoples_response.cli", "agi"]
CALLS_TIMEOUT_S = 600.0


# ---- measuring ------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process: the sum over its threads of schedstat's
    on-CPU nanoseconds (stat's utime + stime tick at 10 ms, too coarse for one call); the
    asyncio executor's threads live as long as the process, so none is lost."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process in kB (0 once it is gone or a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def listen_overflows() -> int:
    """TcpExt ListenOverflows of this network namespace: connects the backlog had no room for."""
    try:
        head, values = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
                        if line.startswith("TcpExt:")][:2]
        return int(dict(zip(head, values, strict=True)).get("ListenOverflows", 0))
    except (OSError, ValueError):
        return 0


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def raise_nofile(n: int) -> None:
    """Each FastAGI call holds a socket at both ends (the server inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * n + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


@dataclass
class Timing:
    turnaround: list[float] = field(default_factory=list)  # reply written -> next command read
    first: list[float] = field(default_factory=list)  # agi_* block written -> first command read


# ---- the stand-in, timed, and its classic twin -------------------------------------------
class TimedAgiSession(AgiSession):
    """The stand-in's Asterisk side of a session, with the server's think time timestamped."""

    _sent_at: float | None = None
    _first = True

    async def send(self, *lines: str) -> None:
        await super().send(*lines)
        self._sent_at = time.perf_counter()

    async def _read_line(self) -> bytes:
        raw = await super()._read_line()
        if raw and self._sent_at is not None:
            timing: Timing = self.pbx.timing  # type: ignore[attr-defined]
            (timing.first if self._first else timing.turnaround).append(
                time.perf_counter() - self._sent_at)
            self._first = False
        self._sent_at = None
        return raw


class ClassicAgiSession(TimedAgiSession):
    """AGI(script,args): a process per session, its stdin/stdout instead of a socket.

    The command loop is standin.agi_session.AgiSession.converse, with the connect replaced by
    a spawn; the commands and replies are the stand-in's own.
    """

    def __init__(self, pbx: StandinPBX, channel, url: str, args: list[str]) -> None:
        super().__init__(pbx, channel, url, args)
        # AGI(agi://host/intake?source=direct) becomes AGI(peoples-response-agi,intake?source=direct)
        self.args = [parse_url(url)[2], *args]

    def env_lines(self) -> list[str]:
        # res_agi setup_env() for a script: no agi_network lines, agi_request is the script.
        out = []
        for line in super().env_lines():
            if line.startswith("agi_network"):
                continue
            out.append(f"agi_request: {CLASSIC_SCRIPT}" if line.startswith("agi_request:") else line)
        return out

    async def run(self) -> str:
        self.ch.trace.transcripts.append(self.transcript)
        pool: ClassicPool = self.pbx.classic  # type: ignore[attr-defined]
        async with pool.slots:
            try:
                child = await pool.spawn()
            except OSError as exc:
                self.transcript.lines.append(("--", f"could not start the script: {exc}"))
                return self._finish("FAILURE")
            self.reader, self.writer = child.reader, child.writer
            self.transcript.lines.append(("--", f"started pid {child.pid}"))
            try:
                await self.converse("script closed its stdout")
            finally:
                pool.note_hwm(child.pid)  # its stdout just closed: it is exiting, not yet gone
                self.writer.close()
                await pool.reap(child)
        return self._finish(self.status)


@dataclass
class Child:
    pid: int
    proc: subprocess.Popen
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class ClassicPool:
    """Launches `agi --classic` processes (at most `cap` alive) and keeps what they cost."""

    def __init__(self, env: dict[str, str], log: IO[bytes], cap: int) -> None:
        self.env = env
        self.log = log
        self.slots = asyncio.Semaphore(cap)
        self.live: set[int] = set()
        self.cpu_s = 0.0
        self.hwm_kb: dict[int, int] = {}  # pid -> its peak RSS (VmHWM) as last seen
        self.peak_kb: list[int] = []  # one per process, once it has exited
        self.peak_sum_kb = 0
        self.exit_codes: list[int] = []

    async def spawn(self) -> Child:
        proc = subprocess.Popen([*AGI_CMD, "--classic"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=self.log, env=self.env, cwd=ROOT)
        self.live.add(proc.pid)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            proc.stdin)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return Child(proc.pid, proc, reader, writer)

    def note_hwm(self, pid: int) -> None:
        self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), status_kb(pid, "VmHWM"))

    async def reap(self, child: Child) -> None:
        """Wait for the exit (as Asterisk does) and take the child's CPU from wait4.

        Not its ru_maxrss: exec() carries the parent's (this process's) peak RSS over into
        the child's, so the peak RSS comes from /proc VmHWM, read while the child lives.
        """
        loop = asyncio.get_running_loop()
        fd = os.pidfd_open(child.pid)
        try:
            exited = loop.create_future()
            loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
            try:
                await asyncio.wait_for(exited, 30)
            except TimeoutError:
                child.proc.kill()
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
        _, status, ru = os.wait4(child.pid, 0)
        child.proc.returncode = os.waitstatus_to_exitcode(status)
        self.live.discard(child.pid)
        self.cpu_s += ru.ru_utime + ru.ru_stime
        self.peak_kb.append(self.hwm_kb.pop(child.pid, 0))
        self.exit_codes.append(child.proc.returncode)

    async def sample(self, stop: asyncio.Event) -> None:
        """The largest total RSS of the children alive at once, and each one's peak."""
        while not stop.is_set():
            pids = list(self.live)
            self.peak_sum_kb = max(self.peak_sum_kb, sum(status_kb(pid, "VmRSS") for pid in pids))
            for pid in pids:
                self.note_hwm(pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)


class BenchPBX(StandinPBX):
    """The stand-in with a chosen session class for AGI(); everything else is the stand-in's."""

    def __init__(self, *args, session_class: type[AgiSession], classic: ClassicPool | None = None,
                 **kw) -> None:
        super().__init__(*args, **kw)
        self.session_class = session_class
        self.classic = classic
        self.timing = Timing()
        self.interp.apps["agi"] = self._app_agi

    async def _app_agi(self, ch, data: str) -> int:  # as StandinPBX._app_agi, with session_class
        args = separate_args(data)
        status = await self.session_class(self, ch, args[0].strip(), args[1:]).run()
        ch.set_variable("AGISTATUS", status)
        ch.trace.agi_status.append(status)
        return -1 if status == "HANGUP" else 0


# ---- one run ---------------------------------------------------------------------------
@dataclass
class Row:
    mode: str
    calls: int
    wall_s: float
    timing: Timing
    cpu_s: float
    peak_kb: int
    per_call_kb: float
    queued: int = 0
    in_room: int = 0
    fallback: int = 0
    not_success: int = 0
    errors: int = 0
    log_lines: int = 0
    first_log_line: str = ""
    why: Counter[str] = field(default_factory=Counter)  # a failed session's last note
    note: str = ""
    pbx: str = "stand-in"
    pbx_cpu_s: float = float("nan")  # the PBX's own CPU (--pbx real: stand-in vs Asterisk)
    issues: list[str] = field(default_factory=list)  # what went wrong on the real PBX

    @property
    def rate(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def cpu_per_call(self) -> float:
        return self.cpu_s / self.calls if self.calls else float("nan")

    @property
    def pbx_cpu_per_call(self) -> float:
        return self.pbx_cpu_s / self.calls if self.calls else float("nan")


def make_pbx(prompts: Path, agi_url: str, time_scale: float = 0.0, **kw) -> BenchPBX:
    return BenchPBX(ROOT / "dialplan" / "extensions.conf", globals_overrides={"PR_AGI": agi_url},
                    sounds_dirs=CORE_SOUNDS, prompts_dir=prompts, prompts_prefix="peoples-response",
                    time_scale=time_scale, **kw)


async def place_calls(pbx: BenchPBX, n: int, keys: str = KEYS) -> tuple[float, list]:
    """All n at once; each returns when its call has ended (stay_s=0: the caller hangs up
    as they reach the room, then the h extension's session runs)."""
    started = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(
        *(pbx.place_call("from-direct", "6175550100", CallerScript(keys=keys, stay_s=0))
          for _ in range(n)), return_exceptions=True), CALLS_TIMEOUT_S)
    return time.perf_counter() - started, results


def tally(row: Row, results: list, r: redis.Redis) -> Row:
    for res in results:
        if isinstance(res, BaseException):
            row.errors += 1
            row.why[f"stand-in error: {type(res).__name__}: {str(res)[:80]}"] += 1
            continue
        row.in_room += res.room is not None
        row.fallback += res.fallback_dialed
        row.not_success += any(s != "SUCCESS" for s in res.agi_status)
        for transcript in res.transcripts:
            if transcript.status != "SUCCESS":
                notes = [text for way, text in transcript.lines if way in ("--", ">>")]
                why = re.sub(r"\b\d{4,}\b", "#", notes[-1] if notes else "(nothing)")[:90]
                if why.endswith("failed: "):  # the stand-in's connect: an empty message is a timeout
                    why += f"timed out ({CONNECT_TIMEOUT_S:g} s, as res_agi's MAX_AGI_CONNECT)"
                row.why[f"{transcript.status}: {why}"] += 1
    row.queued = len({body[b"call_id"] for _, body in r.xrange(EVENTS)
                      if body.get(b"type") == b"queued"})
    return row


def read_log(row: Row, path: Path) -> None:
    lines = path.read_bytes().decode(errors="replace").splitlines() if path.exists() else []
    row.log_lines = len(lines)
    row.first_log_line = lines[0][:160] if lines else ""


async def run_fastagi(n: int, env: dict[str, str], prompts: Path, tmp: Path,
                      r: redis.Redis, *, keys: str = KEYS, time_scale: float = 0.0,
                      wall_to_room: bool = False) -> Row:
    """The FastAGI server on the stand-in. With ``wall_to_room`` (the --pbx real
    comparison) the wall ends at the last caller's ConfbridgeJoin, as on the real PBX,
    rather than when the last call has ended."""
    r.flushdb()
    port = free_port()
    log = tmp / f"fastagi-{n}.log"
    with log.open("wb") as err:
        server = subprocess.Popen([*AGI_CMD, "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 30)
        if b"FastAGI on" not in ready:
            raise RuntimeError(f"FastAGI server did not start: {ready!r}; see {log}")
        idle_kb = status_kb(server.pid, "VmRSS")
        cpu0 = cpu_seconds(server.pid)
        overflows0 = listen_overflows()
        pbx = make_pbx(prompts, f"agi://127.0.0.1:{port}", time_scale,
                       session_class=TimedAgiSession)
        joins: list[float] = []
        if wall_to_room:
            pbx.subscribe(lambda e: joins.append(time.perf_counter())
                          if e.get("Event") == "ConfbridgeJoin" else None)
        own0 = time.process_time()  # the stand-in runs in this process: its CPU is ours
        started = time.perf_counter()
        wall, results = await place_calls(pbx, n, keys)
        if wall_to_room and joins:
            wall = max(joins) - started
        own = time.process_time() - own0
        cpu = cpu_seconds(server.pid) - cpu0
        hwm = status_kb(server.pid, "VmHWM")
        overflows = listen_overflows() - overflows0
        await pbx.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
    row = Row("FastAGI", n, wall, pbx.timing, cpu, hwm, (hwm - idle_kb) / n,
              note=f"all {n} at once; idle RSS {idle_kb / 1024:.0f} MB; "
                   f"listen backlog overflows (TcpExt ListenOverflows): {overflows}",
              pbx_cpu_s=own)
    row = tally(row, results, r)
    read_log(row, log)
    r.flushdb()
    return row


async def run_classic(n: int, cap: int, env: dict[str, str], prompts: Path, tmp: Path,
                      r: redis.Redis) -> Row:
    r.flushdb()
    log = tmp / f"classic-{n}.log"
    with log.open("wb") as err:
        pool = ClassicPool(env, err, cap)
        pbx = make_pbx(prompts, "agi://classic.invalid", session_class=ClassicAgiSession,
                       classic=pool)
        stop = asyncio.Event()
        sampler = asyncio.create_task(pool.sample(stop))
        try:
            wall, results = await place_calls(pbx, n)
        finally:
            stop.set()
            await sampler
            await pbx.close()
    seen = [kb for kb in pool.peak_kb if kb > 0]
    per_call_kb = sum(seen) / len(seen) if seen else float("nan")
    row = Row("classic", n, wall, pbx.timing, pool.cpu_s, pool.peak_sum_kb, per_call_kb,
              note=f"<= {cap} processes at once; {len(pool.peak_kb)} processes launched, "
                   f"{sum(c != 0 for c in pool.exit_codes)} exited non-zero, "
                   f"{len(pool.peak_kb) - len(seen)} gone before their VmHWM was read")
    row = tally(row, results, r)
    read_log(row, log)
    r.flushdb()
    return row


# ---- --pbx real: the same silent callers through the real Asterisk -------------------------
class AgiGaps:
    """The FastAGI server's think time as the real Asterisk reports it over AMI: per channel,
    an AGIExecEnd (the reply written) to the next AGIExecStart (the next command read), as
    the stand-in's TimedAgiSession measures it inside the stand-in. A session's first
    command is timed from the AGI application's Newexten, so it also holds the connect and
    the agi_* block (the stand-in's starts once the block is written)."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self._session: dict[int, float] = {}
        self._reply: dict[int, float] = {}

    def on_event(self, i: int, event: Message) -> None:
        name = event.get("Event")
        if name == "Newexten" and event.get("Application") == "AGI":
            self._session[i] = event_time(event)
            self._reply.pop(i, None)  # a new session: the gap since the last one isn't think time
        elif name == "AGIExecStart":
            at = event_time(event)
            if i in self._session:
                self.timing.first.append(at - self._session.pop(i))
            elif i in self._reply:
                self.timing.turnaround.append(at - self._reply.pop(i))
        elif name == "AGIExecEnd":
            self._reply[i] = event_time(event)


def real_timeout(n: int) -> float:
    """A silent call lasts about 6 s; this is for a PBX that got stuck, not a deadline."""
    return 120.0 + 0.5 * n


async def run_real(n: int, env: dict[str, str], prompts: Path, tmp: Path, r: redis.Redis) -> Row:
    """N silent callers at once through the real Asterisk and a FastAGI server process."""
    r.flushdb()
    port = free_port()
    log = tmp / f"real-fastagi-{n}.log"
    with log.open("wb") as err:
        server = subprocess.Popen([*AGI_CMD, "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    line = ami = callers = None
    try:
        await wait_ready(server, b"FastAGI on", 30, "FastAGI server")
        line, stamped = await start_line(state=tmp / f"asterisk-{n}", prompts=prompts,
                                         agi_url=f"agi://127.0.0.1:{port}")
        assert line.pbx_proc is not None and line.pbx_proc.pid is not None
        ami = await connect_ami(line)
        callers = SilentCallers(line, ami, f"bn{n}", hang_up_in_room=True)
        timing = Timing()
        callers.listeners.append(AgiGaps(timing).on_event)
        pbx_pid = line.pbx_proc.pid
        idle_kb, pbx_idle_kb = status_kb(server.pid, "VmRSS"), status_kb(pbx_pid, "VmRSS")
        cpu0, pbx_cpu0 = cpu_seconds(server.pid), stat_cpu_seconds(pbx_pid)
        log0, overflows0 = log_size(line), listen_overflows()
        own0 = time.process_time()  # this process only reads AMI events here: its share of the cores
        await callers.place(n)
        # Every caller hangs up once in their room (or in the fallback group): done when every
        # ;2 channel is gone, i.e. its h extension's `hangup` session has run too.
        finished = await callers.wait_for(lambda: len(callers.gone) + len(callers.refused) >= n,
                                          real_timeout(n))
        stuck = n - len(callers.gone) - len(callers.refused)
        if not finished:
            callers.hangup_all()
            await callers.wait_for(lambda: len(callers.gone) >= len(callers.channels), 30)
        cpu = cpu_seconds(server.pid) - cpu0
        pbx_cpu = stat_cpu_seconds(pbx_pid) - pbx_cpu0
        own = time.process_time() - own0
        hwm, pbx_hwm = status_kb(server.pid, "VmHWM"), status_kb(pbx_pid, "VmHWM")
        overflows = listen_overflows() - overflows0
        wall = max(callers.joined.values()) - callers.placed_at if callers.joined else float("nan")
        row = Row("FastAGI", n, wall, timing, cpu, hwm, (hwm - idle_kb) / n, pbx="real",
                  pbx_cpu_s=pbx_cpu,
                  note=f"all {n} at once; idle RSS {idle_kb / 1024:.0f} MB; Asterisk peak RSS "
                       f"{pbx_hwm / 1024:.0f} MB (idle {pbx_idle_kb / 1024:.0f} MB); this "
                       f"process, the AMI observer (every event), {own / n * 1000:.1f} ms CPU/call; "
                       f"listen backlog overflows: {overflows}; event times: "
                       + ("Asterisk's Timestamp" if stamped else "arrival (no Timestamp)"))
        row.in_room = len(callers.joined)
        row.fallback = len(callers.fallback)
        row.not_success = sum(any(s != "SUCCESS" for s in st) for st in callers.agi_status.values())
        row.issues += callers.refused[:5]
        if stuck:
            row.issues.append(f"{stuck} calls had not ended after {real_timeout(n):.0f} s")
        errors = asterisk_errors(line, log0)
        if errors:
            row.issues.append(f"{len(errors)} Asterisk log lines at ERROR/WARNING, the first: "
                              f"{errors[0][:160]}")
    finally:
        if callers is not None:
            callers.close()
        if ami is not None:
            await ami.close()
        if line is not None:
            await line.stop()
        await stop_process(server)
    row.queued = len({body[b"call_id"] for _, body in r.xrange(EVENTS)
                      if body.get(b"type") == b"queued"})
    read_log(row, log)
    r.flushdb()
    return row


# ---- output ----------------------------------------------------------------------------
HEADER = (f"{'N':>5} {'mode':<8} {'calls':>5} {'wall s':>7} {'calls/s':>8} "
          f"{'turn p50 ms':>11} {'p99 ms':>7} {'1st cmd p50 ms':>14} {'CPU ms/call':>11} "
          f"{'peak MB':>8} {'MB/call':>8} {'queued':>7} {'in room':>7}")


def fmt_row(n: int, row: Row) -> str:
    t = row.timing
    return (f"{n:>5} {row.mode:<8} {row.calls:>5} {row.wall_s:>7.2f} {row.rate:>8.1f} "
            f"{pct(t.turnaround, 50) * 1000:>11.3f} {pct(t.turnaround, 99) * 1000:>7.2f} "
            f"{pct(t.first, 50) * 1000:>14.1f} {row.cpu_per_call * 1000:>11.2f} "
            f"{row.peak_kb / 1024:>8.1f} {row.per_call_kb / 1024:>8.3f} "
            f"{row.queued:>7} {row.in_room:>7}")


def problems(row: Row) -> list[str]:
    out = []
    if row.queued != row.calls or row.in_room != row.calls:
        out.append(f"only {row.queued}/{row.calls} queued, {row.in_room} reached the room")
    if row.fallback:
        out.append(f"{row.fallback} rang the fallback group")
    if row.not_success:
        out.append(f"{row.not_success} with an AGISTATUS other than SUCCESS")
    for why, count in row.why.most_common(5):
        out.append(f"{count} sessions ended {why}")
    out += row.issues
    if row.log_lines:
        out.append(f"{row.log_lines} log lines at WARNING or above, the first: {row.first_log_line}")
    return out


async def bench(sizes: list[int], classic_max: int, cap: int, env: dict[str, str],
                prompts: Path, tmp: Path, r: redis.Redis) -> None:
    raise_nofile(max(sizes))
    results: list[tuple[int, Row, Row]] = []
    for n in sizes:
        print(f"N={n}: FastAGI ...", file=sys.stderr, flush=True)
        fast = await run_fastagi(n, env, prompts, tmp, r)
        m = n if classic_max <= 0 else min(n, classic_max)
        print(f"N={n}: classic ({m} calls) ...", file=sys.stderr, flush=True)
        classic = await run_classic(m, cap, env, prompts, tmp, r)
        if m < n:
            classic.note += f"; sampled {m} of {n} calls (--classic-max-calls)"
        results.append((n, fast, classic))
    print()
    print(HEADER)
    for n, fast, classic in results:
        print(fmt_row(n, fast))
        print(fmt_row(n, classic))
        turn = ratio(pct(fast.timing.turnaround, 50), pct(classic.timing.turnaround, 50))
        print(f"{'':>5} ratio FastAGI/classic: calls/s {ratio(fast.rate, classic.rate):.1f}x, "
              f"CPU per call {ratio(fast.cpu_per_call, classic.cpu_per_call):.4f}x "
              f"(classic uses {ratio(classic.cpu_per_call, fast.cpu_per_call):.0f}x the CPU), "
              f"turnaround p50 {turn:.2f}x")
        for row in (fast, classic):
            print(f"{'':>5} {row.mode}: {row.note}; commands timed: {len(row.timing.turnaround)}")
            for problem in problems(row):
                print(f"{'':>5} {row.mode}: !! {problem}")
    print("\nturn = PBX side, reply written -> next command read; 1st cmd = agi_* block written -> "
          "first command (classic: includes the process start-up). Each call runs two AGI "
          "sessions (intake, then hangup from the h extension). CPU and memory are the AGI side "
          "only (FastAGI server / classic children), not the stand-in, which shares the 2 cores. "
          "MB/call: FastAGI (VmHWM - idle RSS) / N; classic: mean peak RSS of one child. "
          "queued = distinct calls with a 'queued' event in Redis.")


REAL_HEADER = (f"{'N':>5} {'PBX':<8} {'calls':>5} {'wall s':>7} {'calls/s':>8} "
               f"{'turn p50 ms':>11} {'p99 ms':>7} {'1st cmd p50 ms':>14} {'AGI CPU ms/call':>15} "
               f"{'peak MB':>8} {'MB/call':>8} {'queued':>7} {'in room':>7} {'PBX CPU ms/call':>15}")


def fmt_real_row(n: int, row: Row) -> str:
    t = row.timing
    return (f"{n:>5} {row.pbx:<8} {row.calls:>5} {row.wall_s:>7.2f} {row.rate:>8.2f} "
            f"{pct(t.turnaround, 50) * 1000:>11.3f} {pct(t.turnaround, 99) * 1000:>7.2f} "
            f"{pct(t.first, 50) * 1000:>14.2f} {row.cpu_per_call * 1000:>15.2f} "
            f"{row.peak_kb / 1024:>8.1f} {row.per_call_kb / 1024:>8.3f} "
            f"{row.queued:>7} {row.in_room:>7} {row.pbx_cpu_per_call * 1000:>15.1f}")


async def bench_real(sizes: list[int], env: dict[str, str], prompts: Path, tmp: Path,
                     r: redis.Redis) -> None:
    raise_nofile(max(sizes))
    results: list[tuple[int, Row, Row]] = []
    for n in sizes:
        print(f"N={n}: FastAGI, stand-in (time scale 1) ...", file=sys.stderr, flush=True)
        standin = await run_fastagi(n, env, prompts, tmp, r, keys=SILENT_KEYS, time_scale=1.0,
                                    wall_to_room=True)
        print(f"N={n}: FastAGI, real Asterisk ...", file=sys.stderr, flush=True)
        real = await run_real(n, env, prompts, tmp, r)
        results.append((n, standin, real))
    print()
    print(REAL_HEADER)
    for n, standin, real in results:
        print(fmt_real_row(n, standin))
        print(fmt_real_row(n, real))
        st, rt = standin.timing, real.timing
        print(f"{'':>5} ratio real/stand-in: calls/s {ratio(real.rate, standin.rate):.2f}x, "
              f"turnaround p50 {ratio(pct(rt.turnaround, 50), pct(st.turnaround, 50)):.2f}x, "
              f"p99 {ratio(pct(rt.turnaround, 99), pct(st.turnaround, 99)):.2f}x, 1st command "
              f"p50 {ratio(pct(rt.first, 50), pct(st.first, 50)):.2f}x, AGI CPU per call "
              f"{ratio(real.cpu_per_call, standin.cpu_per_call):.2f}x, PBX CPU per call "
              f"{ratio(real.pbx_cpu_per_call, standin.pbx_cpu_per_call):.2f}x")
        for row in (standin, real):
            print(f"{'':>5} {row.pbx}: {row.note}; commands timed: {len(row.timing.turnaround)}")
            for problem in problems(row):
                print(f"{'':>5} {row.pbx}: !! {problem}")
    print("\nSilent callers (menu, ZIP, consent: nothing pressed), 0.4 s tone prompts, 1 s per "
          "question, everyone at once; each hangs up as they reach the room, so the h "
          "extension's `hangup` session runs too. wall = first call placed -> last caller in "
          "the room. turn = reply written -> next command read: on the stand-in inside the "
          "stand-in, on the real PBX from AMI events (AGIExecEnd -> next AGIExecStart of the "
          "channel). 1st cmd: stand-in, agi_* block written -> first command; real, the AGI "
          "application's Newexten -> first AGIExecStart (holds the connect and the agi_* "
          "block). AGI CPU and peak MB: the FastAGI server process. PBX CPU: real, the "
          "Asterisk process (/proc/<pid>/stat, 10 ms ticks; the waiting room's music "
          "included); stand-in, this benchmark's own process, where the stand-in runs.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pbx", choices=("standin", "real"), default="standin",
                        help="standin (default): FastAGI vs classic on the stand-in; real: FastAGI "
                             "on the real Asterisk next to the stand-in, silent callers in real "
                             "time (Asterisk installed by scripts/install-asterisk)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated N (default 1,100,1000; --pbx real 1,100: bigger N "
                             "works but takes minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="N = 1, 20, 100, and classic at most 20 calls per size")
    parser.add_argument("--classic-concurrency", type=int, default=50,
                        help="classic processes alive at once (default 50)")
    parser.add_argument("--classic-max-calls", type=int, default=None,
                        help="classic calls per size at most (default 100, --quick 20; 0 = all N)")
    args = parser.parse_args()
    if args.pbx == "real":
        main_real(args.sizes or "1,100")
        return
    sizes = [1, 20, 100] if args.quick else \
        [int(s) for s in (args.sizes or "1,100,1000").split(",") if s.strip()]
    if args.classic_max_calls is None:
        args.classic_max_calls = 20 if args.quick else 100

    tmp = Path(tempfile.mkdtemp(prefix="bench-agi-"))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    try:
        started = time.perf_counter()
        settings = config.load(env={}, var_dir=str(tmp), languages=("en", "es"))
        report = render_all(settings, load_catalog())
        if report.missing_audio:
            raise SystemExit(f"prompts not rendered: {report.problems}")
        prompts = settings.prompts_path
        print(f"prompts rendered in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
        env.update(PR_REDIS_URL=REDIS_URL, PR_VAR_DIR=str(tmp), PR_PROMPTS_DIR=str(prompts),
                   PR_LOG_LEVEL="WARNING")
        asyncio.run(bench(sizes, args.classic_max_calls, args.classic_concurrency, env, prompts,
                          tmp, r))
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
    finally:
        r.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)



def main_real(sizes_text: str) -> None:
    require_asterisk()  # before anything is rendered: exit 2 and say what to run
    sizes = [int(s) for s in sizes_text.split(",") if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-agi-real-"))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    try:
        started = time.perf_counter()
        settings = config.load(env={}, var_dir=str(tmp), languages=("en", "es"))
        prompts = short_prompts(tmp / "prompts", settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
        env.update(PR_REDIS_URL=REDIS_URL, PR_VAR_DIR=str(tmp), PR_PROMPTS_DIR=str(prompts),
                   PR_LOG_LEVEL="WARNING", PR_LANGUAGES="en,es", **QUESTION_TIMEOUTS)
        run_interruptible(bench_real(sizes, env, prompts, tmp, r))
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
    finally:
        r.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
