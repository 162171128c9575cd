"""``hangup?call=<id>``: run by the dialplan's ``h`` extension when a caller leaves.

By then the channel is gone; only the headers matter. Idempotent: a call that the IVR
already marked abandoned, or that ended, is left as it is.
"""

from __future__ import annotations

import logging
import re

from agi.app import AgiApp
from agi.handlers import handler
from agi.session import AgiSession
from crisisline.call import State

log = logging.getLogger(__name__)
CALL_ID = re.compile(r"^[0-9a-f]{6,32}$")


@handler("hangup")
async def hangup(session: AgiSession, app: AgiApp) -> None:
    call_id = session.headers.query.get("call", "")
    if not CALL_ID.match(call_id):
        log.warning("hangup for a malformed call id %r ignored", call_id[:80])
        return
    call = await app.store.get(call_id)
    if call is None:
        log.warning("hangup for unknown call %s", call_id)
        return
    if call.state is State.BRIDGED:
        await app.store.end(call_id, State.ENDED, "bridged", "call_ended")
    elif call.state in (State.IVR, State.WAITING, State.DISPATCHING):
        await app.store.abandon(call_id, "waiting_room" if call.state is not State.IVR else "ivr")
    elif call.state in (State.CALLBACK, State.FALLBACK):
        await app.store.event(call_id, "caller_left", state=call.state.value)
    # ENDED / ABANDONED: already recorded where it happened.
