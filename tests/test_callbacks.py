"""Callbacks (issue 12), on real Redis and the stand-in: the caller's place is kept, the
responder is rung first and then the caller, the safety answers are obeyed, attempts are
counted and retried, a caller who calls in again keeps one request, and a dispatcher killed
at any step loses nothing and calls nobody twice for one attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

from crisisline import callbacks as cb
from tests.dispatch_helpers import running_system, team_roster

ANA = team_roster(("ana", "dot", "es", False))
CALLER = "6175550142"
E164 = "+16175550142"
# Spanish, ZIP, no message; then at the callback offer: 1 (call me back), 1 (this number is
# safe), 2 (no message on voicemail).
KEYS = "2 02121 2 1 1 2"


def settings_for(live_settings, **kw):
    """Short retries, for the FastAGI server and the dispatcher alike."""
    base = {"callback_retry_s": 0.5, "callback_attempts": 3, "callback_ring_s": 30,
            "wrapup_s": 0.0}
    base.update(kw)
    return dataclasses.replace(live_settings, **base)


async def wait_for(predicate, timeout: float = 20.0, step: float = 0.05) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def events(system, call_id: str) -> list[dict[str, str]]:
    out = []
    for _, body in system.db.client.xrange("pr:events"):
        body = {_s(k): _s(v) for k, v in body.items()}
        if body.get("call_id") == call_id:
            out.append(body)
    return out


def types(system, call_id: str) -> list[str]:
    return [e["type"] for e in events(system, call_id)]


async def request_and_leave(system, keys: str = KEYS, caller_id: str = CALLER):
    """A caller nobody answers asks for a callback and hangs up once it is confirmed."""
    caller = await system.call(keys, caller_id_num=caller_id, leave_after="callback_confirmed")
    call_id = await system.wait_call_id(caller)
    assert await wait_for(lambda: "callback_pending" in types(system, call_id)), \
        types(system, call_id)
    return caller, call_id


async def test_responder_first_then_the_caller_from_the_line_number(live_settings):
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        caller, call_id = await request_and_leave(system)
        call = system.db.call(call_id)
        assert call["cb_state"] == "pending" and call["callback_number"] == E164
        assert call["cb_safe_here"] == "1" and call["cb_message"] == "0"
        assert call["state"] in ("waiting", "dispatching")  # still in the queue, same place
        # Now Ana answers; the caller's phone picks up after 2 s.
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "answer:2")
        assert await wait_for(lambda: system.db.call(call_id).get("cb_outcome") == "bridged")
        assert await wait_for(lambda: bool(system.db.call(call_id).get("time_to_human_s")))
        seen = types(system, call_id)
        # The responder accepted before the line dialled the caller.
        assert seen.index("accepted") < seen.index("callback_calling") < \
            seen.index("callback_answered") < seen.index("bridged")
        call = system.db.call(call_id)
        assert call["accepted_by"] == "ana" and call["cb_attempts"] == "1"
        assert float(call["cb_time_to_human_s"]) > 0
        # The leg that reached the caller dialled their number, from the line's number.
        dialled = [e for e in system.pbx.events if e.get("Event") == "DialBegin"
                   and e.get("DialString", "").startswith(E164)]
        assert len(dialled) == 1
        assert dialled[0]["CallerIDNum"] == system.settings.line_number
        room = system.pbx.rooms.get(f"call-{call_id}", [])
        assert len(room) == 2 and any("direct-trunk" in c.name for c in room)
        # Talking with the caller, Ana is on this call: no other caller is offered to her.
        ana = system.db.client.hgetall("pr:responder:ana")
        assert ana.get("on_call_with") == call_id, ana
        for ch in room:
            await system.pbx.hangup(ch.name)
        # The call over, she is free again (after her wrap-up).
        assert await wait_for(lambda: not system.db.client.hget("pr:responder:ana",
                                                                "on_call_with"))
        assert caller.trace.prompts  # (the original caller had hung up long before)


async def test_no_message_means_a_machine_is_hung_up_on_and_tried_again(live_settings):
    async with running_system(settings_for(live_settings, callback_attempts=2), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "voicemail:1")
        assert await wait_for(lambda: system.db.call(call_id).get("state") == "callback_failed"), \
            types(system, call_id)
        call = system.db.call(call_id)
        assert call["cb_outcome"] == cb.MACHINE_HUNG_UP and call["cb_attempts"] == "2"
        failed = [e for e in events(system, call_id) if e["type"] == "callback_attempt_failed"]
        assert [e["result"] for e in failed] == [cb.MACHINE_HUNG_UP]
        # Nothing was played to the machine, on either attempt.
        assert len(system.pbx.dialled) == 2
        assert not any("callback_voicemail" in p for c in system.pbx.dialled
                       for p in c.trace.prompts)
        assert not system.db.client.exists(f"pr:callback:number:{cb.number_key(E164)}")


async def test_a_message_once_when_the_caller_allowed_it(live_settings):
    keys = "2 02121 2 1 1 1"  # ... and yes, a message may be left
    async with running_system(settings_for(live_settings, callback_attempts=2), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        _, call_id = await request_and_leave(system, keys)
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "voicemail:1")
        assert await wait_for(lambda: system.db.call(call_id).get("state") == "callback_failed")
        results = [e["result"] for e in events(system, call_id)
                   if e["type"] in ("callback_attempt_failed", "callback_failed")]
        # The first attempt left the message; the second hung up before the beep.
        assert results == [cb.MESSAGE_LEFT, cb.MACHINE_HUNG_UP]
        assert system.db.call(call_id)["cb_message_left"] == "1"
        heard = [[p.rsplit("/", 1)[-1] for p in c.trace.prompts] for c in system.pbx.dialled]
        assert heard == [["callback_voicemail"], []]


def prompts_of(channel) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in channel.trace.prompts]


def whispers(system) -> list[list[str]]:
    return [prompts_of(leg.ch) for leg in system.phones.legs if leg.ch is not None]


async def test_another_number_is_called_and_the_whisper_says_what_the_caller_asked(live_settings):
    # Not safe at this number: 2, then another number, then yes to a message.
    keys = "2 02121 2 1 2 6175550199# 1"
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        _, call_id = await request_and_leave(system, keys)
        call = system.db.call(call_id)
        assert call["callback_number"] == "+16175550199" and call["cb_safe_here"] == "0"
        assert call["cb_message"] == "1"
        system.phones.set("ana", "answer-late:1")
        system.phones.set("+16175550199", "answer:1")
        assert await wait_for(lambda: system.db.call(call_id).get("cb_outcome") == "bridged")
        heard = next(w for w in whispers(system) if "whisper_callback" in w)
        assert heard.index("whisper_callback") < heard.index("whisper_callback_other_number") \
            < heard.index("whisper_callback_message_ok") < heard.index("whisper_press_1_callback")
        dialled = [c.name for c in system.pbx.dialled]
        assert len(dialled) == 1
        assert [e["DialString"] for e in system.pbx.events if e.get("Event") == "DialBegin"
                and e.get("DialString", "").startswith("+1")] == ["+16175550199@direct-trunk"]
        for ch in list(system.pbx.channels.values()):
            await system.pbx.hangup(ch.name)


async def test_a_withheld_number_is_asked_for_and_silence_on_safety_promises_nothing(live_settings):
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        # Withheld caller ID: asked for a number straight away (no "is this number safe").
        _, call_id = await request_and_leave(system, "2 02121 2 1 6175550199# 2",
                                             caller_id="")
        call = system.db.call(call_id)
        assert call["callback_number"] == "+16175550199" and call["cb_safe_here"] == ""
        # A caller who says nothing when asked whether their number is safe: no request.
        caller = await system.call("2 02121 2 1 - -", caller_id_num="6175550177")
        other = await system.wait_call_id(caller)
        assert await wait_for(lambda: "callback_declined" in types(system, other))
        assert not system.db.call(other).get("callback_number")
        assert [e.get("reason") for e in events(system, other)
                if e["type"] == "callback_declined"] == ["no_safe_number"]
        await system.pbx.hangup(caller.name)


async def test_police_or_911_is_never_a_callback_number(live_settings):
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        caller = await system.call("2 02121 2 1 2 911# 6173434500# -", caller_id_num=CALLER)
        call_id = await system.wait_call_id(caller)
        assert await wait_for(lambda: "callback_declined" in types(system, call_id))
        assert not system.db.call(call_id).get("callback_number")
        await system.pbx.hangup(caller.name)


async def test_attempts_are_spaced_then_the_request_fails_and_supervisors_see_it(live_settings):
    async with running_system(settings_for(live_settings, callback_attempts=3,
                                           callback_retry_s=1.0),
                              ANA, wave_timeout_s=0.5, default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "never")  # rings out every time
        assert await wait_for(lambda: system.db.call(call_id).get("state") == "callback_failed",
                              timeout=40)
        call = system.db.call(call_id)
        assert call["cb_outcome"] == "failed" and call["cb_attempts"] == "3"
        tries = [float(e["at"]) for e in events(system, call_id) if e["type"] == "callback_calling"]
        assert len(tries) == 3 and all(b - a >= 1.0 for a, b in itertools.pairwise(tries))
        assert len(system.pbx.dialled) == 3  # one dial per attempt, never two
        assert call_id not in {_s(m) for m in system.db.client.smembers("pr:live")}
        # Ana was free again after each failed attempt (she was rung for the next one).
        assert system.db.client.hget("pr:responder:ana", "on_call_with") in ("", None)


async def test_the_responder_giving_up_counts_as_an_attempt(live_settings):
    async with running_system(settings_for(live_settings, callback_retry_s=60), ANA,
                              wave_timeout_s=0.5, default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "never")
        assert await wait_for(lambda: "callback_calling" in types(system, call_id))
        leg = next(c for c in system.pbx.channels.values() if c.name.startswith("PJSIP/ana"))
        await system.pbx.hangup(leg.name)
        assert await wait_for(lambda: "callback_attempt_failed" in types(system, call_id))
        failed = [e for e in events(system, call_id) if e["type"] == "callback_attempt_failed"]
        assert [e["result"] for e in failed] == [cb.RESPONDER_GAVE_UP]
        assert system.db.call(call_id)["cb_state"] == "pending"
        assert system.db.client.zscore("pr:callback:later", call_id) is not None


async def test_a_callback_keeps_its_place_ahead_of_later_callers(live_settings):
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="answer:1") as system:
        # Ana is with someone; a caller asks for a callback and leaves; a later caller waits
        # on the line. When Ana is free, the callback is hers first.
        busy = await system.call("2 02121 2", caller_id_num="6175550111")
        busy_id = await system.wait_call_id(busy)
        assert await system.wait_state(busy_id, {"bridged"}) == "bridged"
        _, first = await request_and_leave(system)
        later = await system.call("2 02121 2", caller_id_num="6175550123")
        second = await system.wait_call_id(later)
        assert float(system.db.call(first)["queue_score"]) < \
            float(system.db.call(second)["queue_score"])
        system.phones.set(E164, "answer:1")
        await asyncio.sleep(1.0)
        await system.pbx.hangup(busy.name)
        assert await wait_for(lambda: system.db.call(first).get("accepted_by") == "ana")
        assert not [e for e in events(system, second) if e["type"] == "offer_ringing"
                    and float(e["at"]) < float(system.db.call(first)["accepted_at"])]
        await system.pbx.hangup(later.name)


async def test_calling_in_again_keeps_one_request_and_its_place(live_settings):
    async with running_system(settings_for(live_settings, callback_retry_s=60), ANA,
                              wave_timeout_s=0.5, default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        # Back on the phone: told it is still coming, presses 2 to keep the callback.
        again = await system.call("2", caller_id_num=CALLER)
        assert await wait_for(lambda: again.finished.is_set())
        heard = prompts_of(again)
        assert heard[:2] == ["callback_still_coming", "goodbye_callback"]
        assert "language_option" not in heard  # no questions again
        assert again.trace.variables.get("PR_CALL_ID") == call_id
        call = system.db.call(call_id)
        assert call["cb_state"] == "pending" and call["channel"] == ""
        # And again, silent this time: they wait on the line, in the request's place.
        third = await system.call("-", caller_id_num=CALLER)
        assert await wait_for(lambda: system.db.call(call_id).get("cb_state") == "requested")
        assert third.trace.variables.get("PR_CALL_ID") == call_id
        call = system.db.call(call_id)
        assert call["channel"] == third.name and call["language"] == "es"
        assert system.db.client.zscore("pr:queue", call_id) is not None or \
            system.db.client.zscore("pr:claimed", call_id) is not None
        # The same call: one request, one record; a responder now gets them on the line.
        system.phones.set("ana", "answer:1")
        assert await system.wait_state(call_id, {"bridged"}) == "bridged"
        assert await wait_for(lambda: bool(system.db.call(call_id).get("time_to_human_s")))
        # The request is closed as reached on the line (just after the bridge is counted).
        assert await wait_for(lambda: system.db.call(call_id).get("cb_outcome") == "bridged")
        assert system.pbx.dialled == []  # nobody dialled: they were on the line
        await system.pbx.hangup(third.name)


async def test_one_person_never_holds_two_requests(live_settings):
    async with running_system(settings_for(live_settings, callback_retry_s=60), ANA,
                              wave_timeout_s=0.5, default_phone="never") as system:
        _, first = await request_and_leave(system)
        # Someone calling from another phone asks to be called back at the first number.
        other = await system.call("2 02121 2 1 2 6175550142# 2", caller_id_num="6175550188",
                                  leave_after="callback_confirmed")
        second = await system.wait_call_id(other)
        assert await wait_for(lambda: "callback_already_requested" in types(system, second))
        assert not system.db.call(second).get("cb_state")
        index = system.db.client.get(f"pr:callback:number:{cb.number_key(E164)}")
        assert index == first


async def test_a_dispatcher_killed_while_the_responder_rings_loses_nothing(live_settings):
    async with running_system(settings_for(live_settings), ANA, wave_timeout_s=0.5,
                              default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        await system.wait_offers(call_id, "ana")
        await system.kill(system.dispatchers[0])
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "answer:1")
        await system.start_dispatcher("d2")
        assert await wait_for(lambda: system.db.call(call_id).get("cb_outcome") == "bridged")
        assert [e["type"] for e in events(system, call_id)].count("callback_calling") == 1
        assert len(system.pbx.dialled) == 1
        for ch in list(system.pbx.channels.values()):
            await system.pbx.hangup(ch.name)


async def test_a_dispatcher_killed_while_the_caller_is_called_calls_them_once(live_settings):
    async with running_system(settings_for(live_settings, callback_retry_s=60), ANA,
                              wave_timeout_s=0.5, default_phone="never") as system:
        _, call_id = await request_and_leave(system)
        system.phones.set("ana", "answer:1")
        system.phones.set(E164, "answer:6")  # rings a while (PBX seconds)
        assert await wait_for(lambda: len(system.pbx.dialled) == 1)
        await system.kill(system.dispatchers[0])
        # Asterisk carries the attempt on by itself: the caller answers and is with Ana.
        assert await wait_for(lambda: system.db.call(call_id).get("cb_outcome") == "bridged")
        await system.start_dispatcher("d2")
        await asyncio.sleep(1.5)
        assert len(system.pbx.dialled) == 1
        assert [e["type"] for e in events(system, call_id)].count("callback_calling") == 1
        room = system.pbx.rooms.get(f"call-{call_id}", [])
        assert len(room) == 2
        for ch in list(system.pbx.channels.values()):
            await system.pbx.hangup(ch.name)
