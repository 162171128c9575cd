"""How a call's search ends, and its legs: a mixin of the Dispatcher, kept apart so each
module stays readable. The caller still waiting (or not) after a time nobody listened,
hanging up responders' legs once, connecting the one who took it, the callback offer,
moving a caller, and the longest wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from crisisline import callbacks as cb
from crisisline.call import Source, State
from crisisline.stores.calls import CLAIMED, call_key
from crisisline.stores.offers import offers_key

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

log = logging.getLogger(__name__)


class CallEnds:
    def _may_have_missed_events(self: Dispatcher, data: dict[str, str]) -> bool:
        """The call was queued before this AMI session began: its caller may have gone to the
        fallback group (or hung up) while no dispatcher listened. Calls queued since are
        known by their events, so the burst of a busy hour pays no extra round trip."""
        since = self.ami.listening_since
        return since is not None and float(data.get("queued_at") or 0) < since

    async def _caller_still_waiting(self: Dispatcher, call_id: str, data: dict[str, str]) -> bool:
        """False when Asterisk says the caller left or went to the fallback group while no
        dispatcher was listening (its PRFallback UserEvent is then lost): the record is
        closed (which also takes it off the claimed set) instead of ringing responders for
        nobody. Any doubt rings."""
        channel = data.get("channel")
        if not channel:
            return True
        try:
            reply = await self.ami.action({"Action": "Getvar", "Channel": channel,
                                           "Variable": "PR_IN_FALLBACK"})
        except Exception as exc:
            log.info("%s: could not ask about %s (%s); ringing", self.name, channel, exc)
            return True
        if reply.get("Response") == "Success" and reply.get("Value") == "1":
            await self.calls.to_fallback(call_id, "fallback_while_no_dispatcher")
        elif reply.get("Response") == "Error" and reply.get("Message") == "No such channel":
            await self.calls.abandon(call_id, "")
        else:
            return True
        log.info("%s: %s was no longer waiting (%s)", self.name, call_id,
                 reply.get("Value") or reply.get("Message"))
        return False

    # ---- legs ------------------------------------------------------------------------------
    async def hangup_leg(self: Dispatcher, call_id: str, rid: str) -> None:
        """Hang up a responder's leg once, and only while it is up (its Newchannel put it in
        the legs hash; its Hangup takes it out). For a text conversation: close their link."""
        if await self.calls.field(call_id, "source") == Source.TEXT:
            await self.texts.expire(call_id, rid)
            return
        channel = await self.offers.take_leg(call_id, rid)
        if channel:
            await self.ami.hangup(channel)

    async def end_offers(self: Dispatcher, call_id: str, rids: list[str], reason: str,
                         source: str | None = None, unclaim: bool = False) -> None:
        """These offers end (``reason`` first: the whisper sees the hang-up and would call it
        its own), then their legs are hung up (a text's links closed). ``source``: the
        call's, when known; ``unclaim``: the call leaves the claimed set too."""
        if source is None and rids:
            source = await self.calls.field(call_id, "source")
        if source == Source.TEXT:
            await self.offers.pass_many(call_id, rids, reason)
            for rid in rids:
                await self.texts.expire(call_id, rid)
            if unclaim:
                await self.redis.zrem(CLAIMED, call_id)
            return
        channels = await self.offers.end_offers(call_id, rids, reason, unclaim)
        await asyncio.gather(*(self.ami.hangup(channel) for channel in channels))

    async def cancel_legs(self: Dispatcher, call_id: str, keep: str | None = None) -> str:
        """Hang up every leg of this call still ringing or in its whisper, except ``keep``.
        Returns the call's callback state as read (``connect`` needs it: no second read)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(offers_key(call_id))
            pipe.hmget(call_key(call_id), "source", "cb_state")
            raw, (source, cb_state) = await pipe.execute()
        ringing = [rid.decode() for rid, status in raw.items()
                   if rid.decode() != keep and status.startswith(b"ringing")]
        await self.end_offers(call_id, ringing, "cancelled", (source or b"").decode(),
                              unclaim=True)
        return (cb_state or b"").decode()

    async def connect(self: Dispatcher, call_id: str, data: dict[str, str]) -> None:
        """A responder took it; their leg is already moving the caller to the room (dialplan
        [pr-responder]). Cancel the others; add an interpreter if needed. The bridge itself
        is recorded when both are in the room (CallWatch)."""
        winner = data.get("accepted_by", "")
        cb_state = await self.cancel_legs(call_id, keep=winner)
        if data.get("source") == Source.TEXT:
            await self.texts.connected(call_id, data)  # no interpreter line for texts
            return
        if cb_state == cb.CALLING:
            return  # the caller isn't there yet: an interpreter joins once they are (CallWatch)
        await self.interpreters.on_bridged(call_id, data)

    async def offer_callback(self: Dispatcher, call_id: str, data: dict[str, str]) -> None:
        """Everyone was rung: offer a callback (the caller keeps waiting meanwhile). A texter
        is told how long it has been, what happens next, and the phone number."""
        if data.get("source") == Source.TEXT:
            await self.texts.still_looking(call_id, data)
            return
        if data.get("channel") and not data.get("callback_offered"):
            await self.redis.hset(call_key(call_id), "callback_offered", "1")
            await self.calls.event(call_id, "callback_offered")
            await self.move(data["channel"], "pr-callback", "callback")

    async def move(self: Dispatcher, channel: str, context: str, why: str) -> bool:
        """Redirect a caller, marking why first: their IVR session must not take the move
        for a hang-up (tests/captures/fastagi_redirect_*)."""
        await self.ami.setvar(channel, "SHARED(PR_MOVED)", why)
        return await self.ami.redirect(channel, context)

    async def give_up(self: Dispatcher, call_id: str, data: dict[str, str]) -> bool:
        """The longest wait is reached: a caller on the line goes to the fallback group (a
        callback request they hold stays: crisisline/stores/calls.py _END). A callback
        request whose caller left, and a text conversation, have no fallback group: the
        search goes on (False: keep dispatching it; a texter is told)."""
        if data.get("source") == Source.TEXT or data.get("cb_state") == cb.PENDING:
            if data.get("source") == Source.TEXT:
                await self.texts.still_looking(call_id, data, force=True)
            await self.redis.hset(call_key(call_id), "search_from", f"{time.time():.3f}")
            return False
        await self.cancel_legs(call_id)
        await self.calls.end(call_id, State.FALLBACK, "", "max_wait_reached", "max_wait")
        if data.get("channel"):
            await self.move(data["channel"], "pr-fallback", "fallback")
        return True
