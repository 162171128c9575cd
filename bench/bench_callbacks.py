"""Callbacks keep their place: 200 callback requests queued behind 200 waiting calls, with
20 responders.

The 200 waiting callers come in through the stand-in and our IVR (Spanish, ZIP 02121, no
message) and wait on the line. Behind them, 200 callers who arrived later have asked to be
called back and hung up; they asked at different moments after calling, so the order of
their requests is not the order they called in. Responders answer after 1 s (PBX time),
press 1, talk a moment, hang up; the line calls each callback's caller, who answers.
`peoples-response agi` and `dispatcher` run as processes; real Redis.

Printed, for the line (a request keeps its call's place: priority, then arrival) and, in the
same run, a plain FIFO of requests (a request joins the queue when it is made): the order in
which calls were served (a responder took them), as inversions against the queue's order
(pairs served the other way round; 0 = every caller in their place); p50/p90 from a
callback request to a person with the caller; the dispatcher's CPU per call served.

    .venv/bin/python bench/bench_callbacks.py [--waiting 200] [--callbacks 200] [--responders 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import time as dtime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import free_port, pct  # noqa: E402
from bench.measure import stat_cpu_seconds as cpu_seconds  # noqa: E402
from crisisline import callbacks as cb  # noqa: E402
from crisisline import config, db  # noqa: E402
from crisisline.call import Call, Source, new_call_id  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team  # noqa: E402
from crisisline.roster.store import RosterStore  # noqa: E402
from crisisline.stores import async_redis  # noqa: E402
from crisisline.stores.callbacks import CallbackStore  # noqa: E402
from crisisline.stores.calls import EVENTS, QUEUE, CallStore, call_key, queue_score  # noqa: E402
from standin.ami import AmiServer  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.phones import phones_for  # noqa: E402
from standin.serve import build_pbx  # noqa: E402

REDIS_DB = 12
SECRET = "bench-secret-0123456789"
TIME_SCALE = 0.01
TALK_S = 1.0  # real seconds a responder stays with a caller


def inversions(served: list[tuple[float, float, float]]) -> int:
    """Pairs served the other way round from their place in the queue: (served at, place,
    queued at) for each call; a call counts against one served before it only if it was
    already waiting then (a caller still answering the IVR can't be served yet)."""
    out = 0
    for i, (at, place, _) in enumerate(served):
        for _, other_place, other_queued in served[i + 1:]:
            if other_place < place and other_queued <= at:
                out += 1
    return out


def roster(n: int) -> RosterSnapshot:
    team = Team("dot", "Dorchester", frozenset({"Dorchester"}))
    people = tuple(Responder(f"r{i:02d}", f"R{i}", f"PJSIP/r{i:02d}", frozenset({"es", "en"}), "dot")
                   for i in range(n))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot((team,), people, shifts)


async def make_requests(settings: config.Settings, n: int, fifo: bool, rng: random.Random
                        ) -> set[str]:
    """``n`` callers who called (in this order, behind everyone already waiting), then
    asked for a callback, in another order, and hung up. With ``fifo`` a request's place
    is the moment it was made."""
    r = async_redis(settings.effective_redis_url)
    calls, requests = CallStore(r), CallbackStore(r)
    start = time.time()
    arrivals = [start + i * 0.001 for i in range(n)]
    rng.shuffle(arrivals)  # the order they ask in is not the order they called in
    out = set()
    for arrived in arrivals:
        k = len(out)
        call = Call(new_call_id(), Source.DIRECT, "es", settings.priority_for("direct"),
                    neighborhood="Dorchester", caller_number=f"+1617556{k:04d}",
                    created_at=arrived)
        await calls.create(call)
        await calls.enqueue(call)
        await r.hset(call_key(call.id), mapping={"ivr_done": "1", "callback_offered": "1"})
        await requests.request(call.id, cb.SafetyAnswers(call.caller_number or "", True, False))
        await calls.abandon(call.id, "waiting_room")  # they hung up: the request is pending
        if fifo:
            score = queue_score(call.priority, time.time())
            await r.hset(call_key(call.id), "queue_score", str(score))
            await r.zadd(QUEUE, {call.id: score})
        out.add(call.id)
    await r.aclose()
    return out


async def one_run(mode: str, args: argparse.Namespace, base: config.Settings,
                  env: dict[str, str]) -> dict:
    client = redis.Redis.from_url(base.effective_redis_url, decode_responses=True)
    client.flushdb()
    agi_port = free_port()
    settings = dataclasses.replace(base, agi_port=agi_port, ami_secret=SECRET, ami_port=0)
    pbx = build_pbx(settings, time_scale=TIME_SCALE)
    server = AmiServer(pbx, username=settings.ami_user, secret=SECRET, host="127.0.0.1", port=0)
    await server.start()
    phones = phones_for(pbx)
    phones.set_default("never")  # nobody is free until every caller is in place
    env = {**env, "PR_AGI_PORT": str(agi_port), "PR_AMI_PORT": str(server.port),
           "PR_AMI_SECRET": SECRET}
    exe = [sys.executable, "-m", "peoples_response.cli"]
    agi = subprocess.Popen([*exe, "agi"], env=env, stdout=subprocess.DEVNULL)
    procs = [agi]
    await asyncio.sleep(1.5)
    waiting = [await pbx.start_call("from-direct", "6175550100",
                                    CallerScript(keys="2 02121 2", stay_s=None,
                                                 caller_id_num=f"617557{i:04d}"))
               for i in range(args.waiting)]
    deadline = time.time() + 120
    while time.time() < deadline and len(client.zrange(QUEUE, 0, -1)) < args.waiting:
        await asyncio.sleep(0.2)
    requests = await make_requests(settings, args.callbacks, mode == "fifo", random.Random(12))
    for i in range(args.callbacks):
        phones.set(f"+1617556{i:04d}", "person:1")  # the callback's caller answers
    for i in range(args.responders):
        phones.set(f"r{i:02d}", "answer:1")
    dispatcher = subprocess.Popen([*exe, "dispatcher"], env=env, stdout=subprocess.DEVNULL)
    procs.append(dispatcher)
    await asyncio.sleep(1.0)
    cpu0 = cpu_seconds(dispatcher.pid)
    total = args.waiting + args.callbacks
    served: dict[str, float] = {}
    taken: dict[str, float] = {}
    hung: set[str] = set()
    deadline = time.time() + 60 + total * 2.0
    last_id = "0"
    while time.time() < deadline and len(hung) < total:  # until everyone had their talk
        entries = client.xrange(EVENTS, "-" if last_id == "0" else f"({last_id}", "+")
        for eid, body in entries:
            last_id = eid
            # Served: the line rang someone for them (its decision; when a responder
            # presses 1 depends on how long each whisper is).
            if body.get("type") == "offer_ringing":
                served.setdefault(body["call_id"], float(body["at"]))
            elif body.get("type") == "accepted":
                taken.setdefault(body["call_id"], float(body["at"]))
        # A responder talks TALK_S with whoever they took, then the caller hangs up.
        now = time.time()
        for call_id, at in list(taken.items()):
            if call_id in hung or now - at < TALK_S:
                continue
            channel = client.hget(call_key(call_id), "channel") or ""
            if channel and client.hget(call_key(call_id), "connected_at"):
                hung.add(call_id)
                await pbx.hangup(channel)
        await asyncio.sleep(0.05)
    cpu = cpu_seconds(dispatcher.pid) - cpu0
    def row(cid: str, place_field: str) -> tuple[float, float, float]:
        data = client.hgetall(call_key(cid))
        return served[cid], float(data.get(place_field) or 0), float(data.get("queued_at") or 0)

    in_order = sorted(served, key=served.__getitem__)
    # Against the queue (its order is what the line, or the FIFO, made of it); and the
    # callbacks against their callers' arrival (the place a request should keep).
    queue_order = [row(cid, "queue_score") for cid in in_order]
    cb_order = [row(cid, "created_at") for cid in in_order if cid in requests]
    if os.environ.get("BENCH_DEBUG"):
        for cid in requests:
            data = client.hgetall(call_key(cid))
            if not data.get("cb_time_to_human_s"):
                kinds = [b["type"] for _, b in client.xrange(EVENTS) if b.get("call_id") == cid]
                print("NO TTH", cid, {k: v for k, v in data.items()
                                      if k.startswith(("cb_", "state", "channel", "connected"))},
                      kinds)
    to_human = [float(v) for cid in requests
                if (v := client.hget(call_key(cid), "cb_time_to_human_s"))]
    ahead = sum(1 for cid in requests if cid in served and any(
        served[w] > served[cid] for w in served if w not in requests))
    for ch in waiting:
        if not ch.finished.is_set():
            await pbx.hangup(ch.name)
    for p in procs:
        p.terminate()
        p.wait(10)
    await server.close()
    await pbx.close()
    return {"mode": mode, "served": len(taken), "total": total,
            "queue_inversions": inversions(queue_order),
            "arrival_inversions": inversions(cb_order),
            "callbacks_ahead_of_waiting": ahead, "to_human": to_human,
            "cpu_per_call": cpu / max(1, len(taken))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=200)
    parser.add_argument("--callbacks", type=int, default=200)
    parser.add_argument("--responders", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    base = config.load(env={}, var_dir=str(tmp), redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
                       languages=("en", "es"), wrapup_s=0.0, wave_timeout_s=20.0,
                       max_wait_s=3600.0, callback_retry_s=30.0, unattended_s=300)
    render_all(base, load_catalog())
    db.upgrade(base)
    RosterStore(db.engine_for(base), base.timezone).replace_all(roster(args.responders))
    env = {**os.environ, "PR_VAR_DIR": str(tmp), "PR_REDIS_URL": base.effective_redis_url,
           "PR_LOG_LEVEL": "WARNING", "PR_LANGUAGES": "en,es", "PR_WRAPUP_S": "0",
           "PR_WAVE_TIMEOUT_S": "20", "PR_MAX_WAIT_S": "3600", "PR_UNATTENDED_S": "300",
           "PR_STANDIN_TIME_SCALE": str(TIME_SCALE)}
    print(f"{args.waiting} waiting callers, then {args.callbacks} callback requests behind them; "
          f"{args.responders} responders", flush=True)
    rows = [asyncio.run(one_run(mode, args, base, env)) for mode in ("line", "fifo")]
    for row in rows:
        label = {"line": "the line (a request keeps its call's place)",
                 "fifo": "plain FIFO of requests (baseline)"}[row["mode"]]
        print(f"{label}: served {row['served']}/{row['total']}\n"
              f"  inversions against the queue's order: {row['queue_inversions']}; callbacks "
              f"served against their callers' arrival: {row['arrival_inversions']}\n"
              f"  callbacks served before a waiting caller who called earlier: "
              f"{row['callbacks_ahead_of_waiting']}\n"
              f"  request -> a person p50 {pct(row['to_human'], 50):.1f} s, "
              f"p90 {pct(row['to_human'], 90):.1f} s ({len(row['to_human'])} callbacks)\n"
              f"  dispatcher CPU {row['cpu_per_call'] * 1000:.2f} ms per call served", flush=True)
    line, fifo = rows
    if fifo["cpu_per_call"] > 0:
        print(f"ratio line / FIFO: CPU per call {line['cpu_per_call'] / fifo['cpu_per_call']:.2f}x, "
              f"request -> person p50 {pct(line['to_human'], 50) / pct(fifo['to_human'], 50):.2f}x")
    if not os.environ.get("BENCH_KEEP"):
        redis.Redis.from_url(base.effective_redis_url).flushdb()


if __name__ == "__main__":
    main()
