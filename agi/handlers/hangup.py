"""``hangup?call=<id>&in=<where>[&dial=<DIALSTATUS>]``: run by the dialplan's ``h``
extension when a caller leaves.

By then the channel is gone; only the headers matter. ``in`` says where the dialplan had
the caller (intake, waiting_room, connect, callback_offer, fallback), so the record is true
to what happened even when no dispatcher was running: a caller who spoke with the fallback
desk is recorded as the fallback group's (answered), never as abandoned. Idempotent: a
call already ended where it happened is left as it is.
"""

from __future__ import annotations

import logging
import re

from agi.app import AgiApp
from agi.handlers import handler
from agi.session import AgiSession
from crisisline import callbacks as cb
from crisisline.call import State
from crisisline.stores.calls import LIVE

log = logging.getLogger(__name__)
CALL_ID = re.compile(r"^[0-9a-f]{6,32}$")
WHERE = {"intake", "waiting_room", "connect", "callback_offer", "fallback", "room"}


@handler("hangup")
async def hangup(session: AgiSession, app: AgiApp) -> None:
    query = session.headers.query
    call_id = query.get("call", "")
    where = query.get("in", "")
    where = where if where in WHERE else ""
    if not CALL_ID.match(call_id):
        log.warning("hangup for a malformed call id %r ignored", call_id[:80])
        return
    call = await app.store.get(call_id)
    if call is None:
        log.warning("hangup for unknown call %s", call_id)
        return
    store = app.store
    if where == "fallback":
        answered = query.get("dial", "") == "ANSWER" or \
            await store.field(call_id, "fallback_answered") == "1"
        await store.update(call_id, fallback_answered="1" if answered else "0")
        if call.state in (State.IVR, State.WAITING, State.DISPATCHING):
            await store.to_fallback(call_id, "fallback_group")
        await store.event(call_id, "caller_left", state="fallback", answered=int(answered))
        if (await app.callbacks.fields(call_id)).get("cb_state") == cb.REQUESTED:
            # They held a callback request: a person at the desk answered it; nobody did,
            # and it is pending again, from the call's own place.
            if answered:
                await app.callbacks.close(call_id, cb.FALLBACK_ANSWERED,
                                          await store.field(call_id, "callback_number") or "")
                await store.redis.srem(LIVE, call_id)
            else:
                await app.callbacks.after_fallback(call_id)
        return
    if call.state is State.BRIDGED:
        await store.end(call_id, State.ENDED, "bridged", "call_ended")
    elif call.state in (State.IVR, State.WAITING, State.DISPATCHING):
        if await store.field(call_id, "time_to_human_s"):
            # They spoke with a responder, who left; the caller waited again, then left.
            await store.end(call_id, State.ENDED, "waiting_after_responder", "call_ended")
        else:
            step = "waiting_room" if where == "waiting_room" else \
                (await store.field(call_id, "step") or where or "ivr")
            await store.abandon(call_id, step)
    elif call.state in (State.CALLBACK, State.FALLBACK):
        await store.event(call_id, "caller_left", state=call.state.value)
    # ENDED / ABANDONED: already recorded where it happened.
