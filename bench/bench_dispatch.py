"""Dispatcher overhead: N concurrent callers (1, 50, 500), responders answering after a fixed
delay, real Redis, the stand-in PBX, and `peoples-response agi` / `dispatcher` as processes.

Prints p50/p99 of the system's own overhead from "queued" to the first Originate the PBX
receives, and from a responder's press-1 (accepted) to their leg joining the caller's room,
plus the dispatcher's CPU milliseconds per call, for one dispatcher (mode ``dispatcher``) and
for two sharing the queue (``dispatchers x2``: CPU summed over both processes, per call).
Baseline, same run: a bare AMI client that originates the moment it sees "queued" (no
policy, no leases), as many phones per call as a dispatcher's first wave rings (PR_RING_PER_WAVE,
4), in a process of its own as a dispatcher is (bench/floor.py) - the floor the transport
itself sets under the same load; the ratios are against it. The N callers start at once.

    .venv/bin/python bench/bench_dispatch.py [--sizes 1,50,500]
    .venv/bin/python bench/bench_dispatch.py --pbx real [--sizes 1,50]

--pbx real: N silent callers (nothing pressed; 0.4 s tone prompts; 1 s per question) through
the real Asterisk rendered from our configuration (Local channels into [from-direct]), the
responders' phones in the world Asterisk on E.164 numbers through the direct trunk
(answering after 2 s, pressing 1 1.5 s into the whisper), and, in the same run, the same
callers on the stand-in at time scale 1: the same figures for both, and real/stand-in.

BENCH_MODES (default ``floor,dispatcher,dispatchers x2``) picks the modes; BENCH_REDIS_DB
(default 12) the Redis database it flushes;
BENCH_PROFILE=FILE runs the dispatcher under cProfile and writes its profile there (FILE.2 for
the second of two); BENCH_PYSPY=DIR samples each dispatcher with py-spy (``pip install
py-spy``) while the callers come, into DIR/<N>-<mode>-<i>.txt (collapsed stacks, samples
holding the GIL: where its CPU goes).

The roster (``--roster``, default four per caller at the largest N, plus 20) has a free
responder for every caller's first wave, so the time to a first ring is the system's own, not
a wait for someone to come free (that is the roster's doing, and swamped the comparison: with
N + 20 responders most of 500 callers waited for earlier waves' whispers to end, and the
ratio swung from 1.7x to 28x between runs with how fast callers happened to arrive).
``--roster 520`` measures that scarce case (starving calls' turns, turns.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import time as dtime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import free_port, pct  # noqa: E402
from bench.measure import stat_cpu_seconds as cpu_seconds  # noqa: E402
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
from crisisline import config, db  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team  # noqa: E402
from crisisline.roster.store import RosterStore  # noqa: E402
from crisisline.stores.calls import EVENTS  # noqa: E402
from localpbx.tones import short_prompts  # noqa: E402
from standin.ami import AmiServer  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.phones import phones_for  # noqa: E402
from standin.serve import build_pbx  # noqa: E402

REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))  # flushed: a database of its own
SECRET = "bench-secret-0123456789"
TIME_SCALE = 0.01
KEYS = "2 02121 2"
FLOOR = "floor"
MODES = ("floor", "dispatcher", "dispatchers x2")
DISPATCHERS = {"dispatcher": 1, "dispatchers x2": 2}  # processes per mode
STOP_S = 10.0  # a process that hasn't stopped by then is killed: the figures are taken


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the callers do and how the stand-in's clock runs. The default is the stand-in
    mode's; --pbx real runs silent callers in real time on both PBXs and waits until every
    responder is in their caller's room rather than a fixed time."""

    keys: str = KEYS
    time_scale: float = TIME_SCALE
    until_bridged: bool = False


def roster(n: int, e164: bool = False) -> RosterSnapshot:
    """n responders on shift all week; ``e164``: mobiles the world Asterisk answers through
    the direct trunk (+1617555xxxx, clear of the line's own numbers), else stand-in
    endpoints."""
    team = Team("dot", "Dorchester", frozenset({"Dorchester"}))
    people = tuple(Responder(f"r{i:04d}", f"R{i}",
                             f"+1617555{2000 + i:04d}" if e164 else f"PJSIP/r{i:04d}",
                             frozenset({"es", "en"}), "dot")
                   for i in range(n))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot((team,), people, shifts)


class Watch:
    """Times, as the PBX sees them: Originates received and responders joining rooms."""

    def __init__(self) -> None:
        self.first_originate: dict[str, float] = {}
        self.joined: dict[str, float] = {}

    def on_event(self, event: dict, now: float | None = None) -> None:
        """``now``: when the PBX produced the event (the real one's Timestamp)."""
        now = time.time() if now is None else now
        uid = str(event.get("Uniqueid", ""))
        if event.get("Event") == "Newchannel" and uid.startswith("pr-"):
            self.first_originate.setdefault(uid.split("-")[1], now)
        elif event.get("Event") == "ConfbridgeJoin" and (
                "/r" in str(event.get("Channel", "")) or uid.startswith("pr-")):
            # A responder's leg: PJSIP/r0001-... on the stand-in's endpoints; on E.164
            # numbers only its uniqueid (the dispatcher's ChannelId, pr-<call>-...) says so.
            self.joined.setdefault(str(event.get("Conference", ""))[5:], now)


def call_times(r: redis.Redis) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for _, body in r.xrange(EVENTS):
        body = {k.decode(): v.decode() for k, v in body.items()}
        out.setdefault(body.get("call_id", ""), {}).setdefault(body["type"], float(body["at"]))
    return out


async def run_callers(pbx, n: int, wait_s: float, keys: str = KEYS,
                      until: Callable[[], bool] | None = None) -> list:
    """Start n callers at once; then wait ``wait_s``, or with ``until`` until it holds (at most
    wait_s). At once, not one after another: started in turn, how fast they came depended on
    how busy the event loop was (2 s for 500 in one run, 10 s in the next), and so did every
    figure; all at once, every mode meets the same burst."""
    channels = list(await asyncio.gather(*(
        pbx.start_call("from-direct", "6175550100", CallerScript(keys=keys, stay_s=None))
        for _ in range(n))))
    if until is None:
        await asyncio.sleep(wait_s)
        return channels
    deadline = time.time() + wait_s
    while not until() and time.time() < deadline:
        await asyncio.sleep(0.05)
    return channels


def real_roster_size(n: int, base: config.Settings) -> int:
    """Enough responders for every caller's first wave at once: how long a caller waits for a
    free responder is the roster's doing, not the PBX's, and would swamp the comparison."""
    return max(1, base.ring_per_wave) * n + 20


def rtp_ports(n: int, base: config.Settings) -> int:
    """Two ports (RTP + RTCP) per leg, a leg per phone rung, and room to spare."""
    return max(400, 2 * real_roster_size(n, base) + 200)


def bridge_timeout(n: int) -> float:
    """Silent callers are queued ~3 s in and bridged ~4 s later; this is for a stuck run."""
    return 60.0 + 1.0 * n


async def one_run(n: int, mode: str, base: config.Settings, env: dict[str, str],
                  work: Workload = Workload(), people: int = 0) -> dict:
    """``people``: the roster's size (the floor rings its responders in turn)."""
    r = redis.Redis.from_url(base.effective_redis_url)
    r.flushdb()
    agi_port = free_port()
    settings = dataclasses.replace(base, agi_port=agi_port, ami_secret=SECRET, ami_port=0)
    pbx = build_pbx(settings, time_scale=work.time_scale)
    watch = Watch()
    pbx.subscribe(watch.on_event)
    server = AmiServer(pbx, username=settings.ami_user, secret=SECRET, host="127.0.0.1", port=0)
    await server.start()
    settings = dataclasses.replace(settings, ami_port=server.port)
    phones_for(pbx).set_default("answer:2")
    env = {**env, "PR_AGI_PORT": str(agi_port), "PR_AMI_PORT": str(server.port),
           "PR_AMI_SECRET": SECRET}
    exe = [sys.executable, "-m", "peoples_response.cli"]
    agi = subprocess.Popen([*exe, "agi"], env=env, stdout=subprocess.PIPE)
    procs = [agi]
    dispatchers: list[subprocess.Popen] = []
    recorders: list[int] = []
    spies: list[subprocess.Popen] = []
    try:  # the processes end with the run, even a failed or interrupted one
        # Started, not a guess at how long starting takes (seconds on a busy machine).
        await wait_ready(agi, b"FastAGI on", 60, "FastAGI server")
        if mode != FLOOR:
            prof = os.environ.get("BENCH_PROFILE")
            for i in range(DISPATCHERS[mode]):
                dexe = [sys.executable, "-m", "cProfile", "-o", prof + (f".{i + 1}" if i else ""),
                        "-m", "peoples_response.cli"] if prof else exe
                dispatchers.append(subprocess.Popen([*dexe, "dispatcher"], env=env,
                                                    stdout=subprocess.PIPE))
            procs.extend(dispatchers)
            for d in dispatchers:
                await wait_ready(d, b"dispatcher: AMI", 60, "dispatcher")
            await asyncio.sleep(1.0)  # its reconcile at start, then its loops
            cpu0 = sum(cpu_seconds(d.pid) for d in dispatchers)
            recorders = [pid for d in dispatchers for pid in children(d.pid)]
            rec0 = sum(cpu_seconds(pid) for pid in recorders)
            spies = py_spy(dispatchers, n, mode, min(60.0, 4.0 + n * 0.05))
        else:
            floor = subprocess.Popen(
                [sys.executable, "-m", "bench.floor", "127.0.0.1", str(server.port),
                 settings.ami_user, SECRET, base.effective_redis_url,
                 str(max(1, base.ring_per_wave)), str(people or n)],
                env=env, cwd=ROOT, stdout=subprocess.PIPE)
            procs.append(floor)
            await wait_ready(floor, b"floor: AMI", 60, "floor client")
        started = time.time()
        load0 = (time.process_time(), cpu_seconds(agi.pid))
        if work.until_bridged:
            channels = await run_callers(pbx, n, bridge_timeout(n), work.keys,
                                         until=lambda: len(watch.joined) >= n)
        else:
            channels = await run_callers(pbx, n, wait_s=min(60.0, 4.0 + n * 0.05))
        wall = time.time() - started
        # Summed over the dispatchers: what the line pays per call, however it is shared.
        cpu = sum(cpu_seconds(d.pid) for d in dispatchers) - cpu0 if dispatchers else float("nan")
        rec = sum(cpu_seconds(pid) for pid in recorders) - rec0 if dispatchers else float("nan")
        row = figures(mode, n, wall, watch, call_times(r), cpu)
        row["recorder_cpu_per_call"] = rec / max(1, row["bridged"])
        # What the rest of the machine was doing meanwhile (two cores for all of it).
        row["load"] = (wall, time.process_time() - load0[0], cpu_seconds(agi.pid) - load0[1])
        for ch in channels:
            await pbx.hangup(ch.name)
    finally:
        for spy in spies:  # they stop by themselves at the end of the callers' window
            try:
                spy.wait(15)
            except subprocess.TimeoutExpired:
                spy.kill()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(STOP_S)
            except subprocess.TimeoutExpired:
                print(f"{' '.join(p.args[-1:])} did not stop in {STOP_S:.0f} s; killed",
                      file=sys.stderr)
                p.kill()
                p.wait()
        await server.close()
        await pbx.close()
    return row


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (a dispatcher's recorder, workers/dispatcher/recording.py),
    once they are up."""
    for _ in range(100):
        found = [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children")
                 for c in f.read_text().split()]
        if found:
            return found
        time.sleep(0.05)
    return []


def py_spy(dispatchers: list[subprocess.Popen], n: int, mode: str,
           seconds: float) -> list[subprocess.Popen]:
    """With BENCH_PYSPY=DIR: py-spy sampling each dispatcher for ``seconds``."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return [subprocess.Popen([spy, "record", "--pid", str(d.pid), "--duration",
                              str(int(seconds)), "--rate", "250", "--format", "raw", "--gil",
                              "--nonblocking",
                              "-o", f"{out}/{n}-{mode.replace(' ', '')}-{i + 1}.txt"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, d in enumerate(dispatchers)]


def figures(mode: str, n: int, wall: float, watch: Watch, times: dict[str, dict[str, float]],
            cpu: float) -> dict:
    """Per call, from Redis's event times and the PBX's: queued -> first Originate,
    queued -> wave planned, accepted -> the responder's leg in the room."""
    overhead, bridge, planned = [], [], []
    for call_id, t in times.items():
        if "queued" in t and call_id in watch.first_originate:
            overhead.append(watch.first_originate[call_id] - t["queued"])
        if "queued" in t and "wave_started" in t:
            planned.append(t["wave_started"] - t["queued"])
        if "accepted" in t and call_id in watch.joined:
            bridge.append(watch.joined[call_id] - t["accepted"])
    bridged = sum(1 for t in times.values() if "accepted" in t)
    return {"mode": mode, "n": n, "wall": wall, "bridged": bridged, "overhead": overhead,
            "bridge": bridge, "planned": planned, "cpu_per_call": cpu / max(1, bridged)}


async def one_run_real(n: int, base: config.Settings, env: dict[str, str], tmp: Path) -> dict:
    """The same callers through the real Asterisk, the world's phones answering; the FastAGI
    server and the dispatcher as processes, as on the stand-in."""
    r = redis.Redis.from_url(base.effective_redis_url)
    r.flushdb()
    agi_port = free_port()
    env = {**env, "PR_AGI_PORT": str(agi_port)}
    exe = [sys.executable, "-m", "peoples_response.cli"]
    procs = [subprocess.Popen([*exe, "agi"], env=env, stdout=subprocess.PIPE)]
    line = ami = callers = None
    try:
        await wait_ready(procs[0], b"FastAGI on", 30, "FastAGI server")
        line, stamped = await start_line(state=tmp / f"asterisk-{n}", prompts=base.prompts_path,
                                         agi_url=f"agi://127.0.0.1:{agi_port}", desk=True,
                                         extra_env={"PR_REASSURE_S": str(base.reassure_s)},
                                         rtp_ports=rtp_ports(n, base))
        assert line.layout is not None and line.observer is not None
        await line.set_phones(default="answer:2")
        watch = Watch()
        line.observer.subscribers.append(lambda e: watch.on_event(e, event_time(e)))
        dispatcher = subprocess.Popen(
            [*exe, "dispatcher"], stdout=subprocess.PIPE,
            env={**env, "PR_AMI_HOST": line.layout.host, "PR_AMI_PORT": str(line.layout.ami_port),
                 "PR_AMI_SECRET": line.ami_secret})
        procs.append(dispatcher)
        await wait_ready(dispatcher, b"dispatcher: AMI", 30, "dispatcher")
        await asyncio.sleep(1.0)  # its reconcile at start, then its loops: as the stand-in's 2.5 s
        cpu0 = cpu_seconds(dispatcher.pid)
        log0 = log_size(line)
        ami = await connect_ami(line)
        callers = SilentCallers(line, ami, f"bd{n}", hang_up_in_room=False)
        started = time.time()
        await callers.place(n)
        await callers.wait_for(lambda: len(watch.joined) >= n, bridge_timeout(n))
        wall = time.time() - started
        cpu = cpu_seconds(dispatcher.pid) - cpu0
        row = figures("real", n, wall, watch, call_times(r), cpu)
        callers.hangup_all()
        await callers.wait_for(lambda: len(callers.gone) >= len(callers.channels), 30)
        issues = list(callers.refused[:5])
        if callers.fallback:
            issues.append(f"{len(callers.fallback)} callers went to the fallback group")
        errors = asterisk_errors(line, log0)
        if errors:
            issues.append(f"{len(errors)} Asterisk log lines at ERROR/WARNING, the first: "
                          f"{errors[0][:160]}")
        if not stamped:
            issues.append("event times are arrival times (Asterisk gave no Timestamp)")
        row["issues"] = issues
    finally:
        # The dispatcher first: stopping Asterisk under it only makes it log a lost connection.
        for p in reversed(procs):
            await stop_process(p)
        if callers is not None:
            callers.close()
        if ami is not None:
            await ami.close()
        if line is not None:
            await line.stop()
    return row


def print_row(n: int, row: dict) -> None:
    o, b = row["overhead"], row["bridge"]
    print(f"{n:>5} {row['mode']:<15} {row['bridged']:>8} "
          f"{pct(o, 50) * 1000:>14.1f} / {pct(o, 99) * 1000:>8.1f}    "
          f"{pct(b, 50) * 1000:>12.1f} / {pct(b, 99) * 1000:>8.1f}   "
          f"{row['cpu_per_call'] * 1000:>16.2f}"
          f"{row.get('recorder_cpu_per_call', float('nan')) * 1000:>17.2f}")
    if row["planned"]:
        w = row["planned"]
        print(f"{'':>5} {'':<15} {'':>8} of which queued->wave planned (Redis events): "
              f"p50 {pct(w, 50) * 1000:.1f} / p99 {pct(w, 99) * 1000:.1f} ms")
    if row.get("load"):
        wall, pbx, agi = row["load"]
        print(f"{'':>5} {'':<15} {'':>8} CPU over the {wall:.0f} s: stand-in PBX and callers "
              f"{pbx:.1f} s, FastAGI server {agi:.1f} s")
    for issue in row.get("issues", []):
        print(f"{'':>5} {row['mode']}: !! {issue}")


def print_ratios(n: int, rows: list[dict]) -> None:
    """Each dispatcher mode against the floor of the same run: queued -> first Originate."""
    floor = next((r for r in rows if r["mode"] == FLOOR and r["overhead"]), None)
    if floor is None:
        return
    for row in rows:
        if row is floor or not row["overhead"]:
            continue
        p50 = ratio(pct(row["overhead"], 50), pct(floor["overhead"], 50))
        p99 = ratio(pct(row["overhead"], 99), pct(floor["overhead"], 99))
        print(f"{n:>5} ratio {row['mode'] + '/floor':<21} queued->originate p50 {p50:6.2f}x, "
              f"p99 {p99:6.2f}x;  dispatcher CPU {row['cpu_per_call'] * 1000:.2f} ms/call")


HEADER = (f"{'N':>5} {'mode':<15} {'bridged':>8} {'queued->originate p50/p99 ms':>30} "
          f"{'accept->bridge p50/p99 ms':>27} {'dispatcher CPU ms/call':>23} "
          f"{'recorder CPU ms/call':>20}")


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def bench_modes() -> list[str]:
    """BENCH_MODES, comma-separated (default: all three)."""
    wanted = [m.strip() for m in os.environ.get("BENCH_MODES", ",".join(MODES)).split(",")]
    unknown = [m for m in wanted if m not in MODES]
    if unknown:
        raise SystemExit(f"BENCH_MODES: unknown {unknown}; known: {', '.join(MODES)}")
    return wanted


def main_real(sizes: list[int]) -> None:
    require_asterisk()  # before anything is rendered: exit 2 and say what to run
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-real-"))
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    try:
        base = config.load(env={}, var_dir=str(tmp), redis_url=url, wave_timeout_s=20.0,
                           languages=("en", "es"))
        base = dataclasses.replace(base, prompts_dir=str(short_prompts(tmp / "prompts", base)))
        db.upgrade(base)
        RosterStore(db.engine_for(base), base.timezone).replace_all(
            roster(real_roster_size(max(sizes), base), e164=True))
        # Our own settings only: a PR_ variable of the shell (a secret, a port) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
        env.update(PR_VAR_DIR=str(tmp), PR_REDIS_URL=url, PR_LOG_LEVEL="WARNING",
                   PR_WAVE_TIMEOUT_S="20", PR_PROMPTS_DIR=str(base.prompts_path),
                   PR_LANGUAGES="en,es", **QUESTION_TIMEOUTS)
        silent = Workload(keys=SILENT_KEYS, time_scale=1.0, until_bridged=True)
        print(HEADER)
        for n in sizes:
            print(f"N={n}: stand-in (time scale 1) ...", file=sys.stderr, flush=True)
            standin = run_interruptible(one_run(n, "dispatcher", base, env, silent))
            standin["mode"] = "stand-in"
            print(f"N={n}: real Asterisk ...", file=sys.stderr, flush=True)
            real = run_interruptible(one_run_real(n, base, env, tmp))
            for row in (standin, real):
                print_row(n, row)
            rp = [ratio(pct(real[k], p), pct(standin[k], p))
                  for k in ("overhead", "bridge") for p in (50, 99)]
            print(f"{'':>5} ratio real/stand-in: queued->originate p50 {rp[0]:.2f}x, p99 "
                  f"{rp[1]:.2f}x; accept->bridge p50 {rp[2]:.2f}x, p99 {rp[3]:.2f}x; dispatcher "
                  f"CPU per call {ratio(real['cpu_per_call'], standin['cpu_per_call']):.2f}x",
                  flush=True)
        print("\nSilent callers (nothing pressed), 0.4 s tone prompts, 1 s per question, all at "
              "once; phones answer after 2 s and press 1 1.5 s into the whisper. Times as each "
              "PBX produced its events: queued (the IVR's Redis event) -> the first Newchannel "
              "of the call's pr-<call>- legs; accepted (the whisper's Redis event) -> the "
              "responder's leg's ConfbridgeJoin. Real PBX: Asterisk's event Timestamps. "
              "Dispatcher CPU: /proc/<pid>/stat, 10 ms ticks, over bridged calls.")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            redis.Redis.from_url(url).flushdb()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pbx", choices=("standin", "real"), default="standin",
                        help="standin (default): the dispatcher vs a bare AMI floor on the "
                             "stand-in; real: on the real Asterisk next to the stand-in, "
                             "silent callers in real time (Asterisk installed by "
                             "scripts/install-asterisk)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated N (default 1,50,500; --pbx real 1,50: bigger N, "
                             "up to about 500 (RTP ports), works but takes minutes)")
    parser.add_argument("--roster", type=int, default=None,
                        help="responders on call (stand-in; default: four per caller at the "
                             "largest N, plus 20; fewer: callers wait for free responders)")
    args = parser.parse_args()
    if args.pbx == "real":
        main_real([int(s) for s in (args.sizes or "1,50").split(",") if s.strip()])
        return
    sizes = [int(s) for s in (args.sizes or "1,50,500").split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    base = config.load(env={}, var_dir=str(tmp), redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
                       wave_timeout_s=20.0)
    render_all(base, load_catalog())
    db.upgrade(base)
    # A first wave for every caller at once (the module's docstring says why).
    people = args.roster or real_roster_size(max(sizes), base)
    RosterStore(db.engine_for(base), base.timezone).replace_all(roster(people))
    env = {**os.environ, "PR_VAR_DIR": str(tmp), "PR_REDIS_URL": base.effective_redis_url,
           "PR_LOG_LEVEL": "WARNING", "PR_WAVE_TIMEOUT_S": "20"}
    modes = bench_modes()
    print(HEADER, flush=True)
    for n in sizes:
        rows = [asyncio.run(one_run(n, mode, base, env, people=people)) for mode in modes]
        for row in rows:
            print_row(n, row)
        print_ratios(n, rows)
        print(flush=True)
    print(f"{people} responders on call, {base.ring_per_wave or 'all'} phones a wave. Dispatcher "
          "CPU: /proc/<pid>/stat (10 ms ticks), summed over the dispatcher processes (two in "
          "'dispatchers x2'), per call bridged; recorder CPU: the same for the recorder "
          "processes the dispatchers start (workers/dispatcher/recording.py), which write the "
          "SQL records. Ratios: against the floor of the same N in the same run, which rings "
          f"{max(1, base.ring_per_wave)} phones per call too.")
    if not os.environ.get("BENCH_KEEP"):
        redis.Redis.from_url(base.effective_redis_url).flushdb()


if __name__ == "__main__":
    main()
