"""``callback?call=<id>``: no responder was free; offer to call the caller back.

1 = at the number they're calling from (when we have it), 2 = another number; anything
else, or nothing, = keep waiting. Either way the caller goes back to their waiting room
(the dialplan), and the search for a responder goes on.
"""

from __future__ import annotations

import logging

from agi.app import AgiApp
from agi.handlers import handler
from agi.handlers.hangup import CALL_ID
from agi.session import AgiSession, CallerHungUp, PlaybackFailed
from crisisline import destinations

log = logging.getLogger(__name__)
NUMBER_TIMEOUT_MS = 10000


async def _ask_number(session: AgiSession, app: AgiApp, language: str) -> str | None:
    for _ in range(2):
        digits, _ = await session.get_data(app.prompt(language, "callback_enter_number"),
                                           NUMBER_TIMEOUT_MS, 15)
        digits = digits.rstrip("#")
        if digits and destinations.refusal(digits, app.settings) is None:
            return destinations.to_e164(digits, app.settings.region)
        await session.stream_file(app.prompt(language, "invalid_key"))
    return None


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
        digits, _ = await session.get_data(app.prompt(language, "callback_offer"), 6000, 1)
        if digits == "1" and call.caller_number:
            number = call.caller_number
        elif digits in ("1", "2"):
            number = await _ask_number(session, app, language)
        else:
            await app.store.event(call_id, "callback_declined")
            return
        if number is None:
            await app.store.event(call_id, "callback_declined", reason="no_valid_number")
            return
        await app.store.update(call_id, callback_number=number)
        await app.store.event(call_id, "callback_requested")
        await session.stream_file(app.prompt(language, "callback_confirmed"))
    except PlaybackFailed as exc:
        log.warning("call %s: callback prompt missing: %s", call_id, exc)
    except CallerHungUp:
        pass  # the h extension reports it
