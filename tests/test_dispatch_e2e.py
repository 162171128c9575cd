"""Callers reach responders end to end: our FastAGI IVR, the dispatcher over AMI, the
stand-in PBX ringing scripted phones, real Redis and SQLite."""

from __future__ import annotations

import asyncio
import dataclasses

from sqlalchemy.orm import Session

from crisisline import db
from crisisline.records.schema import CallRecord
from tests.dispatch_helpers import running_system, team_roster

SPANISH_DOT = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en", False),
                          ("dee", "rox", "en,es", False), ("gus", None, "en", True))


def rung(system, call_id):
    return [(e["responder"], e["wave"]) for e in system.db.events(call_id)
            if e["type"] == "offer_ringing"]


async def test_language_match_rings_first_and_the_caller_is_bridged(live_settings):
    async with running_system(live_settings, SPANISH_DOT) as system:
        caller = await system.call("2 02121 2")  # Spanish, Dorchester, no message
        call_id = await system.wait_call_id(caller)
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        assert rung(system, call_id)[0] == ("ana", "1")
        assert system.db.call(call_id)["accepted_by"] == "ana"
        await asyncio.sleep(0.3)
        room = system.pbx.rooms.get(f"call-{call_id}", [])
        assert {c.name for c in room} >= {caller.name}
        assert any("ana" in c.name for c in room)
        assert "connecting" in [p.rsplit("/", 1)[-1] for p in caller.trace.prompts]
        await system.pbx.hangup(caller.name)
        assert await system.wait_state(call_id, {"ended"}) == "ended"
        await asyncio.sleep(0.5)
        with Session(db.engine_for(system.settings)) as session:
            record = session.get(CallRecord, call_id)
            assert (record.outcome, record.answered_by, record.language) == ("bridged", "ana", "es")
            assert record.time_to_human_s is not None and record.waves_used == 1


async def test_escalation_through_every_wave_to_the_backup_group(live_settings):
    """Language before neighborhood: Spanish speakers of the caller's team, then of the
    adjacent team, before anyone who doesn't speak it (the team's, then the backup group)."""
    async with running_system(live_settings, SPANISH_DOT, wave_timeout_s=0.6) as system:
        for rid in ("ana", "ben", "dee"):
            system.phones.set(rid, "never")
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        assert rung(system, call_id) == [("ana", "1"), ("dee", "2"), ("ben", "5"), ("gus", "8")]
        assert system.db.call(call_id)["accepted_by"] == "gus"
        await system.pbx.hangup(caller.name)


async def test_decline_and_voicemail_pass_and_a_voicemail_is_never_bridged(live_settings):
    roster = team_roster(("ana", "dot", "es", False), ("ben", "dot", "es", False),
                         ("cai", "dot", "en", False))
    async with running_system(live_settings, roster, wave_timeout_s=2.0) as system:
        system.phones.set("ana", "decline")
        system.phones.set("ben", "voicemail")
        system.phones.set("cai", "answer:5")
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        offers = system.offers(call_id)
        assert offers["ana"] == "passed:declined" and offers["ben"].startswith("passed:")
        assert system.db.call(call_id)["accepted_by"] == "cai"
        assert not system.phones.violations  # the voicemail leg never joined a room
        await system.pbx.hangup(caller.name)


async def test_a_responder_hearing_the_whisper_is_not_cut_off_when_the_wave_ends(
        live_settings):
    """The whisper (who is waiting, the caller's own message, then 8 s to press 1) can
    outlast a wave. A responder listening to it is left alone when the wave times out; the
    next wave rings meanwhile, and either may take the call."""
    roster = team_roster(("ana", "dot", "es", False), ("cai", "dot", "en", False))
    async with running_system(live_settings, roster, wave_timeout_s=1.0,
                              max_wait_s=90) as system:
        system.pbx.time_scale = 0.3  # the whisper lasts about 4 s: four waves' worth
        system.phones.set("ana", "answer-late:2")   # presses 1 at the end of the whisper
        system.phones.set("cai", "voicemail")  # answers, hears it all, never presses a key
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller, timeout=60)
        assert await system.wait_state(call_id, {"bridged"}, timeout=60) == "bridged"
        assert system.db.call(call_id)["accepted_by"] == "ana"
        assert rung(system, call_id)[:2] == [("ana", "1"), ("cai", "5")]
        waves_ended = [e for e in system.db.events(call_id) if e["type"] == "wave_timeout"]
        assert waves_ended and waves_ended[0]["wave"] == "1"  # ana was still listening then
        passes = [(e["responder"], e["reason"]) for e in system.db.events(call_id)
                  if e["type"] == "offer_passed"]
        assert ("ana", "no_answer") not in passes
        assert not system.phones.violations
        await system.pbx.hangup(caller.name)


async def test_two_responders_pressing_one_at_once_one_wins_the_other_hears_it(live_settings):
    roster = team_roster(("ana", "dot", "es", False), ("bea", "dot", "es", False))
    async with running_system(live_settings, roster, default_phone="answer:1") as system:
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        await asyncio.sleep(0.5)
        winner = system.db.call(call_id)["accepted_by"]
        loser = ({"ana", "bea"} - {winner}).pop()
        assert system.offers(call_id)[loser] in ("passed:taken_by_another", "passed:cancelled")
        room = system.pbx.rooms.get(f"call-{call_id}", [])
        assert not any(loser in c.name for c in room)
        await system.pbx.hangup(caller.name)


async def test_caller_hanging_up_while_responders_ring_cancels_every_leg(live_settings):
    async with running_system(live_settings, SPANISH_DOT, wave_timeout_s=5.0,
                              default_phone="never") as system:
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        await system.wait_offers(call_id)
        await system.pbx.hangup(caller.name)
        assert await system.wait_state(call_id, {"abandoned"}) == "abandoned"
        await asyncio.sleep(0.5)
        assert all(not v.startswith("ringing") for v in system.offers(call_id).values())
        assert not [c for c in system.pbx.channels if "ana" in c or "ben" in c]
        assert system.db.waiting() == [] and system.db.claimed() == []


async def test_all_busy_then_one_frees_up(live_settings):
    # Ana, the only responder, is with a first caller; a second caller waits, unrung, until
    # the first one hangs up and her rest is over.
    roster = team_roster(("ana", "dot", "es", False))
    async with running_system(live_settings, roster, wave_timeout_s=0.5,
                              tweak=lambda s: dataclasses.replace(s, wrapup_s=1.0)) as system:
        first = await system.call("2 02121 2")
        first_id = await system.wait_call_id(first)
        assert await system.wait_state(first_id, {"bridged"}) == "bridged"
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        await asyncio.sleep(1.0)
        assert rung(system, call_id) == []
        await system.pbx.hangup(first.name)
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        assert system.db.call(call_id)["accepted_by"] == "ana"
        await system.pbx.hangup(caller.name)


async def test_nobody_answers_the_caller_is_offered_a_callback_then_the_fallback_group(
        live_settings):
    async with running_system(live_settings, SPANISH_DOT, wave_timeout_s=0.4, max_wait_s=6,
                              default_phone="never") as system:
        # A callback, at this (safe) number, no message; the caller stays on the line.
        caller = await system.call("2 02121 2 1 1 2", caller_id_num="6175550142")
        call_id = await system.wait_call_id(caller)
        assert await system.wait_state(call_id, {"fallback"}, timeout=20) == "fallback"
        record = system.db.call(call_id)
        assert record["callback_number"] == "+16175550142"
        assert record["cb_state"] == "requested"  # kept while they are with the fallback group
        names = [p.rsplit("/", 1)[-1] for p in caller.trace.prompts]
        assert "callback_offer" in names and "callback_safe" in names
        assert "callback_message" in names and "callback_confirmed" in names
        await asyncio.sleep(0.5)
        assert caller.trace.fallback_dialed  # and a person is still being looked for
        dialed = " ".join(caller.trace.dialed)
        assert "911" not in dialed
        # Nobody at the fallback group answered: leaving, they keep the request, in place.
        await system.pbx.hangup(caller.name)
        record = system.db.call(call_id)
        assert record["cb_state"] == "pending" and record["state"] in ("waiting", "dispatching")


async def test_a_supervisor_can_ring_a_chosen_responder_now(live_settings):
    """The panel writes to pr:commands; only the dispatcher talks to AMI."""
    from workers.dispatcher.service import Commands

    roster = team_roster(("ana", "dot", "es", False), ("zed", "rox", "en", False))
    async with running_system(live_settings, roster, wave_timeout_s=5.0) as system:
        system.phones.set("ana", "never")
        system.phones.set("zed", "answer:5")
        commands = Commands(system.dispatchers[0])
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        await system.wait_offers(call_id, "ana")
        await commands.handle({"type": "ring_responder", "call_id": call_id,
                               "responder_id": "zed", "by": "sam"})
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        assert system.db.call(call_id)["accepted_by"] == "zed"
        kinds = [e["type"] for e in system.db.events(call_id)]
        assert "supervisor_ring" in kinds
        await system.pbx.hangup(caller.name)
