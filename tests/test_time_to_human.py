"""Time to a human (issue 10): phones ring while the caller still answers questions, a
responder who takes the call gets the caller at once wherever they are, 0 means a person
now, and a 911/988 transfer rings before its promise ends. The whole line on the stand-in,
in real time (prompts are short tones, so questions take seconds)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from localpbx.tones import short_prompts
from tests.dispatch_helpers import running_system, team_roster

ROSTER = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en,es", False))


def settings_for(live_settings, tmp_path: Path, **kw):
    s = dataclasses.replace(live_settings, languages=("en", "es"), **kw)
    return dataclasses.replace(s, prompts_dir=str(short_prompts(tmp_path / "prompts", s)))


async def until(check, timeout: float = 30) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


def names(trace) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in trace.prompts]


def kinds(system, call_id: str) -> list[str]:
    return [e["type"] for e in system.db.events(call_id)]


async def test_a_prompt_caller_is_rung_before_the_consent_question_ends(live_settings, tmp_path):
    s = settings_for(live_settings, tmp_path)
    async with running_system(s, ROSTER, default_phone="never", wave_timeout_s=10) as system:
        system.pbx.time_scale = 1.0
        caller = await system.call("2 02121 -")
        call_id = await system.wait_call_id(caller)
        assert await until(lambda: "offer_ringing" in kinds(system, call_id))
        # Where the caller was when the first phone rang: still answering questions (the
        # dispatcher can ring before the IVR has moved on from the ZIP it was queued at).
        assert system.db.call(call_id)["step"] in ("zip", "promise", "consent")
        assert await until(lambda: "intake_done" in kinds(system, call_id))
        events = kinds(system, call_id)
        assert events.index("offer_ringing") < events.index("intake_done")
        await system.pbx.hangup(caller.name)


async def test_a_responder_who_accepts_during_the_consent_question_gets_the_caller_at_once(
        live_settings, tmp_path):
    s = settings_for(live_settings, tmp_path, consent_timeout_ms=8000)
    async with running_system(s, ROSTER, default_phone="answer:0.5", wave_timeout_s=10) as system:
        system.pbx.time_scale = 1.0
        caller = await system.call("2 02121 -")  # thinks about the consent question
        call_id = await system.wait_call_id(caller)
        assert await until(lambda: system.db.call(call_id).get("connected_at"))
        heard = names(caller.trace)
        assert heard[-2:] == ["ask_consent", "connecting"] and "waiting" not in heard
        moved = [e for e in system.db.events(call_id) if e["type"] == "moved_from_intake"]
        assert moved and (moved[0]["to"], moved[0]["step"]) == ("connect", "consent")
        assert "record_message" not in heard  # nothing recorded without an explicit 1
        await system.pbx.hangup(caller.name)


async def test_a_message_being_recorded_is_kept_up_to_the_moment_a_responder_takes_the_call(
        live_settings, tmp_path, spoken_message):
    s = settings_for(live_settings, tmp_path)
    async with running_system(s, ROSTER, default_phone="answer:1", wave_timeout_s=10) as system:
        system.pbx.time_scale = 1.0
        long_message = tmp_path / "long.wav"
        import subprocess

        subprocess.run(["sox", str(spoken_message), str(spoken_message), str(spoken_message),
                        str(long_message)], check=True)
        caller = await system.call("2 02121 1", speech=long_message, record_end="silence")
        call_id = await system.wait_call_id(caller)
        assert await until(lambda: system.db.call(call_id).get("connected_at"))
        record = system.db.call(call_id)
        assert record["message_state"] == "done" and record["x_message_file"]
        kept = Path(record["x_message_file"] + ".wav")
        assert kept.exists() and kept.stat().st_size > 44
        recorded = [e for e in system.db.events(call_id) if e["type"] == "message_recorded"]
        assert recorded and recorded[0]["cut_short"] == "1"
        assert names(caller.trace)[-2:] == ["record_message", "connecting"]
        await system.pbx.hangup(caller.name)


async def test_zero_at_the_menu_and_at_the_consent_question_goes_straight_to_waiting(
        live_settings, tmp_path):
    s = settings_for(live_settings, tmp_path)
    async with running_system(s, ROSTER, default_phone="never", wave_timeout_s=10) as system:
        at_menu = await system.call("0")
        at_consent = await system.call("2 02121 0")
        first = await system.wait_call_id(at_menu)
        second = await system.wait_call_id(at_consent)
        for call in (at_menu, at_consent):
            assert await until(lambda c=call: names(c.trace)[-1:] == ["waiting"])
        assert "ask_zip" not in names(at_menu.trace)
        assert "record_message" not in names(at_consent.trace)
        # The IVR writes intake_done as it hands the caller to the waiting room.
        for cid in (first, second):
            assert await until(lambda c=cid: any(e["type"] == "intake_done"
                                                 for e in system.db.events(c)))
        done = {cid: next(e for e in system.db.events(cid) if e["type"] == "intake_done")
                for cid in (first, second)}
        assert (done[first]["person_now"], done[second]["person_now"]) == ("language", "consent")
        assert system.db.call(first)["language"] == "en"  # 0 at the menu: the default
        for call in (at_menu, at_consent):
            await system.pbx.hangup(call.name)


async def test_a_transfer_with_language_and_zip_rings_before_its_promise_ends(live_settings,
                                                                            tmp_path):
    s = settings_for(live_settings, tmp_path)
    async with running_system(s, ROSTER, default_phone="never", wave_timeout_s=10) as system:
        system.pbx.time_scale = 1.0
        caller = await system.call("", source="988", variables={
            "TRANSFER_LANGUAGE": "es", "TRANSFER_ZIP": "02121"})
        call_id = await system.wait_call_id(caller)
        assert await until(lambda: "offer_ringing" in kinds(system, call_id))
        # Rung while the promise plays, or before it began (the call is queued on answer,
        # and the dispatcher can ring before the IVR has written its next step).
        assert system.db.call(call_id)["step"] in ("answer", "transfer_promise")
        # (The ring may even come before the first prompt begins: wait for it to say which.)
        assert await until(lambda: bool(names(caller.trace)))
        assert names(caller.trace)[0] == "transfer_promise"
        await system.pbx.hangup(caller.name)


async def test_a_queued_caller_no_dispatcher_takes_stops_being_asked_and_reaches_a_person(
        live_settings, tmp_path):
    """PR_UNATTENDED_S after queueing with no dispatcher: no more questions (the IVR sees no
    one took the call), and the waiting room hands the caller to the fallback group."""
    s = settings_for(live_settings, tmp_path, unattended_s=5, consent_timeout_ms=8000,
                     max_retries=5)
    async with running_system(s, ROSTER, dispatchers=0) as system:
        system.pbx.time_scale = 1.0
        system.pbx.fallback_answers = True
        # Wrong keys at the consent question, slowly, again and again (six times, with
        # max_retries 5): the questions would go on for half a minute.
        caller = await system.call("2 02121 " + " ".join(["7@3"] * 6))
        call_id = await system.wait_call_id(caller)
        assert await until(lambda: caller.trace.fallback_dialed, 30)
        assert names(caller.trace).count("ask_consent") <= 3
        done = [e for e in system.db.events(call_id) if e["type"] == "intake_done"]
        assert done and done[0].get("unattended") == "1"
        await system.pbx.hangup(caller.name)
