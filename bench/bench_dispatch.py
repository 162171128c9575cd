"""Dispatcher overhead: N concurrent callers (1, 50, 500), responders answering after a fixed
delay, real Redis, the stand-in PBX, and `peoples-response agi` / `dispatcher` as processes.

Prints p50/p99 of the system's own overhead from "queued" to the first Originate the PBX
receives, and from a responder's press-1 (accepted) to their leg joining the caller's room,
plus the dispatcher's CPU seconds per call. Baseline, same run: a bare AMI client that
originates the moment it sees "queued" (no policy, no leases) - the floor the transport
itself sets; the ratio is dispatcher / floor.

    .venv/bin/python bench/bench_dispatch.py [--sizes 1,50,500]

BENCH_MODES=dispatcher skips the floor; BENCH_PROFILE=FILE runs the dispatcher under
cProfile and writes its profile there. The dispatcher rings up to PR_RING_PER_WAVE (4)
phones per call where the floor rings one, so at N=500 the stand-in and the AGI server
(whispers) carry four times the floor's load on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import time as dtime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crisisline import config, db  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team  # noqa: E402
from crisisline.roster.store import RosterStore  # noqa: E402
from crisisline.stores.calls import EVENTS  # noqa: E402
from crisisline.stores.offers import offers_key  # noqa: E402
from peoples_response.ami_client import AmiClient  # noqa: E402
from standin.ami import AmiServer  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.phones import phones_for  # noqa: E402
from standin.serve import build_pbx  # noqa: E402

REDIS_DB = 12
SECRET = "bench-secret-0123456789"
TIME_SCALE = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def roster(n: int) -> RosterSnapshot:
    team = Team("dot", "Dorchester", frozenset({"Dorchester"}))
    people = tuple(Responder(f"r{i:04d}", f"R{i}", f"PJSIP/r{i:04d}", frozenset({"es", "en"}), "dot")
                   for i in range(n))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot((team,), people, shifts)


class Watch:
    """Times, as the PBX sees them: Originates received and responders joining rooms."""

    def __init__(self) -> None:
        self.first_originate: dict[str, float] = {}
        self.joined: dict[str, float] = {}

    def on_event(self, event: dict) -> None:
        now = time.time()
        uid = str(event.get("Uniqueid", ""))
        if event.get("Event") == "Newchannel" and uid.startswith("pr-"):
            self.first_originate.setdefault(uid.split("-")[1], now)
        elif event.get("Event") == "ConfbridgeJoin" and "/r" in str(event.get("Channel", "")):
            self.joined.setdefault(str(event.get("Conference", ""))[5:], now)


def call_times(r: redis.Redis) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for _, body in r.xrange(EVENTS):
        body = {k.decode(): v.decode() for k, v in body.items()}
        out.setdefault(body.get("call_id", ""), {}).setdefault(body["type"], float(body["at"]))
    return out


async def run_callers(pbx, n: int, wait_s: float) -> list:
    channels = [await pbx.start_call("from-direct", "6175550100",
                                     CallerScript(keys="2 02121 2", stay_s=None)) for _ in range(n)]
    await asyncio.sleep(wait_s)
    return channels


async def floor_client(settings, r: redis.Redis, stop: asyncio.Event) -> None:
    """The baseline: originate straight from the 'queued' event, no dispatcher logic."""
    ami = await AmiClient.connect("127.0.0.1", settings.ami_port, settings.ami_user, SECRET)
    last = "$"
    n = 0
    while not stop.is_set():
        got = await asyncio.to_thread(r.xread, {EVENTS: last}, 100, 200)
        for _, entries in got or []:
            for eid, body in entries:
                last = eid
                if body.get(b"type") == b"queued":
                    call_id = body[b"call_id"].decode()
                    # The one piece of state the whisper needs: an open offer to accept.
                    r.hset(offers_key(call_id), f"r{n:04d}", "ringing:1")
                    ami.send([("Action", "Originate"), ("Channel", f"PJSIP/r{n:04d}"),
                              ("Context", "pr-responder"), ("Exten", "s"), ("Priority", "1"),
                              ("Async", "true"), ("ChannelId", f"pr-{call_id}-0-1-r{n:04d}"),
                              ("Variable", f"PR_CALL_ID={call_id}"),
                              ("Variable", f"PR_RESPONDER=r{n:04d}")])
                    n += 1
    await ami.close()


async def one_run(n: int, mode: str, base: config.Settings, env: dict[str, str]) -> dict:
    r = redis.Redis.from_url(base.effective_redis_url)
    r.flushdb()
    agi_port = free_port()
    settings = dataclasses.replace(base, agi_port=agi_port, ami_secret=SECRET, ami_port=0)
    pbx = build_pbx(settings, time_scale=TIME_SCALE)
    watch = Watch()
    pbx.subscribe(watch.on_event)
    server = AmiServer(pbx, username=settings.ami_user, secret=SECRET, host="127.0.0.1", port=0)
    await server.start()
    settings = dataclasses.replace(settings, ami_port=server.port)
    phones_for(pbx).set_default("answer:2")
    env = {**env, "PR_AGI_PORT": str(agi_port), "PR_AMI_PORT": str(server.port),
           "PR_AMI_SECRET": SECRET}
    exe = [sys.executable, "-m", "peoples_response.cli"]
    agi = subprocess.Popen([*exe, "agi"], env=env, stdout=subprocess.DEVNULL)
    procs = [agi]
    stop = asyncio.Event()
    floor_task = None
    dispatcher = None
    await asyncio.sleep(1.5)
    if mode == "dispatcher":
        prof = os.environ.get("BENCH_PROFILE")
        dexe = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "peoples_response.cli"] if prof else exe
        dispatcher = subprocess.Popen([*dexe, "dispatcher"], env=env, stdout=subprocess.DEVNULL)
        procs.append(dispatcher)
        await asyncio.sleep(2.5)
        cpu0 = cpu_seconds(dispatcher.pid)
    else:
        floor_task = asyncio.create_task(floor_client(settings, r, stop))
        await asyncio.sleep(0.3)
    started = time.time()
    channels = await run_callers(pbx, n, wait_s=min(60.0, 4.0 + n * 0.05))
    wall = time.time() - started
    cpu = cpu_seconds(dispatcher.pid) - cpu0 if dispatcher else float("nan")
    times = call_times(r)
    overhead, bridge, planned = [], [], []
    for call_id, t in times.items():
        if "queued" in t and call_id in watch.first_originate:
            overhead.append(watch.first_originate[call_id] - t["queued"])
        if "queued" in t and "wave_started" in t:
            planned.append(t["wave_started"] - t["queued"])
        if "accepted" in t and call_id in watch.joined:
            bridge.append(watch.joined[call_id] - t["accepted"])
    stop.set()
    if floor_task:
        await floor_task
    for ch in channels:
        await pbx.hangup(ch.name)
    for p in procs:
        p.terminate()
        p.wait(10)
    await server.close()
    await pbx.close()
    bridged = sum(1 for t in times.values() if "accepted" in t)
    return {"mode": mode, "n": n, "wall": wall, "bridged": bridged, "overhead": overhead,
            "bridge": bridge, "planned": planned, "cpu_per_call": cpu / max(1, bridged)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,50,500")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    base = config.load(env={}, var_dir=str(tmp), redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
                       wave_timeout_s=20.0)
    render_all(base, load_catalog())
    db.upgrade(base)
    RosterStore(db.engine_for(base), base.timezone).replace_all(roster(max(sizes) + 20))
    env = {**os.environ, "PR_VAR_DIR": str(tmp), "PR_REDIS_URL": base.effective_redis_url,
           "PR_LOG_LEVEL": "WARNING", "PR_WAVE_TIMEOUT_S": "20"}
    print(f"{'N':>5} {'mode':<11} {'bridged':>8} {'queued->originate p50/p99 ms':>30} "
          f"{'accept->bridge p50/p99 ms':>27} {'dispatcher CPU ms/call':>23}")
    for n in sizes:
        modes = os.environ.get("BENCH_MODES", "floor,dispatcher").split(",")
        rows = [asyncio.run(one_run(n, mode, base, env)) for mode in modes]
        for row in rows:
            o, b = row["overhead"], row["bridge"]
            print(f"{n:>5} {row['mode']:<11} {row['bridged']:>8} "
                  f"{pct(o, 50) * 1000:>14.1f} / {pct(o, 99) * 1000:>8.1f}    "
                  f"{pct(b, 50) * 1000:>12.1f} / {pct(b, 99) * 1000:>8.1f}   "
                  f"{row['cpu_per_call'] * 1000:>16.2f}")
            if row["planned"]:
                w = row["planned"]
                print(f"{'':>5} {'':<11} {'':>8} of which queued->wave planned (Redis events): "
                      f"p50 {pct(w, 50) * 1000:.1f} / p99 {pct(w, 99) * 1000:.1f} ms")
        if len(rows) == 2 and rows[0]["overhead"] and rows[1]["overhead"]:
            floor, disp = rows
            print(f"{'':>5} ratio dispatcher/floor, queued->originate p50: "
                  f"{statistics.median(disp['overhead']) / statistics.median(floor['overhead']):.2f}x")
    if not os.environ.get("BENCH_KEEP"):
        redis.Redis.from_url(base.effective_redis_url).flushdb()


if __name__ == "__main__":
    main()
