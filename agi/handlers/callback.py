"""``callback?call=<id>``: no responder was free; offer to call the caller back.

1 = a callback, anything else (or nothing) = keep waiting. Then, before anything is
promised, the safety questions, in the caller's language: is it safe to call back the
number they are calling from (1 yes, 2 give another number; a withheld number goes
straight to asking for one), and may a voicemail get a message that only says "People's
Response is returning your call" (1 yes, 2 no; silence is no). The request keeps the call's
place (crisisline/callbacks.py). Either way the caller goes back to their waiting room (the
dialplan), the search goes on, and they may hang up: the request stays.

Also :func:`returning_caller`: a caller with a pending request who calls in again.
"""

from __future__ import annotations

import logging
import time

from agi.app import AgiApp
from agi.handlers import handler
from agi.handlers.hangup import CALL_ID
from agi.session import AgiSession, CallerHungUp, PlaybackFailed
from crisisline import callbacks as cb
from crisisline import destinations
from crisisline.call import Call
from crisisline.stores.calls import channel_key

log = logging.getLogger(__name__)
NUMBER_TIMEOUT_MS = 10000
KEY_TIMEOUT_MS = 6000


async def _ask_key(session: AgiSession, app: AgiApp, language: str, prompt: str,
                   allowed: str) -> str:
    """One of ``allowed``, or "" for silence; a wrong key is asked once more."""
    for attempt in range(2):
        digits, _ = await session.get_data(app.prompt(language, prompt), KEY_TIMEOUT_MS, 1)
        if not digits or digits[:1] in allowed:
            return digits[:1]
        if attempt == 0:
            await session.stream_file(app.prompt(language, "invalid_key"))
    return ""


async def _ask_number(session: AgiSession, app: AgiApp, language: str) -> str | None:
    for _ in range(2):
        digits, _ = await session.get_data(app.prompt(language, "callback_enter_number"),
                                           NUMBER_TIMEOUT_MS, 15)
        digits = digits.rstrip("#")
        if digits and destinations.refusal(digits, app.settings) is None:
            return destinations.to_e164(digits, app.settings.region)
        await session.stream_file(app.prompt(language, "invalid_key"))
    return None


async def safety_answers(session: AgiSession, app: AgiApp, call: Call) -> cb.SafetyAnswers | None:
    """The safety questions; None when the caller gave no number we may call."""
    language = call.language
    own = call.caller_number
    if own and destinations.refusal(own, app.settings) is None:
        key = await _ask_key(session, app, language, "callback_safe", "12")
        if key == "1":
            number, safe_here = own, True
        elif key == "2":
            number, safe_here = await _ask_number(session, app, language), False
        else:
            return None  # never assume it is safe to call
    else:
        number, safe_here = await _ask_number(session, app, language), None
    if number is None:
        return None
    message_ok = await _ask_key(session, app, language, "callback_message", "12") == "1"
    return cb.SafetyAnswers(number, safe_here, message_ok)


@handler("callback")
async def callback(session: AgiSession, app: AgiApp) -> None:
    call_id = session.headers.query.get("call", "")
    if not CALL_ID.match(call_id):
        return
    call = await app.store.get(call_id)
    if call is None:
        return
    language = call.language
    try:
        if await _ask_key(session, app, language, "callback_offer", "1") != "1":
            await app.store.event(call_id, "callback_declined")
            return
        answers = await safety_answers(session, app, call)
        if answers is None:
            await app.store.event(call_id, "callback_declined", reason="no_safe_number")
            await session.stream_file(app.prompt(language, "still_looking"))
            return
        holder = await app.callbacks.request(call_id, answers)
        if holder is None:
            return  # the call ended meanwhile
        if holder != call_id:
            # One person, one request: the earlier one keeps its (earlier) place.
            await app.store.event(call_id, "callback_already_requested", holder=holder)
        await session.stream_file(app.prompt(language, "callback_confirmed"))
    except PlaybackFailed as exc:
        log.warning("call %s: callback prompt missing: %s", call_id, exc)
    except CallerHungUp:
        pass  # the h extension reports it (a request already made stays)


async def returning_caller(session: AgiSession, app: AgiApp, number: str | None) -> bool:
    """A caller whose callback request is pending calls in again. They are told it is
    still coming and choose: wait on the line keeping their place (1, or silence), or keep
    the callback (2: goodbye). True when this session is theirs (done); False for a caller
    to take through the IVR as usual."""
    holder = await app.callbacks.holder(number) if number else None
    if holder is None:
        return False
    call = await app.store.get(holder)
    if call is None or (await app.callbacks.fields(holder)).get("cb_state") != cb.PENDING:
        return False  # being called right now, or already done: an ordinary new call
    language = call.language
    session.call_id = holder
    # The h extension now reports against the request's call (a hang-up leaves it pending).
    await session.set_variable("PR_CALL_ID", holder)
    await session.set_variable("PR_LANGUAGE", language)
    await session.answer()
    try:
        key = await _ask_key(session, app, language, "callback_still_coming", "12")
        if key == "2":
            await app.store.event(holder, "callback_caller_called", chose="callback")
            await session.stream_file(app.prompt(language, "goodbye_callback"))
            await session.set_variable("PR_GOODBYE", "1")
            return True
    except PlaybackFailed as exc:
        log.warning("call %s: callback prompt missing (%s); the caller waits on the line",
                    holder, exc)
    headers = session.headers
    channel = headers.channel
    if not await app.callbacks.rejoin(holder, channel, headers.get("agi_uniqueid")[:150]):
        return False  # taken meanwhile: go through the IVR as a new call
    await app.store.redis.set(channel_key(channel), holder, ex=86400)
    await app.store.update(holder, ivr_done="1", step="waiting_room")
    await app.store.event(holder, "callback_caller_called", chose="wait")
    until = int(time.time() + app.settings.unattended_s)
    for name, value in (("PR_NEIGHBORHOOD", call.neighborhood or ""),
                        ("PR_ATTENDED_UNTIL", str(until)), ("PR_QUEUED", "1")):
        await session.set_variable(name, value)
    try:
        await session.stream_file(app.prompt(language, "waiting"))
    except PlaybackFailed:
        pass
    return True
