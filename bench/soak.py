"""Soak and faults: N callers (500) kept on the line for --minutes (30) through the line of
several machines, on one machine, with parts of it killed on a schedule.

    .venv/bin/python bench/soak.py [--minutes 30] [--callers 500] [--seed 1] [--no-faults]

The topology is docs/scaling.md's, all on loopback:
- two Asterisk nodes "a" and "b": the stand-in PBX (standin/), in this process, each with its
  own AMI server. The real Asterisk can't carry 500 concurrent calls on this 2-core machine
  next to everything else (bench_dispatch --pbx real stops at about 50 here), so the nodes
  are stand-ins at time scale 1.0 (real time: prompts, rings and timeouts last what they
  say). New callers alternate between the nodes, as Kamailio's round robin would, and go to
  the other node while one is down (Kamailio's OPTIONS pings);
- two FastAGI servers (`peoples-response agi`, two processes): node a's dialplan global
  PR_AGI lists them as agi://P1|agi://P2, node b's as P2|P1 (each node's first choice is its
  own; the other is its fallback, the dialplan's [pr-agi]);
- two dispatchers (`peoples-response dispatcher`, two processes), each with an AMI session to
  both nodes (PR_PBX_NODES=a=...,b=...) and its own recorder into SQL;
- Redis behind Sentinel: a primary, a replica and three sentinels of our own (bench/
  sentinels.py, new processes on free ports; the machine's Redis is not touched);
- SQLite for the records and the roster, under a temporary var dir.

Responders (1.2 x callers, `PJSIP/rNNNN`, two teams, everyone on call) answer with a mix of
the stand-in phones' behaviours (answer after 1-6 s, answer late, decline, never, voicemail,
hang up in the whisper, busy), drawn again for everyone every minute from the seeded random.
Callers press one of a few IVR paths ("2 02121 2", "1 02124 2", ...), talk 20-120 s once a
responder (or the fallback desk, which answers here) is with them, give up after 60-300 s
of waiting otherwise, and 30% of them say yes to a callback and hang up once it is confirmed
(their phone answers when the line calls back). A new caller replaces each one who leaves.

Faults, at fractions of the run (--no-faults: none): kill -9 a FastAGI server, a dispatcher
and the Redis primary (the sentinels promote the replica; the killed server comes back as a
replica, and the second Redis fault kills the promoted one), crash a PBX node (its AMI
server closed and every channel gone at once, as kill -9 of Asterisk; a new node on the same
AMI port later). Each comes back after a while.

Printed: per window (from one fault to the next) and overall, the calls started and how they
ended by their SQL records (bridged, callback, fallback, abandoned), the callers who never
got a record, time to first ring (caller dials in -> first responder phone rings) p50/p99,
and two numbers that must be zero: **lost** (a call without an end state once the line has
drained: its Redis hash not final, no SQL record or one still "in_progress") and
**double-booked** (a responder in two calls at once: their phone in two rooms at the same
moment on the PBXs, checked on every room join and sampled every 0.25 s over both nodes'
rooms; or two records accepted by the same responder with overlapping [answered_at,
ended_at]). Drained: after the run every caller still on the line is hung up, then at most
DRAIN_S for the line to end every call. Exit status 1 when lost or double-booked is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.measure import free_port, pct, stat_cpu_seconds  # noqa: E402
from bench.realpbx import run_interruptible, stop_process  # noqa: E402
from bench.sentinels import Sentinels, wait_listening  # noqa: E402
from crisisline import config, db  # noqa: E402
from crisisline.records.schema import CallbackRequest, CallRecord  # noqa: E402
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team  # noqa: E402
from crisisline.roster.store import RosterStore  # noqa: E402
from crisisline.stores import sync_redis  # noqa: E402
from crisisline.stores.calls import EVENTS  # noqa: E402
from localpbx.tones import short_prompts  # noqa: E402
from standin.ami import AmiServer  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.phones import phones_for  # noqa: E402
from standin.serve import build_pbx  # noqa: E402

SERVICE = "pr-soak"
SECRET = "soak-secret-0123456789"
TIME_SCALE = 1.0
KEYS = ("2 02121 2", "1 02124 2", "1 02119 2", "2 02124 2")  # language, ZIP, no message
CALLBACK_KEYS = "1 1 1"  # call me back, this number is safe, a message is fine
AREAS = ("617", "857", "781", "339", "508", "978")
# (behaviour, weight); "answer" and "answer-late" get a random ring time.
BEHAVIOURS = (("answer", 70), ("answer-late", 8), ("decline", 7), ("never", 6),
              ("voicemail", 4), ("hangup-in-whisper", 2), ("busy", 3))
CALLEE = "answer:3"  # a caller's own phone, when the line calls them back
TALK_S = (20.0, 120.0)
PATIENCE_S = (60.0, 300.0)
CALLBACK_SHARE = 0.3
RESHUFFLE_S = 60.0
SAMPLE_S = 0.25
DRAIN_S = 240.0
DRAIN_TALK_S = 3.0
LIVE_REPORTS = 3  # double-bookings printed as they happen
DETAILS = 5  # lost calls and double-bookings explained at the end, each
STUCK_S = 90.0  # the drain ends early when nothing changed for this long
FINAL = {"ended", "abandoned", "fallback", "callback", "callback_failed", "cancelled"}
OUTCOMES = ("bridged", "callback", "fallback", "abandoned")
# (what, at, back): fractions of the run.
FAULTS = (("agi-1", 0.15, 0.25), ("dispatcher-1", 0.30, 0.38), ("redis", 0.45, 0.52),
          ("node-a", 0.60, 0.63), ("redis", 0.75, 0.82))
FAULT_TEXT = {"agi-1": "kill -9 FastAGI server 1", "dispatcher-1": "kill -9 dispatcher 1",
              "redis": "kill -9 the Redis primary", "node-a": "crash PBX node a"}
WINDOW_TEXT = {"agi-1": "FastAGI 1 killed", "dispatcher-1": "dispatcher 1 killed",
               "redis": "Redis primary killed", "node-a": "node a crashed"}
BACK_TEXT = {"agi-1": "FastAGI server 1 started again",
             "dispatcher-1": "dispatcher 1 started again",
             "redis": "the killed Redis back as a replica", "node-a": "node a started again"}
MIN_DOWN_S = 5.0


def log(t0: float, text: str) -> None:
    print(f"  t={time.time() - t0:7.1f}s  {text}", flush=True)


def responder_of(channel_name: str) -> str | None:
    """``PJSIP/r0012-0000000a`` -> ``r0012``; None for anything that isn't a responder's."""
    if not channel_name.startswith("PJSIP/r"):
        return None
    return channel_name[6:].rsplit("-", 1)[0]


def roster(n: int) -> RosterSnapshot:
    """n responders, 60% in the Dorchester team, 40% in Roxbury (adjacent), all speaking
    English and Spanish, on call all week."""
    teams = (Team("dot", "Dorchester", frozenset({"Dorchester"}), frozenset({"rox"})),
             Team("rox", "Roxbury", frozenset({"Roxbury"}), frozenset({"dot"})))
    people = tuple(Responder(f"r{i:04d}", f"R{i}", f"PJSIP/r{i:04d}", frozenset({"en", "es"}),
                             "dot" if i % 5 < 3 else "rox") for i in range(n))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot(teams, people, shifts)


@dataclass
class Caller:
    n: int
    node: str
    started: float  # epoch
    talk_s: float
    patience_s: float
    callback: bool
    ch: object = None  # the live channel; dropped once the call is over
    name: str = ""
    call_id: str = ""
    connected_at: float | None = None
    how: str = "on the line"
    ended: float | None = None


@dataclass
class Node:
    name: str
    agi: str  # its PR_AGI
    port: int = 0
    pbx: object = None
    server: AmiServer | None = None
    up: bool = False


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    cpu: float = 0.0  # CPU seconds of earlier, killed incarnations
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.proc.pid)

    def cpu_now(self) -> float:
        try:
            return self.cpu + (stat_cpu_seconds(self.proc.pid) if self.proc else 0.0)
        except OSError:
            return self.cpu

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.cpu = self.cpu_now()
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Window:
    label: str
    start: float  # seconds into the run
    end: float


@dataclass
class Soak:
    args: argparse.Namespace
    tmp: Path
    settings: config.Settings = None  # type: ignore[assignment]
    env: dict[str, str] = field(default_factory=dict)
    rng: random.Random = None  # type: ignore[assignment]
    sentinels: Sentinels | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    callers: list[Caller] = field(default_factory=list)
    live: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # node -> names
    first_ring: dict[str, float] = field(default_factory=dict)  # call id -> epoch
    in_rooms: dict[str, set[tuple[str, str, str]]] = field(
        default_factory=lambda: defaultdict(set))  # responder -> {(node, room, channel)}
    # (t, responder, the call ids of the rooms they were in at once)
    pbx_double: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)
    _double_seen: set = field(default_factory=set)
    callee_due: dict[int, float] = field(default_factory=dict)  # id(channel) -> hang up at
    behaviours: dict[str, str] = field(default_factory=dict)
    t0: float = 0.0
    run_s: float = 0.0
    running: bool = False
    draining: bool = False
    tasks: set[asyncio.Task] = field(default_factory=set)
    next_node: int = 0
    faults_done: list[tuple[float, str]] = field(default_factory=list)
    agi_ports: list[int] = field(default_factory=list)
    crashes: list[tuple[str, float]] = field(default_factory=list)  # (node, epoch)
    destroyed_tasks: int = 0
    dead_sends: int = 0
    late_ends: list[float] = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # call id -> [(event type, consumer)]
    callbacks: dict[str, str] = field(default_factory=dict)  # call id -> request's status
    engine: object = None

    # ---- setup -----------------------------------------------------------------------------
    def configure(self) -> None:
        a = self.args
        self.rng = random.Random(a.seed)
        self.sentinels = Sentinels(self.tmp / "redis", SERVICE, plain=a.redis == "plain")
        env = {"PR_VAR_DIR": str(self.tmp), "PR_LANGUAGES": "en,es",
               "PR_REDIS_URL": self.sentinels.url, "PR_WRAPUP_S": "10",
               "PR_CALLBACK_RETRY_S": "30"}
        if a.redis == "sentinel":
            env.update(PR_REDIS_SENTINELS=self.sentinels.addresses, PR_REDIS_SERVICE=SERVICE)
        base = config.load(env=env)
        base = dataclasses.replace(base, prompts_dir=str(short_prompts(self.tmp / "prompts",
                                                                       base)))
        self.settings = dataclasses.replace(base, ami_secret=SECRET)
        # Our own settings only: a PR_ variable of the shell (a secret, a port) must not leak in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
        self.env.update(env, PR_PROMPTS_DIR=str(self.settings.prompts_path),
                        PR_AMI_SECRET=SECRET, PR_LOG_LEVEL="WARNING")
        db.upgrade(self.settings)
        self.engine = db.engine_for(self.settings)
        RosterStore(self.engine, self.settings.timezone).replace_all(
            roster(a.responders))
        self.reshuffle()

    def reshuffle(self) -> None:
        """Everyone's phone behaviour, drawn again (people are sometimes busy, sometimes not)."""
        kinds, weights = zip(*BEHAVIOURS, strict=True)
        for i in range(self.args.responders):
            kind = self.rng.choices(kinds, weights)[0]
            if kind in ("answer", "answer-late"):
                kind = f"{kind}:{self.rng.uniform(1, 6 if kind == 'answer' else 4):.1f}"
            self.behaviours[f"r{i:04d}"] = kind
        for node in self.nodes.values():
            if node.up:
                phones_for(node.pbx).replace(self.behaviours, default=CALLEE)

    async def start_node(self, node: Node) -> None:
        pbx = build_pbx(self.settings, time_scale=TIME_SCALE, node=node.name)
        pbx.interp.globals["PR_AGI"] = node.agi
        pbx.fallback_answers = True  # the fallback desk picks up (a person, not a loop)
        phones_for(pbx).replace(self.behaviours, default=CALLEE)
        pbx.subscribe(lambda e, n=node.name: self.on_event(n, e))
        server = AmiServer(pbx, username=self.settings.ami_user, secret=SECRET,
                           host="127.0.0.1", port=node.port, auth_fail_delay_s=0.01)
        await server.start()
        node.pbx, node.server, node.port, node.up = pbx, server, server.port, True

    async def crash_node(self, node: Node) -> None:
        """As kill -9 of Asterisk: AMI sessions drop, every channel is gone without a trace."""
        node.up = False
        self.crashes.append((node.name, time.time()))
        assert node.server is not None
        await node.server.close()
        node.pbx.crash()
        for rid in list(self.in_rooms):
            self.in_rooms[rid] = {x for x in self.in_rooms[rid] if x[0] != node.name}
        self.live[node.name].clear()

    def start_proc(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        p = self.procs.get(name) or Proc(name, args, env, self.tmp / "logs" / f"{name}.log")
        self.procs[name] = p
        p.log.parent.mkdir(exist_ok=True)
        p.start()
        return p

    async def wait_log(self, p: Proc, marker: str, seconds: float = 60) -> None:
        """Until this incarnation of ``p`` has printed ``marker`` (one per start, in its log)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if p.log.read_text(errors="replace").count(marker) >= p.starts:
                return
            if p.proc is not None and p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited: see {p.log}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{p.name} not ready in {seconds:g} s: see {p.log}")

    async def start_agi(self, name: str, port: int) -> None:
        exe = [sys.executable, "-m", "peoples_response.cli"]
        self.start_proc(name, [*exe, "agi", "--port", str(port)], {**self.env,
                                                                   "PR_AGI_PORT": str(port)})
        await asyncio.to_thread(wait_listening, port, 60)

    async def start_dispatcher(self, name: str) -> None:
        exe = [sys.executable, "-m", "peoples_response.cli"]
        nodes = ",".join(f"{n.name}=127.0.0.1:{n.port}" for n in self.nodes.values())
        p = self.start_proc(name, [*exe, "dispatcher"], {**self.env, "PR_PBX_NODES": nodes})
        await self.wait_log(p, "peoples-response dispatcher: AMI")

    # ---- what the PBXs say ----------------------------------------------------------------
    def on_event(self, node: str, e: dict) -> None:
        kind = e.get("Event")
        if kind == "Newchannel":
            uid = str(e.get("Uniqueid", ""))
            if uid.startswith("pr-"):
                self.first_ring.setdefault(uid.split("-")[1], time.time())
        elif kind == "ConfbridgeJoin":
            channel = str(e.get("Channel", ""))
            rid = responder_of(channel)
            if rid:
                where = (node, str(e.get("Conference", "")), channel)
                if self.in_rooms[rid]:
                    self.double(rid, {*self.in_rooms[rid], where})
                self.in_rooms[rid].add(where)
        elif kind == "ConfbridgeLeave":
            rid = responder_of(str(e.get("Channel", "")))
            if rid:
                self.in_rooms[rid].discard((node, str(e.get("Conference", "")),
                                            str(e.get("Channel", ""))))

    def double(self, rid: str, where: set[tuple[str, str, str]]) -> None:
        key = (rid, frozenset((n, r) for n, r, _ in where))
        if key in self._double_seen:
            return
        self._double_seen.add(key)
        text = ", ".join(sorted(f"{n}:{r} ({c})" for n, r, c in where))
        self.pbx_double.append((time.time(), rid, tuple(sorted({r[5:] for _, r, _ in where}))))
        if len(self.pbx_double) <= LIVE_REPORTS:
            log(self.t0, f"!! double-booked at the PBX: {rid} in {text}"
                + (" (further ones: counted, listed at the end)"
                   if len(self.pbx_double) == LIVE_REPORTS else ""))

    async def sampler(self) -> None:
        """Every SAMPLE_S: each responder's phone in at most one room on both nodes; callers
        called back (channels that aren't our callers) hung up after their talk."""
        while True:
            now = time.time()
            seen: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
            for node in self.nodes.values():
                if not node.up:
                    continue
                pbx = node.pbx
                for room, members in pbx.rooms.items():
                    names = [m.name for m in members]
                    responders = [n for n in names if responder_of(n)]
                    for n in responders:
                        seen[responder_of(n)].add((node.name, room, n))
                    if not responders:
                        continue
                    for m in members:
                        if m.name.startswith("PJSIP/direct-trunk") and \
                                m.name not in self.live[node.name]:
                            due = self.callee_due.setdefault(
                                id(m), now + (DRAIN_TALK_S if self.draining
                                              else self.rng.uniform(*TALK_S)))
                            if now >= due:
                                self.callee_due[id(m)] = float("inf")
                                self.spawn(pbx.hangup(m.name))
            for rid, where in seen.items():
                if len(where) > 1:
                    self.double(rid, where)
            await asyncio.sleep(SAMPLE_S)

    async def housekeeping(self) -> None:
        """The stand-in keeps every event and phone leg for tests to inspect: over half an
        hour that is gigabytes and a slower PBX, so what is over is let go. Behaviours are
        drawn again every RESHUFFLE_S."""
        last = time.time()
        while True:
            await asyncio.sleep(10)
            for node in self.nodes.values():
                if node.up:
                    pbx = node.pbx
                    pbx.events.clear()
                    pbx.announcements.clear()
                    table = phones_for(pbx)
                    table.legs = [leg for leg in table.legs if leg.channel in pbx.channels]
                    pbx.dialled = [c for c in pbx.dialled if c.name in pbx.channels]
            if len(self.callee_due) > 5000:
                self.callee_due = {k: v for k, v in self.callee_due.items() if v != float("inf")}
            if self.running and time.time() - last >= RESHUFFLE_S:
                last = time.time()
                self.reshuffle()

    # ---- callers ---------------------------------------------------------------------------
    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def pick_node(self) -> Node:
        names = list(self.nodes)
        for _ in names:
            node = self.nodes[names[self.next_node % len(names)]]
            self.next_node += 1
            if node.up:
                return node
        raise RuntimeError("no PBX node is up")

    async def new_caller(self) -> None:
        node = self.pick_node()
        n = len(self.callers)
        r = self.rng
        c = Caller(n, node.name, time.time(), r.uniform(*TALK_S), r.uniform(*PATIENCE_S),
                   r.random() < CALLBACK_SHARE)
        number = f"{AREAS[n // 10000 % len(AREAS)]}555{n % 10000:04d}"
        script = CallerScript(keys=r.choice(KEYS), stay_s=None, caller_id_num=number,
                              callback_keys=CALLBACK_KEYS if c.callback else "",
                              leave_after="callback_confirmed" if c.callback else None)
        self.callers.append(c)
        ch = await node.pbx.start_call("from-direct", "6175550100", script)
        c.ch, c.name = ch, ch.name
        self.live[node.name].add(ch.name)
        self.spawn(self.caller_life(c, node, node.pbx))

    async def caller_life(self, c: Caller, node: Node, pbx) -> None:
        ch = c.ch
        hangup_at: float | None = None
        try:
            while not ch.finished.is_set():
                now = time.time()
                c.call_id = c.call_id or ch.trace.variables.get("PR_CALL_ID", "")
                if hangup_at is None:
                    room = pbx.room(f"call-{c.call_id}") if c.call_id else None
                    if room is not None and ch.name in room.members and \
                            any(responder_of(m) for m in room.members):
                        c.connected_at, c.how = now, "talked"
                        hangup_at = now + c.talk_s
                    elif ch.trace.fallback_dialed:
                        c.connected_at, c.how = now, "fallback desk"
                        hangup_at = now + c.talk_s
                    elif now - c.started > c.patience_s:
                        c.how = "gave up waiting"
                        hangup_at = now
                if self.draining and (hangup_at is None or hangup_at > now):
                    if c.how == "on the line":
                        c.how = "hung up at the end"
                    hangup_at = now
                if hangup_at is not None and now >= hangup_at:
                    await pbx.hangup(ch.name)
                    break
                waiter = asyncio.ensure_future(ch.finished.wait())
                await asyncio.wait({waiter}, timeout=0.5)
                waiter.cancel()
            if c.how == "on the line":
                if not node.up or node.pbx is not pbx:
                    c.how = "dropped (node crash)"
                elif ch.script.leave_after and ch.trace.hung_up_by == "caller":
                    c.how = "left after a callback request"
                else:
                    c.how = f"hung up by the PBX ({ch.trace.hung_up_by})"
        finally:
            c.call_id = c.call_id or ch.trace.variables.get("PR_CALL_ID", "")
            c.ended = time.time()
            c.ch = None
            self.live[c.node].discard(c.name)
            if self.running:
                self.spawn(self.new_caller())

    async def ramp(self, n: int, seconds: float) -> None:
        for i in range(n):
            if not self.running:
                return
            await self.new_caller()
            await asyncio.sleep(max(0.0, self.t0 + seconds * (i + 1) / n - time.time()))

    # ---- faults ----------------------------------------------------------------------------
    def schedule(self) -> list[tuple[float, str, str]]:
        """(seconds into the run, what, "down"|"back"), in time order."""
        if self.args.no_faults:
            return []
        out = []
        for what, at, back in FAULTS:
            if what == "redis" and self.args.redis == "plain":
                continue  # no replica to promote
            down = at * self.run_s
            out += [(down, what, "down"), (max(back * self.run_s, down + MIN_DOWN_S), what,
                                            "back")]
        return sorted(out)

    async def faults(self) -> None:
        killed_redis: list[int] = []
        for at, what, step in self.schedule():
            await asyncio.sleep(max(0.0, self.t0 + at - time.time()))
            if not self.running:
                return
            try:
                await self.fault(what, step, killed_redis)
            except Exception as exc:  # say so, and go on with the rest of the run
                log(self.t0, f"!! fault {what} {step} failed: {exc!r}")

    async def fault(self, what: str, step: str, killed_redis: list[int]) -> None:
        t = time.time()
        if step == "down":
            self.faults_done.append((t - self.t0, what))
        if what in ("agi-1", "dispatcher-1"):
            p = self.procs[what]
            if step == "down":
                pid = p.proc.pid if p.proc else 0
                await asyncio.to_thread(p.kill)
                log(self.t0, f"{FAULT_TEXT[what]} (pid {pid})")
            elif what == "agi-1":
                await self.start_agi(what, self.agi_ports[0])
                log(self.t0, f"{BACK_TEXT[what]} (ready in {time.time() - t:.1f} s)")
            else:
                await self.start_dispatcher(what)
                log(self.t0, f"{BACK_TEXT[what]} (AMI up in {time.time() - t:.1f} s)")
        elif what == "redis":
            assert self.sentinels is not None
            if step == "down":
                port = await asyncio.to_thread(self.sentinels.kill_primary)
                killed_redis.append(port)
                new = await asyncio.to_thread(self.sentinels.wait_promoted, port)
                log(self.t0, f"{FAULT_TEXT[what]} (:{port}); sentinels promoted :{new} in "
                             f"{time.time() - t:.1f} s")
            else:
                port = killed_redis[-1]
                await asyncio.to_thread(self.sentinels.restart_as_replica, port)
                log(self.t0, f"{BACK_TEXT[what]} (:{port}, in sync in {time.time() - t:.1f} s)")
        elif what == "node-a":
            node = self.nodes["a"]
            if step == "down":
                calls = len(node.pbx.channels)
                await self.crash_node(node)
                log(self.t0, f"{FAULT_TEXT[what]} ({calls} channels gone)")
            else:
                await self.start_node(node)
                log(self.t0, f"{BACK_TEXT[what]} (AMI on :{node.port} again)")

    # ---- the run ---------------------------------------------------------------------------
    async def run(self) -> int:
        a = self.args
        self.run_s = a.minutes * 60
        self.configure()
        assert self.sentinels is not None
        await asyncio.to_thread(self.sentinels.start)
        self.agi_ports = [free_port(), free_port()]
        p1, p2 = (f"agi://127.0.0.1:{p}" for p in self.agi_ports)
        self.nodes = {"a": Node("a", f"{p1}|{p2}"), "b": Node("b", f"{p2}|{p1}")}
        await asyncio.gather(*(self.start_agi(f"agi-{i + 1}", p)
                               for i, p in enumerate(self.agi_ports)))
        for node in self.nodes.values():
            await self.start_node(node)
        for name in ("dispatcher-1", "dispatcher-2"):
            await self.start_dispatcher(name)
        self.print_header()
        background = [self.spawn(self.sampler()), self.spawn(self.housekeeping())]
        self.t0 = time.time()
        self.running = True
        fault_task = self.spawn(self.faults())
        self.spawn(self.ramp(a.callers, min(30.0, 0.1 * self.run_s)))
        await asyncio.sleep(self.run_s)
        self.running = False
        fault_task.cancel()
        log(self.t0, f"run over: {sum(1 for c in self.callers if c.ended is None)} callers "
                     "on the line are hung up; draining")
        self.draining = True
        drained_in = await self.drain()
        for task in background:
            task.cancel()
        return self.report(drained_in)

    async def drain(self) -> float | None:
        """Until every caller has left and the line has ended every call (Redis and SQL), at
        most DRAIN_S; the seconds it took, or None."""
        start = time.time()
        last, same_since = None, time.time()
        while time.time() - start < DRAIN_S:
            await asyncio.sleep(2)
            if any(c.ended is None for c in self.callers):
                continue
            state = await asyncio.to_thread(self.unfinished)
            if not any(state.values()):
                return time.time() - start
            if state != last:
                last, same_since = state, time.time()
            elif time.time() - same_since > STUCK_S:
                log(self.t0, f"drain stuck for {STUCK_S:.0f} s at {state}: counting now")
                return None
        return None

    def unfinished(self) -> dict[str, int]:
        r = sync_redis(self.settings.effective_redis_url)
        live = r.scard("pr:live")
        with self.engine.connect() as conn:
            open_sql = conn.execute(select(func.count()).select_from(CallRecord).where(
                CallRecord.outcome == "in_progress")).scalar()
        return {"redis live": int(live), "sql in_progress": int(open_sql or 0)}

    # ---- the figures -------------------------------------------------------------------------
    def print_header(self) -> None:
        a = self.args
        faults = self.schedule()
        print(f"soak: --minutes {a.minutes:g} --callers {a.callers} --seed {a.seed}"
              f"{' --no-faults' if a.no_faults else ''}; {a.responders} responders; stand-in "
              f"time scale {TIME_SCALE:g} (real time)", flush=True)
        print(f"line: nodes a (AMI :{self.nodes['a'].port}) + b (:{self.nodes['b'].port}), "
              f"FastAGI :{self.agi_ports[0]} + :{self.agi_ports[1]}, 2 dispatchers, "
              + (f"one Redis :{self.sentinels.servers[0]} (--redis plain: no Sentinel)"
                 if a.redis == "plain" else
                 f"Redis {self.sentinels.servers} + 3 sentinels") +
              f", SQLite in {self.tmp}", flush=True)
        if faults:
            print("faults (s into the run): " + "; ".join(
                f"{at:.0f} {FAULT_TEXT[w] if s == 'down' else BACK_TEXT[w]}"
                for at, w, s in faults), flush=True)
        else:
            print("faults: none (--no-faults)", flush=True)

    def windows(self) -> list[Window]:
        downs = [(at, w) for at, w, s in self.schedule() if s == "down"]
        marks = [(0.0, "no fault yet" if downs else "no faults")] + \
                [(at, WINDOW_TEXT[w]) for at, w in downs]
        return [Window(label, start, marks[i + 1][0] if i + 1 < len(marks) else self.run_s)
                for i, (start, label) in enumerate(marks)]

    def report(self, drained_in: float | None) -> int:
        records, redis_calls, stream = self.collect()
        callers_by_id = {c.call_id: c for c in self.callers if c.call_id}
        ids = set(records) | set(redis_calls) | set(callers_by_id)

        def started(cid: str) -> float:
            if cid in callers_by_id:
                return callers_by_id[cid].started - self.t0
            rec = records.get(cid)
            if rec and rec["started_at"] is not None:
                return rec["started_at"] - self.t0
            return float(redis_calls.get(cid, {}).get("created_at") or self.t0) - self.t0

        lost: dict[str, list[str]] = {}
        for cid in ids:
            why = []
            data, rec = redis_calls.get(cid), records.get(cid)
            if data is not None and data.get("state") not in FINAL:
                why.append(f"Redis state {data.get('state')!r}")
            if rec is None:
                why.append("no SQL record" + ("" if data is not None else
                                              " and no Redis hash"))
            elif rec["outcome"] == "in_progress":
                why.append("SQL outcome in_progress")
            if why:
                lost[cid] = why
        overlaps = self.record_overlaps(records, callers_by_id)
        windows = self.windows()

        def window_of(t: float) -> int:
            for i, w in enumerate(windows):
                if t < w.end or i == len(windows) - 1:
                    return i
            return len(windows) - 1

        rows = [Counter() for _ in windows]
        rings: list[list[float]] = [[] for _ in windows]
        for cid in ids:
            i = window_of(started(cid))
            rows[i]["calls"] += 1
            rec = records.get(cid)
            outcome = rec["outcome"] if rec else "none"
            rows[i]["callback" if cid in self.callbacks else outcome] += 1
            if rec and rec["end_reason"] == "pbx_gone":
                rows[i]["pbx_gone"] += 1
            if cid in lost:
                rows[i]["lost"] += 1
            if cid in callers_by_id and cid in self.first_ring:
                rings[i].append(self.first_ring[cid] - callers_by_id[cid].started)
        for c in self.callers:
            if not c.call_id:
                i = window_of(c.started - self.t0)
                rows[i]["calls"] += 1
                rows[i]["no record"] += 1
        # One incident = two calls with one responder at once, however many ways it was seen.
        pbx_pairs = {pair for _, _, rooms in self.pbx_double
                     for pair in itertools.combinations(sorted(rooms), 2)}
        rec_pairs = {tuple(sorted((a, b))) for a, b, _, _ in overlaps}
        doubles = pbx_pairs | rec_pairs
        for pair in doubles:
            rows[window_of(max(started(cid) for cid in pair))]["double"] += 1

        print()
        head = (f"{'window':<24}{'from-to s':>11}{'calls':>7}{'bridged':>8}{'callbk':>7}"
                f"{'fallbk':>7}{'abandon':>8}{'no rec':>7}{'pbxgone':>8}{'LOST':>6}"
                f"{'DBL':>5}  first ring p50/p99 s")
        print(head)
        total, all_rings = Counter(), []
        for w, row, ring in zip(windows, rows, rings, strict=True):
            self.print_row(w.label, f"{w.start:.0f}-{w.end:.0f}", row, ring)
            total.update(row)
            all_rings += ring
        self.print_row("overall", f"0-{self.run_s:.0f}", total, all_rings)
        if self.callbacks:
            status = Counter(self.callbacks.values())
            print(f"callback requests: {len(self.callbacks)} (" + ", ".join(
                f"{k} {v}" for k, v in status.most_common()) + "); the 'callbk' column: calls "
                "with a request, whatever became of it (not in the other columns)")
        how = Counter(c.how for c in self.callers)
        print("callers (as the bench saw them): " +
              ", ".join(f"{k} {v}" for k, v in how.most_common()))
        drained = f"drained in {drained_in:.0f} s" if drained_in is not None else \
            f"NOT drained after {DRAIN_S:.0f} s"
        cpu = ", ".join(f"{n} {p.cpu_now():.0f}" for n, p in sorted(self.procs.items()))
        print(f"{drained}; CPU s: bench+stand-ins {time.process_time():.0f}, {cpu}")
        self.print_logs()
        n_lost = len(lost)
        n_double = len(doubles)

        def more(n: int, what: str) -> None:
            if n > DETAILS:
                print(f"  ... {n - DETAILS} more {what}")

        for cid, why in sorted(lost.items(), key=lambda kv: started(kv[0]))[:DETAILS]:
            self.explain(cid, why, records, redis_calls, stream, started(cid), callers_by_id)
        more(len(lost), "lost calls")
        for t, rid, calls in self.pbx_double[:DETAILS]:
            how = "; ".join(self.describe(cid, records, stream) for cid in calls)
            print(f"  double-booked (PBX) at t={t - self.t0:.1f}s: {rid} in {how}")
        more(len(self.pbx_double), "double-bookings seen on the PBXs")
        if self.pbx_double:
            via = Counter("a callback among them" if any(
                "callback_answered" in stream.get(c, []) for c in calls) else "no callback"
                for _, _, calls in self.pbx_double)
            print("  of the double-bookings seen on the PBXs: " +
                  ", ".join(f"{k}: {v}" for k, v in via.most_common()))
        if self.late_ends:
            late = sorted(self.late_ends)
            print(f"  records whose ended_at is > 2 s after their caller's channel was gone: "
                  f"{len(late)} (median {pct(late, 50):.0f} s, max {late[-1]:.0f} s late); "
                  "double-booking is judged by when the caller left")
        if self.dead_sends:
            print(f"  ({self.dead_sends} asyncio 'socket.send() raised exception' silenced: the "
                  "stand-ins writing to a killed process's socket)")
        if self.destroyed_tasks:
            print(f"  ({self.destroyed_tasks} 'Task was destroyed but it is pending' from the "
                  "stand-in's crash() silenced: waits of the channels it cancelled)")
        for first, second, end, start in overlaps[:DETAILS]:
            a, b = records[first], records[second]
            print(f"  double-booked (records): {a['answered_by']} took {first} (node "
                  f"{a['pbx_node']}, {a['end_reason'] or a['end_step']}) until "
                  f"t={end - self.t0:.1f}s (ended_at {a['ended_at'] - self.t0:.1f}) and "
                  f"{second} (node {b['pbx_node']}) at t={start - self.t0:.1f}s")
        more(len(overlaps), "overlaps in the records")
        pending = Counter(con for rows in self.pending.values() for _, con in rows)
        if pending:
            print("  recorder group, events read and never acknowledged: " + ", ".join(
                f"{self.consumer_of(con)}: {n}" for con, n in pending.most_common()))
        faults = "; ".join(f"{w} at {t:.0f} s" for t, w in self.faults_done) or "none"
        ok = n_lost == 0 and n_double == 0 and drained_in is not None
        print(f"verdict: {'PASS' if ok else 'FAIL'}: {total['calls']} calls over "
              f"{self.args.minutes:g} min with {self.args.callers} callers, faults: {faults}; "
              f"lost {n_lost}, double-booked {n_double} (pairs of calls: on the PBXs "
              f"{len(pbx_pairs)}, in the records {len(rec_pairs)}, both "
              f"{len(pbx_pairs & rec_pairs)})"
              f"{'' if drained_in is not None else ', line not drained'}")
        return 0 if ok else 1

    @staticmethod
    def print_row(label: str, span: str, row: Counter, ring: list[float]) -> None:
        print(f"{label:<24}{span:>11}{row['calls']:>7}{row['bridged']:>8}{row['callback']:>7}"
              f"{row['fallback']:>7}{row['abandoned']:>8}{row['no record']:>7}"
              f"{row['pbx_gone']:>8}{row['lost']:>6}{row['double']:>5}  "
              f"{pct(ring, 50):.1f} / {pct(ring, 99):.1f}")

    def collect(self) -> tuple[dict, dict, dict]:
        """SQL records, Redis call hashes, and each call's event types from the stream."""
        records = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(
                CallRecord.id, CallRecord.outcome, CallRecord.answered_by,
                CallRecord.answered_at, CallRecord.ended_at, CallRecord.started_at,
                CallRecord.end_reason, CallRecord.end_step, CallRecord.pbx_node)).all()
            self.callbacks = dict(conn.execute(select(CallbackRequest.call_id,
                                                      CallbackRequest.status)).all())
        for row in rows:
            rid, outcome, by, answered, ended, started, reason, step, node = row
            records[rid] = {"outcome": outcome, "answered_by": by,
                            "answered_at": _epoch(answered), "ended_at": _epoch(ended),
                            "started_at": _epoch(started), "end_reason": reason,
                            "end_step": step, "pbx_node": node}
        r = sync_redis(self.settings.effective_redis_url)
        redis_calls = {}
        keys = list(r.scan_iter("pr:call:*", count=1000))
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for key, data in zip(keys, pipe.execute(), strict=True):
            cid = key.decode().split(":", 2)[2]
            redis_calls[cid] = {k.decode(): v.decode() for k, v in data.items()}
        stream: dict[str, list[str]] = defaultdict(list)
        kinds: dict[str, tuple[str, str]] = {}
        for eid, body in r.xrange(EVENTS):
            cid = body.get(b"call_id", b"").decode()
            stream[cid].append(body.get(b"type", b"?").decode())
            kinds[eid.decode()] = (cid, body.get(b"type", b"?").decode())
        # Events the recorders read and never acknowledged, by consumer (recorder-<pid>).
        self.pending = defaultdict(list)
        try:
            for entry in r.xpending_range(EVENTS, "recorder", min="-", max="+", count=100_000):
                eid = entry["message_id"].decode()
                cid, kind = kinds.get(eid, ("?", "?"))
                self.pending[cid].append((kind, entry["consumer"].decode()))
        except Exception as exc:  # no group: nothing was ever recorded
            print(f"  (recorder group unreadable: {exc})")
        return records, redis_calls, stream

    def consumer_of(self, consumer: str) -> str:
        """``recorder-<pid>`` -> which of our processes that was, and whether it still runs."""
        pid = consumer.rpartition("-")[2]
        for name, p in self.procs.items():
            if pid.isdigit() and int(pid) in p.pids:
                alive = p.proc is not None and p.proc.pid == int(pid) and p.proc.poll() is None
                return f"{consumer} = {name} pid {pid}, {'running' if alive else 'killed'}"
        return consumer

    def record_overlaps(self, records: dict, callers: dict[str, Caller]
                        ) -> list[tuple[str, str, float, float]]:
        """Pairs of calls one responder took whose [answered_at, end] overlap: (first, second,
        first's end, second's answered_at). ``end``: the record's ended_at, or when the
        caller's channel was gone on the PBX if that was earlier (ended_at is when the line
        found out: after a lost hang-up report, the reconciler's next pass; after a node
        crash, the node back and then that pass; the responder's leg ended with the caller,
        and they were free from then on). Those late ended_at are counted apart."""
        by: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for cid, rec in records.items():
            if not (rec["answered_by"] and rec["answered_at"] and rec["ended_at"]):
                continue
            end = rec["ended_at"]
            c = callers.get(cid)
            if c is not None and c.how == "talked" and c.ended is not None and c.ended < end:
                # Our own caller, with the responder on their own channel (not a callback:
                # then the line's second channel to them was the one bridged): gone then.
                end = c.ended
            elif rec["end_reason"] == "pbx_gone":
                # A caller called back, on a node that crashed: gone with the node.
                end = min((t for n, t in self.crashes if n == rec["pbx_node"] and
                           rec["answered_at"] <= t <= end), default=end)
            if rec["ended_at"] - end > 2.0:
                self.late_ends.append(rec["ended_at"] - end)
            by[rec["answered_by"]].append((rec["answered_at"], end, cid))
        out = []
        for spans in by.values():
            spans.sort()
            last_end, last = spans[0][1], spans[0][2]
            for start, end, cid in spans[1:]:
                if start < last_end:
                    out.append((last, cid, last_end, start))
                if end > last_end:
                    last_end, last = end, cid
        return out

    def describe(self, cid: str, records: dict, stream: dict) -> str:
        """A call in a few words: node, who took it, and how (a callback or not)."""
        rec = records.get(cid) or {}
        kinds = stream.get(cid, [])
        via = "callback" if "callback_answered" in kinds else "on the line"
        return (f"{cid} (node {rec.get('pbx_node')}, accepted by {rec.get('answered_by')}, "
                f"{via}, outcome {rec.get('outcome')})")

    def explain(self, cid: str, why: list[str], records: dict, redis_calls: dict,
                stream: dict, t: float, callers: dict) -> None:
        c = callers.get(cid)
        data = redis_calls.get(cid, {})
        rec = records.get(cid) or {}
        node = data.get("pbx_node") or rec.get("pbx_node") or (c.node if c else "?")
        stuck = self.pending.get(cid, [])
        held = (f"; {len(stuck)} events never acknowledged ("
                f"{' '.join(k for k, _ in stuck[:6])}) by " + ", ".join(
                    sorted({self.consumer_of(con) for _, con in stuck}))) if stuck else ""
        print(f"  LOST {cid} (started t={t:.1f}s on node {node}; {'; '.join(why)}; "
              f"caller: {c.how if c else 'not ours'}; end_step "
              f"{data.get('end_step') or rec.get('end_step')}){held}; events: "
              f"{' '.join(stream.get(cid, [])[-14:]) or 'none in the stream'}")

    def print_logs(self) -> None:
        """Per process: its ERROR lines, by the exception that ended each traceback."""
        print(f"process logs ({self.tmp / 'logs'}; ERROR lines, by exception):")
        for name, p in sorted(self.procs.items()):
            lines = p.log.read_text(errors="replace").splitlines() if p.log.exists() else []
            errors = sum(1 for line in lines if " ERROR " in line)
            ends: Counter = Counter()
            for i, line in enumerate(lines):
                # A traceback's last line: "module.Error: text", unindented, before the next
                # log line or the chained traceback's blank line.
                if line.startswith("Traceback"):
                    j = i + 1
                    while j < len(lines) and (lines[j].startswith(" ") or not lines[j]):
                        j += 1
                    if j < len(lines):
                        nxt = lines[j + 1] if j + 1 < len(lines) else ""
                        if not nxt.startswith(("The above", "During handling")):
                            ends[lines[j].split(":", 1)[0].rsplit(".", 1)[-1]] += 1
            detail = ", ".join(f"{k} {v}" for k, v in ends.most_common(6))
            print(f"  {name}: {errors}{' (' + detail + ')' if detail else ''}")

    # ---- the end -----------------------------------------------------------------------------
    async def close(self) -> None:
        self.running = False
        self.draining = True
        for task in list(self.tasks):
            task.cancel()
        for name in ("dispatcher-1", "dispatcher-2", "agi-1", "agi-2"):
            p = self.procs.get(name)
            if p is not None and p.proc is not None:
                await stop_process(p.proc)
        for node in self.nodes.values():
            if node.up and node.server is not None:
                node.up = False
                await node.server.close()
                node.pbx.crash()  # nothing to report the calls to any more

    def kill_all(self) -> None:
        """The last resort (a second Ctrl-C): every process we started, by its Popen."""
        for p in self.procs.values():
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
        if self.sentinels is not None:
            self.sentinels.stop()


def _epoch(value) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


async def main_async(soak: Soak) -> int:
    loop = asyncio.get_running_loop()

    def quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if str(context.get("message", "")).startswith("Task was destroyed but it is pending"):
            soak.destroyed_tasks += 1
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)

    class Sends(logging.Filter):
        """asyncio's "socket.send() raised exception." each time the stand-in writes to a
        peer that died (a killed FastAGI server or dispatcher): counted, not printed."""

        def filter(self, record: logging.LogRecord) -> bool:
            if record.getMessage().startswith("socket.send() raised exception"):
                soak.dead_sends += 1
                return False
            return True

    logging.getLogger("asyncio").addFilter(Sends())
    try:
        return await soak.run()
    finally:
        await soak.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--responders", type=int, default=None,
                        help="default: 1.2 x callers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--redis", choices=("sentinel", "plain"), default="sentinel",
                        help="plain: one Redis server without Sentinel (no Redis faults), "
                             "to compare with")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var dir")
    args = parser.parse_args()
    args.responders = args.responders or round(args.callers * 1.2)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = Soak(args, tmp)
    code = 1
    try:
        code = run_interruptible(main_async(soak))
    finally:
        soak.kill_all()
        if code == 0 and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp})", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
