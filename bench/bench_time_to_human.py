"""Time to a human: 20 callers at real prompt lengths, ringing during the questions or after.

N scripted callers arrive through the stand-in PBX at time scale 1 (every prompt lasts as
long as its rendered audio), with `peoples-response agi` and `dispatcher` as processes,
real Redis, and the Boston menu. Each caller presses keys when a person who knows the
answer would: their language's key just after hearing their own option, the ZIP a moment
after the question, consent after the promise and the question (half say yes and leave a
short spoken message); 10 % stay silent throughout. Responders' phones ring 5 s, answer,
hear the whole whisper and press 1.

Prints p50/p90 of answer -> first responder leg ringing and answer -> caller and responder
both in the room (as the PBX saw them), for the flow that rings during the questions
(PR_RING_DURING_INTAKE=yes, the default) and, in the same run, the flow that asks
everything first (PR_RING_DURING_INTAKE=no); the ratio is new / ask-first.

    .venv/bin/python bench/bench_time_to_human.py [--callers 20] [--spacing 1.5]

It runs in real time: about two minutes per flow.
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
import wave
from datetime import time as dtime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import free_port, pct  # noqa: E402
from crisisline import config, db, ivr  # noqa: E402
from crisisline.prompts.availability import available_languages  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.files import audio_path  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team  # noqa: E402
from crisisline.roster.store import RosterStore  # noqa: E402
from standin.ami import AmiServer  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.phones import phones_for  # noqa: E402
from standin.serve import build_pbx  # noqa: E402

REDIS_DB = 12
SECRET = "bench-secret-0123456789"
# Who calls (20 per round): Boston's mix, roughly; None = a caller who presses nothing.
MIX = ["en"] * 8 + ["es"] * 5 + ["ht"] * 2 + ["pt", "yue", "vi"] + [None] * 2
ZIPS = ["02121", "02124", "02119", "02128", "02130"]
REACTION_S = 0.6   # from hearing one's option to the key
TYPING_S = 1.5     # from the end of the ZIP question to the five digits
MESSAGE = "I need someone to talk to. My brother is not doing well tonight and I am scared."


def roster() -> RosterSnapshot:
    """Three teams, 40 responders on call all week; everyone speaks English, and enough
    speak each caller language that language-first waves always find one."""
    teams = (Team("dot", "Dorchester", frozenset({"Dorchester"}), frozenset({"rox"})),
             Team("rox", "Roxbury", frozenset({"Roxbury", "Jamaica Plain"}), frozenset({"dot"})),
             Team("eb", "East Boston", frozenset({"East Boston"})))
    second = ["es"] * 12 + ["ht"] * 6 + ["pt"] * 4 + ["yue"] * 4 + ["vi"] * 4 + [None] * 10
    people = tuple(
        Responder(f"r{i:02d}", f"Responder {i}", f"PJSIP/r{i:02d}",
                  frozenset({"en", lang} if lang else {"en"}), teams[i % 3].id)
        for i, lang in enumerate(second))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot(teams, people, shifts)


def seconds_of(settings: config.Settings, lang: str, name: str) -> float:
    path = audio_path(settings, lang, name)
    if path is None:
        raise SystemExit(f"bench: no audio for {lang}/{name}; render prompts first")
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


# Where, in each mix language's ZIP question, a caller has heard what to type.
ZIP_CUES = {"en": "ZIP code", "es": "dígitos", "ht": "senk chif", "pt": "ZIP code",
            "yue": "郵政編碼", "vi": "năm số"}


def zip_heard(lang: str) -> float:
    """The share of the ZIP question's text up to its cue (espeak-ng speaks at an even
    pace, so it is about the share of its audio)."""
    text = load_catalog().text("ask_zip", lang)
    at = text.find(ZIP_CUES[lang])
    return (at + len(ZIP_CUES[lang])) / len(text) if at >= 0 else 1.0


def script_for(settings: config.Settings, lang: str | None, zip_code: str, consents: bool,
               menu: list[str], message: Path) -> CallerScript:
    """Keys timed as a person who knows the answer presses them (see CallerScript)."""
    if lang is None:
        return CallerScript(keys=["-", "-", "-"], stay_s=None)
    # The menu: options in order; a timed key is armed at the first option's start.
    at = sum(seconds_of(settings, option, "language_option")
             for option in menu[:menu.index(lang) + 1]) + REACTION_S
    key = ivr.language_keys(settings.languages)[lang]
    # Whoever knows their ZIP starts typing once they hear it asked for (the first digit
    # stops GET DATA's prompt); the five digits are in TYPING_S later.
    zip_at = seconds_of(settings, lang, "ask_zip") * zip_heard(lang) + REACTION_S + TYPING_S
    # Armed at the promise (the first prompt after the ZIP): promise, then the question.
    consent_at = (seconds_of(settings, lang, "promise")
                  + seconds_of(settings, lang, "ask_consent") + REACTION_S)
    keys = [f"{key}@{at:.2f}", f"{zip_code}@{zip_at:.2f}",
            f"{'1' if consents else '2'}@{consent_at:.2f}"]
    return CallerScript(keys=keys, stay_s=None, speech=message if consents else None,
                        record_end="silence" if consents else "dtmf")


class Watch:
    """What the PBX saw, per caller channel: answer, first ring, both in the room."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}      # caller channel -> answer
        self.call_of: dict[str, str] = {}        # call id -> caller channel
        self.first_ring: dict[str, float] = {}   # call id -> first responder leg
        self.in_room: dict[str, dict[str, float]] = {}  # call id -> channel -> joined
        self.bridged: dict[str, float] = {}      # call id -> caller and a responder in

    def on_event(self, event: dict) -> None:
        now = time.time()
        kind = event.get("Event")
        uid = str(event.get("Uniqueid", ""))
        if kind == "VarSet" and event.get("Variable") == "PR_CALL_ID" and event.get("Value"):
            self.call_of.setdefault(str(event["Value"]), str(event.get("Channel", "")))
        elif kind == "Newchannel" and uid.startswith("pr-"):
            self.first_ring.setdefault(uid.split("-")[1], now)
        elif kind == "ConfbridgeJoin":
            call_id = str(event.get("Conference", ""))[len("call-"):]
            room = self.in_room.setdefault(call_id, {})
            room[str(event.get("Channel", ""))] = now
            caller = self.call_of.get(call_id)
            if caller in room and len(room) > 1:
                self.bridged.setdefault(call_id, now)
        elif kind == "ConfbridgeLeave":
            call_id = str(event.get("Conference", ""))[len("call-"):]
            self.in_room.get(call_id, {}).pop(str(event.get("Channel", "")), None)


async def one_round(mode: str, callers: list[tuple[str | None, str, bool]], spacing: float,
                    base: config.Settings, env: dict[str, str], message: Path) -> dict:
    redis.Redis.from_url(base.effective_redis_url).flushdb()
    agi_port = free_port()
    settings = dataclasses.replace(base, agi_port=agi_port, ami_secret=SECRET, ami_port=0)
    pbx = build_pbx(settings, time_scale=1.0)
    watch = Watch()
    pbx.subscribe(watch.on_event)
    server = AmiServer(pbx, username=settings.ami_user, secret=SECRET, host="127.0.0.1", port=0)
    await server.start()
    phones_for(pbx).set_default("answer-late:5")
    env = {**env, "PR_AGI_PORT": str(agi_port), "PR_AMI_PORT": str(server.port),
           "PR_AMI_SECRET": SECRET, "PR_RING_DURING_INTAKE": mode}
    exe = [sys.executable, "-m", "peoples_response.cli"]
    procs = [subprocess.Popen([*exe, what], env=env, stdout=subprocess.DEVNULL)
             for what in ("agi", "dispatcher")]
    await asyncio.sleep(3.0)
    menu = [lang for page in ivr.menu_pages(settings.languages, settings.menu_page_size,
                                            available_languages(settings, load_catalog()))
            for _, lang in page]
    channels, who = [], {}
    for lang, zip_code, consents in callers:
        ch = await pbx.start_call("from-direct", "6175550100",
                                  script_for(settings, lang, zip_code, consents, menu, message))
        watch.started[ch.name] = time.time()
        who[ch.name] = (lang, consents)
        channels.append(ch)
        await asyncio.sleep(spacing)
    # Until every caller has a person (or two minutes more), then everyone hangs up.
    deadline = time.time() + 120
    while time.time() < deadline and len(watch.bridged) < len(callers):
        await asyncio.sleep(0.5)
    rows = []
    for call_id, channel in watch.call_of.items():
        answered = watch.started.get(channel)
        if answered is None:
            continue
        ring = watch.first_ring.get(call_id)
        human = watch.bridged.get(call_id)
        lang, consents = who[channel]
        rows.append({"language": lang or "(silent)", "message": consents and lang is not None,
                     "to_ring": ring - answered if ring else None,
                     "to_human": human - answered if human else None})
    for ch in channels:
        await pbx.hangup(ch.name)
    await asyncio.sleep(1.0)
    for p in procs:
        p.terminate()
        p.wait(10)
    await server.close()
    await pbx.close()
    return {"mode": mode, "callers": len(callers), "rows": rows}


def figures(rows: list[dict], prompt_only: bool = False) -> tuple[list[float], list[float]]:
    chosen = [r for r in rows if not prompt_only or r["language"] != "(silent)"]
    return ([r["to_ring"] for r in chosen if r["to_ring"] is not None],
            [r["to_human"] for r in chosen if r["to_human"] is not None])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.5,
                        help="seconds between callers' arrivals")
    parser.add_argument("--detail", action="store_true", help="print every caller's times")
    args = parser.parse_args()
    rng = random.Random(10)
    mix = (MIX * (args.callers // len(MIX) + 1))[:args.callers]
    rng.shuffle(mix)
    callers = [(lang, rng.choice(ZIPS), i % 2 == 0) for i, lang in enumerate(mix)]

    tmp = Path(tempfile.mkdtemp(prefix="bench-tth-"))
    base = config.load(env={}, var_dir=str(tmp), redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}")
    print("rendering the Boston prompts ...", flush=True)
    render_all(base, load_catalog())
    message = tmp / "message.wav"
    subprocess.run(["espeak-ng", "-w", str(message), MESSAGE], check=True)
    db.upgrade(base)
    RosterStore(db.engine_for(base), base.timezone).replace_all(roster())
    env = {**os.environ, "PR_VAR_DIR": str(tmp), "PR_REDIS_URL": base.effective_redis_url,
           "PR_LOG_LEVEL": "WARNING"}
    print(f"{len(callers)} callers, one every {args.spacing} s; phones answer after 5 s and "
          f"press 1 after the whole whisper", flush=True)
    rounds = []
    for mode in ("yes", "no"):
        result = asyncio.run(one_round(mode, callers, args.spacing, base, env, message))
        rounds.append(result)
        label = "ring during questions" if mode == "yes" else "ask everything first"
        ring, human = figures(result["rows"])
        print(f"PR_RING_DURING_INTAKE={mode:<3} ({label}): rung {len(ring)}/{len(callers)}, "
              f"bridged {len(human)}/{len(callers)}", flush=True)
        for name, only in (("all callers", False), ("callers who press keys", True)):
            ring, human = figures(result["rows"], only)
            print(f"  {name:<23} answer -> first ring p50 {pct(ring, 50):5.1f} s "
                  f"p90 {pct(ring, 90):5.1f} s | answer -> bridged p50 {pct(human, 50):5.1f} s "
                  f"p90 {pct(human, 90):5.1f} s", flush=True)
        if args.detail:
            for row in sorted(result["rows"], key=lambda r: r["to_ring"] or 1e9):
                print(f"    {row['language']:<9} message={'yes' if row['message'] else 'no ':<3} "
                      f"first ring {row['to_ring'] or float('nan'):5.1f} s  "
                      f"bridged {row['to_human'] or float('nan'):5.1f} s")
    new, old = (figures(r["rows"]) for r in rounds)
    if all(new) and all(old):
        print(f"ratio new / ask-first (all callers): first ring p50 "
              f"{pct(new[0], 50) / pct(old[0], 50):.2f}x, bridged p50 "
              f"{pct(new[1], 50) / pct(old[1], 50):.2f}x, bridged p90 "
              f"{pct(new[1], 90) / pct(old[1], 90):.2f}x")
    if not os.environ.get("BENCH_KEEP"):
        redis.Redis.from_url(base.effective_redis_url).flushdb()


if __name__ == "__main__":
    main()
