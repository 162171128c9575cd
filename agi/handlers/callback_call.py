"""The line calling a caller back, responder first ([pr-callback-call] in the dialplan).

``callback_answered?call=<id>&attempt=<n>``: on the caller's side, once they answered and
answering-machine detection heard a person: the call's caller is now this channel, and the
request is done (bridged). The dialplan then says "People's Response, returning your call"
in their language and puts them in the room with the responder.

``callback_result?call=<id>&attempt=<n>&dial=<DIALSTATUS>&machine=<hung_up|message_left|>``
``[&from=h]``: on the responder's leg when the attempt did not end with a person (``from=h``:
their leg ended first, e.g. they hung up while it rang): counted, and tried
again after ``PR_CALLBACK_RETRY_S`` or, after ``PR_CALLBACK_ATTEMPTS``, closed as failed. It
sets PR_CB_SAY, what the responder hears about it. Taken once per attempt: a repeat (the
``h`` extension after the normal report) changes nothing.
"""

from __future__ import annotations

import logging
import time

from agi.app import AgiApp
from agi.handlers import handler
from agi.handlers.hangup import CALL_ID
from agi.session import AgiSession
from crisisline import callbacks as cb
from crisisline.stores.calls import channel_key

log = logging.getLogger(__name__)
SAY = {cb.MACHINE_HUNG_UP: "callback_machine_hung_up", cb.MESSAGE_LEFT: "callback_message_left",
       cb.RESPONDER_GAVE_UP: "", cb.BRIDGED: ""}


def _attempt(session: AgiSession) -> tuple[str, int] | None:
    query = session.headers.query
    call_id, attempt = query.get("call", ""), query.get("attempt", "")
    if not CALL_ID.match(call_id) or not attempt.isdigit():
        log.warning("callback report with a malformed call %r / attempt %r", call_id[:80],
                    attempt[:20])
        return None
    return call_id, int(attempt)


@handler("callback_answered")
async def callback_answered(session: AgiSession, app: AgiApp) -> None:
    got = _attempt(session)
    if got is None:
        return
    call_id, attempt = got
    number = await app.store.field(call_id, "callback_number") or ""
    taken = await app.callbacks.finish_attempt(call_id, attempt, cb.BRIDGED,
                                               cb.Next(cb.DONE, cb.BRIDGED), number)
    if not taken:
        log.warning("call %s: callback attempt %d answered but no longer open", call_id, attempt)
        return
    headers = session.headers
    channel = headers.channel
    await app.store.update(call_id, channel=channel, x_uniqueid=headers.get("agi_uniqueid")[:150],
                           **({"pbx_node": headers.node} if headers.node else {}))
    await app.store.redis.set(channel_key(channel), call_id, ex=86400)
    # Should the responder leave, the caller waits again like any caller on the line.
    until = int(time.time() + app.settings.unattended_s)
    await session.set_variable("PR_ATTENDED_UNTIL", str(until))


@handler("callback_result")
async def callback_result(session: AgiSession, app: AgiApp) -> None:
    got = _attempt(session)
    if got is None:
        return
    call_id, attempt = got
    query = session.headers.query
    result = cb.attempt_result(query.get("dial", ""), query.get("machine", ""),
                               responder_left=query.get("from") == "h")
    if result == cb.BRIDGED:
        # Dial says answered, yet no person was put through (G() would have moved this
        # leg on): the caller's side never reported in. Not a success: try again.
        result = cb.LOST
    s = app.settings
    nxt = cb.after_attempt(result, attempt, s.callback_attempts, s.callback_retry_s, time.time())
    number = await app.store.field(call_id, "callback_number") or ""
    if not await app.callbacks.finish_attempt(call_id, attempt, result, nxt, number):
        return  # already reported (this is the h extension after the normal report)
    log.info("call %s: callback attempt %d: %s%s", call_id, attempt, result,
             f", again in {s.callback_retry_s:g} s" if nxt.state == cb.PENDING else
             f", request closed: {nxt.outcome}")
    await session.set_variable("PR_CB_SAY", SAY.get(result, "callback_not_reached"))
