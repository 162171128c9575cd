"""A responder's leg moves only its own call's caller, on the real Asterisk 22 (the stand-in's
IMPORT() and the [pr-responder] check in tests/test_standin_dialplan.py, checked here against
the real thing). After a PBX restarts, channel names start again from 00000001: a call whose
caller died with the old process names a channel that may now be a stranger's. Here the
record is pointed at another live caller's channel on purpose: the responder who takes the
call must not pull that stranger into its room; the call ends as its caller left it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import time

import pytest

from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from crisisline.stores.calls import call_key
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


async def test_a_responder_never_pulls_a_stranger_into_the_room(live_settings, tmp_path):
    if not REAL:
        pytest.fail("Asterisk is not installed: scripts/install-asterisk (scripts/test runs it)")
    settings = dataclasses.replace(live_settings, languages=("en", "es"), wrapup_s=0,
                                   unattended_s=60)
    async with real_system(settings, ROSTER, tmp_path, wave_timeout_s=3,
                           default_phone="never") as system:
        first = await system.call("2 02121 2")
        first_id = await system.wait_call_id(first)
        stranger = await system.call("2 02121 2")
        stranger_id = await system.wait_call_id(stranger)
        # The first call's record names the second caller's channel (as a restart would).
        theirs = system.db.call(stranger_id)["channel"]
        system.db.client.hset(call_key(first_id), "channel", theirs)
        # The stranger's own call is nobody's to ring here (only the first one is offered).
        system.db.client.hset(call_key(stranger_id), "state", "ivr")
        system.db.client.zrem("pr:queue", stranger_id)
        await system.set_phones("never", ana="answer:1")
        assert await until(lambda: system.db.call(first_id).get("accepted_by") == "ana"), \
            str((system.db.call(first_id), [e.get("type") + ":" + e.get("reason", "")
                                            + e.get("responder", "")
                                            for e in system.db.events(first_id)]))
        # The leg saw the channel was not its caller's: nobody moved, the call ended.
        assert await until(lambda: system.db.call(first_id).get("state") == "abandoned"), \
            system.db.call(first_id)
        assert system.db.call(first_id)["end_reason"] == "caller_gone"
        joined = [e for e in system.line.pbx_events if e.get("Event") == "ConfbridgeJoin"
                  and e.get("Conference") == f"call-{first_id}"]
        assert all(e.get("Channel") != theirs for e in joined)
        events = [e for e in system.line.pbx_events if e.get("Event") == "UserEvent"
                  and e.get("UserEvent") == "PRCallerGone"]
        assert events and events[0].get("CallID") == first_id
        for call in (first, stranger):
            await call.hangup("test over")
