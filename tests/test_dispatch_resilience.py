"""State lives in Redis, not in a dispatcher: kill one mid-ring, run two, drop AMI; every
call still ends bridged, in callback, or abandoned by the caller, and nobody is rung twice
for the same wave."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections import Counter

from tests.dispatch_helpers import running_system, team_roster

ROSTER = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en,es", False),
                     ("cai", "dot", "en,es", False), ("dee", "rox", "en,es", False),
                     ("eve", "rox", "en,es", False), ("gus", None, "en,es", True))
FINAL = {"bridged", "ended", "callback", "abandoned", "fallback"}


def no_double_rings(system, call_id: str) -> None:
    rings = Counter((e["responder"], e["wave"]) for e in system.db.events(call_id)
                    if e["type"] == "offer_ringing")
    assert all(n == 1 for n in rings.values()), rings


async def test_kill_9_the_dispatcher_mid_ring_and_start_another(live_settings):
    async with running_system(live_settings, ROSTER, wave_timeout_s=3.0, dispatchers=0,
                              default_phone="answer:60") as system:  # 1.2 s of ringing
        first = system.start_dispatcher_process()
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller, timeout=20)
        await system.wait_offers(call_id)
        first.send_signal(signal.SIGKILL)  # kill -9, mid-ring
        first.wait(5)
        system.start_dispatcher_process()
        assert await system.wait_state(call_id, {"bridged"}, timeout=30) == "bridged"
        no_double_rings(system, call_id)
        await system.pbx.hangup(caller.name)
        assert await system.wait_state(call_id, {"ended"}) == "ended"
        assert system.db.waiting() == [] and system.db.claimed() == []


async def test_two_dispatchers_share_the_calls_and_never_double_ring(live_settings):
    async with running_system(live_settings, ROSTER, dispatchers=2,
                              default_phone="answer:10") as system:
        callers = [await system.call("2 02121 2") for _ in range(4)]
        ids = [await system.wait_call_id(c) for c in callers]
        states = [await system.wait_state(i, {"bridged"}, timeout=30) for i in ids]
        assert states == ["bridged"] * 4
        owners = {system.db.call(i).get("owner") for i in ids}
        assert owners <= {"d1", "d2"}
        takers = [system.db.call(i)["accepted_by"] for i in ids]
        assert len(set(takers)) == 4  # one responder per caller
        for i in ids:
            no_double_rings(system, i)
        for c in callers:
            await system.pbx.hangup(c.name)


async def test_an_ami_disconnect_mid_call_is_survived(live_settings):
    async with running_system(live_settings, ROSTER, wave_timeout_s=3.0,
                              default_phone="answer:40") as system:
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller)
        await system.wait_offers(call_id)
        gateway = system.dispatchers[0].ami
        gateway.manager.protocol.transport.close()       # the TCP connection drops
        assert await system.wait_state(call_id, {"bridged"}, timeout=20) == "bridged"
        await system.pbx.hangup(caller.name)
        assert await system.wait_state(call_id, FINAL) in FINAL
        second = await system.call("1 02121 2")           # and the next call is served too
        second_id = await system.wait_call_id(second)
        assert await system.wait_state(second_id, {"bridged"}, timeout=20) == "bridged"
        await system.pbx.hangup(second.name)


async def test_with_no_dispatcher_at_all_a_waiting_caller_still_reaches_a_person(live_settings):
    """Nobody takes the call (no dispatcher renews PR_ATTENDED_UNTIL): after unattended_s the
    waiting room hands the caller to the fallback group, by Asterisk alone; Python is never
    the only path to a person. A dispatcher that starts later finds the caller there."""
    settings = dataclasses.replace(live_settings, unattended_s=5)
    async with running_system(settings, ROSTER, dispatchers=0) as system:
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller, timeout=30)
        queued_at = float(system.db.call(call_id)["queued_at"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not caller.trace.fallback_dialed and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert caller.trace.fallback_dialed
        assert time.time() - queued_at < 5 + 10  # the unattended time, and not 16 minutes
        assert [e["UserEvent"] for e in caller.trace.events if e["Event"] == "UserEvent"][:2] == [
            "PRUnattended", "PRFallback"]
        # The caller stays in the fallback group's ring loop meanwhile (slowed down, so the
        # stand-in's loop guard doesn't end the call while a dispatcher starts).
        system.pbx.time_scale, system.pbx.max_dial_attempts = 0.2, 100
        # No dispatcher heard the dialplan's PRFallback event, so Redis still says waiting.
        assert system.db.waiting() == [call_id]
        # A dispatcher that starts now asks Asterisk before ringing anyone, and closes it.
        system.start_dispatcher_process()
        assert await system.wait_state(call_id, {"fallback"}, timeout=20) == "fallback"
        assert not [e for e in system.db.events(call_id) if e["type"] == "offer_ringing"]
        await system.pbx.hangup(caller.name)
        assert system.db.waiting() == []


async def test_a_caller_who_left_while_no_dispatcher_ran_is_not_rung_for(live_settings):
    async with running_system(live_settings, ROSTER, dispatchers=0) as system:
        caller = await system.call("2 02121 2")
        call_id = await system.wait_call_id(caller, timeout=30)
        for _ in range(500):  # until the caller is in the waiting room
            if caller.trace.path[-1][3] == "ConfBridge":
                break
            await asyncio.sleep(0.01)
        # The caller hangs up while the AGI server that would close the record is unreachable.
        caller.set_variable("PR_AGI", "agi://127.0.0.1:1")
        await system.pbx.hangup(caller.name)
        await asyncio.sleep(2.5)
        assert system.db.waiting() == [call_id]
        system.start_dispatcher_process()
        assert await system.wait_state(call_id, {"abandoned"}, timeout=20) == "abandoned"
        assert not [e for e in system.db.events(call_id) if e["type"] == "offer_ringing"]
