"""Callbacks on the real Asterisk 22: the responder's leg dials the caller through the
carrier trunk; when it is answered, Dial's G() sends the caller's leg through
answering-machine detection (app_amd, asterisk/amd.conf; [pr-callback-answered]) and puts a
person into the room. The world Asterisk's phones are a person
who says "Hello?" (Asterisk's own hello.wav) and a voicemail that plays vm-intro and a beep:
AMD must tell them apart, and the caller's answers must be obeyed."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import time

import pytest

from crisisline import callbacks as cb
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from tests.real_helpers import REAL, real_system

ROSTER = RosterSnapshot(
    (Team("dot", "Dorchester team", frozenset({"Dorchester"})),),
    (Responder("ana", "Ana", "+16175550101", frozenset({"en", "es"}), "dot"),),
    tuple(Shift("ana", d, time(0), time(0)) for d in range(7)))


async def until(predicate, timeout: float = 60.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


def diagnose(system, call_id: str) -> str:
    """What to look at when a step did not happen: the record, its events, the callback
    contexts Asterisk ran, the PBX's console."""
    types = [body.get("type") for _, body in system.db.client.xrange("pr:events")
             if body.get("call_id") == call_id]
    log = system.line.pbx_proc.tail(40) if system.line.pbx_proc else ""
    apps = [(e.get("Context"), e.get("Application"), e.get("AppData", "")[:80])
            for e in system.line.pbx_events if e.get("Event") == "Newexten"
            and e.get("Context", "").startswith("pr-callback")]
    return "\n".join(map(str, [system.db.call(call_id), types, apps, log]))


async def ask_and_leave(system, number: str, callback_keys: list[str]) -> str:
    caller = await system.call("2 02121 2", caller_id_num=number, callback_keys=callback_keys,
                               leave_after="callback_confirmed")
    call_id = await system.wait_call_id(caller)
    assert await until(lambda: system.db.call(call_id).get("cb_state") == cb.PENDING), \
        system.db.call(call_id)
    return call_id


async def test_the_real_asterisk_calls_back_a_person_and_never_leaves_a_message_unasked(
        live_settings, tmp_path):
    if not REAL:
        pytest.fail("Asterisk is not installed: scripts/install-asterisk (scripts/test runs it)")
    settings = dataclasses.replace(live_settings, languages=("en", "es"), wrapup_s=0,
                                   callback_attempts=1, callback_retry_s=1, unattended_s=30)
    async with real_system(settings, ROSTER, tmp_path, wave_timeout_s=3,
                           default_phone="never") as system:
        # A person answers: bridged with Ana in the call's room.
        person = await ask_and_leave(system, "6175550142", ["1", "1", "2"])
        await system.set_phones("never", ana="answer:1", **{"+16175550142": "person:2"})
        assert await until(lambda: system.db.call(person).get("cb_outcome") == cb.BRIDGED), \
            diagnose(system, person)
        assert await until(lambda: bool(system.db.call(person).get("time_to_human_s")))
        record = system.db.call(person)
        assert record["accepted_by"] == "ana" and record["cb_attempts"] == "1"
        assert record["channel"].startswith("PJSIP/direct-trunk-")  # the leg that called back
        assert system.line.observer is not None
        await system.line.observer.action({"Action": "Hangup", "Channel": record["channel"]})
        assert await system.wait_state(person, {"ended"}) == "ended"

        # A machine answers and the caller said no message: hung up on, nothing left.
        await system.set_phones("never")
        machine = await ask_and_leave(system, "6175550143", ["1", "1", "2"])
        await system.set_phones("never", ana="answer:1", **{"+16175550143": "voicemail:1"})
        assert await until(lambda: system.db.call(machine).get("state") == "callback_failed"), \
            diagnose(system, machine)
        assert system.db.call(machine)["cb_outcome"] == cb.MACHINE_HUNG_UP

        # A machine, and a message allowed: only the line's one sentence, after the beep.
        await system.set_phones("never")
        message = await ask_and_leave(system, "6175550144", ["1", "1", "1"])
        await system.set_phones("never", ana="answer:1", **{"+16175550144": "voicemail:1"})
        assert await until(lambda: system.db.call(message).get("state") == "callback_failed"), \
            diagnose(system, message)
        assert system.db.call(message)["cb_outcome"] == cb.MESSAGE_LEFT
        played = [e.get("AppData", "") for e in system.line.pbx_events
                  if e.get("Event") == "Newexten" and e.get("Application") == "Playback"]
        assert sum("callback_voicemail" in d for d in played) == 1
