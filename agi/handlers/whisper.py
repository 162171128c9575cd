"""``whisper?call=<id>&responder=<id>``: what a responder hears before the bridge.

Who is waiting (source, language, neighborhood, the caller's own words when they agreed to
leave a message), then "press 1 to take this call". Only a 1, pressed by the first
responder to press it while the caller is still waiting, sets ``PR_ACCEPTED=1``; the
dialplan bridges no one else. A voicemail box never presses 1, so it is never bridged.
"""

from __future__ import annotations

import logging
import re

from agi.app import AgiApp
from agi.handlers import handler
from agi.session import AgiSession, CallerHungUp, PlaybackFailed
from crisisline.call import Call
from crisisline.neighborhoods import slug

log = logging.getLogger(__name__)
ID = re.compile(r"^[0-9A-Za-z_.\-]{1,64}$")
ACCEPT_TIMEOUT_MS = 8000


async def _play(session: AgiSession, app: AgiApp, language: str, name: str) -> None:
    """A whisper prompt; a missing one is skipped rather than losing the offer."""
    try:
        await session.stream_file(app.prompt(language, name))
    except PlaybackFailed:
        log.warning("whisper prompt %s/%s missing", language, name)


async def play_whisper(session: AgiSession, app: AgiApp, call: Call, language: str = "en") -> None:
    await _play(session, app, language, "whisper_intro")
    await _play(session, app, language, f"whisper_source_{call.source.value}")
    await _play(session, app, language, f"whisper_language_{call.language}")
    if call.neighborhood:
        await _play(session, app, language, f"neighborhood_{slug(call.neighborhood)}")
    else:
        await _play(session, app, language, "whisper_neighborhood_unknown")
    recording = call.extra.get("message_file")
    if call.consented_to_message and recording:
        await _play(session, app, language, "whisper_message")
        try:
            await session.stream_file(recording)
        except PlaybackFailed:
            log.warning("call %s: the caller's message %s could not be played", call.id, recording)


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
    try:
        await session.answer()
        if not await offers.listening(call_id, responder):
            return  # the offer ended while the phone rang (taken, cancelled): nothing to hear
        await play_whisper(session, app, call)
        digits, _ = await session.get_data(app.prompt("en", "whisper_press_1"), ACCEPT_TIMEOUT_MS, 1)
    except CallerHungUp:
        await offers.passed(call_id, responder, "hung_up_in_whisper")
        return
    except PlaybackFailed:
        digits = await session.wait_for_digit(ACCEPT_TIMEOUT_MS)
    if digits[:1] != "1":
        await offers.passed(call_id, responder, "declined" if digits else "no_key")
        return
    if await offers.accept(call_id, responder):
        await session.set_variable("PR_ACCEPTED", "1")
        return
    await offers.passed(call_id, responder, "taken_by_another")
    try:
        await session.stream_file(app.prompt("en", "whisper_taken"))
    except (CallerHungUp, PlaybackFailed):
        pass
