"""``whisper?call=<id>&responder=<id>&speaks=0|1``: what a responder hears before the bridge.

Who is waiting (source, language, neighborhood or "not given", the transferring center's
note read aloud, the caller's own words when their message is finished, or that they are
still recording one), then "press 1 to take this call". **A 1 at any moment of it takes
the call**; any other key passes. Only a 1, pressed by the first responder to press it while
the caller is still waiting, sets ``PR_ACCEPTED=1`` and tells the dialplan where the caller
is (``PR_CALLER_CHANNEL``) and how to connect them (``PR_CONNECT``): [pr-responder] moves
the caller there itself, so the bridge doesn't wait on any other process. A voicemail box
never presses 1, so it is never bridged.
"""

from __future__ import annotations

import logging
import re

from agi.app import AgiApp
from agi.handlers import handler
from agi.session import ESCAPE_ALL, AgiSession, CallerHungUp, PlaybackFailed
from crisisline import callbacks as cb
from crisisline import destinations
from crisisline.call import Call
from crisisline.neighborhoods import slug
from crisisline.nodes import split

log = logging.getLogger(__name__)
ID = re.compile(r"^[0-9A-Za-z_.\-]{1,64}$")
ACCEPT_TIMEOUT_MS = 8000
CONNECT = "pr-connect"
CONNECT_WITH_INTERPRETER = "pr-connect-interpreter"
CALLBACK_CALL = "pr-callback-call"


class Keyed(Exception):
    """The responder pressed a key during the whisper."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


async def _play(session: AgiSession, app: AgiApp, language: str, name: str) -> None:
    """A whisper prompt any key interrupts; a missing one is skipped rather than losing
    the offer."""
    await _play_file(session, app.prompt(language, name))


async def _play_file(session: AgiSession, path: str) -> None:
    try:
        key = await session.stream_file(path, ESCAPE_ALL)
    except PlaybackFailed:
        log.warning("whisper: %s could not be played", path)
        return
    if key:
        raise Keyed(key)


async def play_whisper(session: AgiSession, app: AgiApp, call: Call, language: str = "en",
                       request: dict[str, str] | None = None) -> None:
    """The whisper; raises Keyed at the first key the responder presses. ``request``: the
    call's callback fields when the caller asked to be called back and has left."""
    await _play(session, app, language, "whisper_intro")
    if request:
        await _play(session, app, language, "whisper_callback")
    await _play(session, app, language, f"whisper_source_{call.source.value}")
    await _play(session, app, language, f"whisper_language_{call.language}")
    if call.neighborhood:
        await _play(session, app, language, f"neighborhood_{slug(call.neighborhood)}")
    else:
        await _play(session, app, language, "whisper_neighborhood_unknown")
    note = call.extra.get("note_file")
    if note:
        await _play(session, app, language, "whisper_note")
        await _play_file(session, note)
    # Read again: the caller may have finished (or started) a message meanwhile.
    state = await app.store.field(call.id, "message_state") or ""
    recording = await app.store.field(call.id, "x_message_file") or ""
    if state == "done" and recording:
        await _play(session, app, language, "whisper_message")
        await _play_file(session, recording)
    elif state == "recording":
        await _play(session, app, language, "whisper_still_recording")
    if request:
        # What the caller said about their safety, obeyed by the line (and told here).
        await _play(session, app, language, "whisper_callback_safe_here"
                    if request.get("cb_safe_here") == "1" else "whisper_callback_other_number")
        await _play(session, app, language, "whisper_callback_message_ok"
                    if request.get("cb_message") == "1" else "whisper_callback_no_message")


def _callback_request(fields: dict[str, str]) -> dict[str, str] | None:
    """The request, when this offer is a callback: the caller left and waits for our call."""
    return fields if fields.get("cb_state") == cb.PENDING else None


def connect_context(app: AgiApp, call: Call, speaks: bool) -> str:
    """[pr-connect], or [pr-connect-interpreter] when the responder doesn't speak the
    caller's language and an interpreter line (never police) is configured for it."""
    if speaks:
        return CONNECT
    line = str(app.settings.interpreters.get(call.language) or "").strip()
    if not line or destinations.refusal(line, app.settings):
        return CONNECT
    return CONNECT_WITH_INTERPRETER


async def call_back(session: AgiSession, app: AgiApp, call_id: str, attempt: int) -> None:
    """The responder took a callback: their own leg dials the caller ([pr-callback-call]),
    from the line's number, with what the caller allowed."""
    s = app.settings
    data = await app.store.get(call_id)
    fields = await app.callbacks.fields(call_id)
    number = await app.store.field(call_id, "callback_number") or ""
    refused = destinations.refusal(number, s) if number else "no number"
    if refused or data is None:
        # Checked when it was given; checked again: a callback never dials police or 911.
        log.error("call %s: callback number refused (%s)", call_id, refused)
        nxt = cb.Next(cb.DONE, cb.FAILED)
        await app.callbacks.finish_attempt(call_id, attempt, cb.UNREACHABLE, nxt, number)
        return
    message = cb.may_leave_message(fields.get("cb_message") == "1",
                                   fields.get("cb_message_left") == "1")
    for name, value in (("PR_CALLBACK_DIAL", destinations.dial_string(number)),
                        ("PR_CALLBACK_ATTEMPT", str(attempt)),
                        ("PR_CALLBACK_MESSAGE", "1" if message else "0"),
                        ("PR_CALLBACK_RING_S", str(s.callback_ring_s)),
                        ("PR_LINE_NUMBER", s.line_number),
                        ("PR_LANGUAGE", data.language),
                        ("PR_CONNECT", CALLBACK_CALL), ("PR_ACCEPTED", "1")):
        await session.set_variable(name, value)


@handler("whisper")
async def whisper(session: AgiSession, app: AgiApp) -> None:
    query = session.headers.query
    call_id, responder = query.get("call", ""), query.get("responder", "")
    if not (ID.match(call_id) and ID.match(responder)):
        log.warning("whisper with malformed ids %r / %r", call_id[:80], responder[:80])
        return
    call = await app.store.get(call_id)
    if call is None:
        log.warning("whisper for unknown call %s", call_id)
        return
    offers = app.offers
    # The dialplan knows from this that the whisper ran (with no FastAGI server it doesn't).
    await session.set_variable("PR_WHISPERED", "1")
    try:
        await session.answer()
        if not await offers.listening(call_id, responder):
            return  # the offer ended while the phone rang (taken, cancelled): nothing to hear
        request = _callback_request(await app.callbacks.fields(call_id))
        try:
            await play_whisper(session, app, call, request=request)
            question = "whisper_press_1_callback" if request else "whisper_press_1"
            digits, _ = await session.get_data(app.prompt("en", question), ACCEPT_TIMEOUT_MS, 1)
        except Keyed as pressed:
            digits = pressed.key
        except PlaybackFailed:
            digits = await session.wait_for_digit(ACCEPT_TIMEOUT_MS)
    except CallerHungUp:
        await offers.passed(call_id, responder, "hung_up_in_whisper")
        return
    if digits[:1] != "1":
        await offers.passed(call_id, responder, "declined" if digits else "no_key")
        return
    caller_node = split(call.channel)[0]
    if call.channel and caller_node != session.headers.node:
        # A leg on another node than its caller's (routing never does this on purpose):
        # the caller's channel name means somebody else here. Never move a stranger.
        log.error("call %s: responder %s rang on node %r, the caller is on %r", call_id,
                  responder, session.headers.node, caller_node)
        await offers.passed(call_id, responder, "other_node")
        return
    if await offers.accept(call_id, responder):
        attempt = await app.callbacks.start_attempt(call_id, responder)
        if attempt:
            await call_back(session, app, call_id, attempt)
            return
        current = await app.store.get(call_id) or call
        await session.set_variable("PR_CALLER_CHANNEL", split(current.channel)[1])
        await session.set_variable("PR_CONNECT",
                                   connect_context(app, current, query.get("speaks") != "0"))
        await session.set_variable("PR_ACCEPTED", "1")
        return
    await offers.passed(call_id, responder, "taken_by_another")
    try:
        await session.stream_file(app.prompt("en", "whisper_taken"))
    except (CallerHungUp, PlaybackFailed):
        pass
