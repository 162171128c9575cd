"""What Asterisk tells the dispatcher about calls, and what it means for the record.

- Responders' legs (ChannelId ``pr-<call>-<cycle>-<wave>-<rid>``): Newchannel puts the
  channel in the call's legs hash, Hangup takes it out (so a leg is hung up only while up,
  once); a leg that ends before its whisper did is a pass; the accepted responder's leg
  ending frees them after their wrap-up (PR_WRAPUP_S), and if the caller is still on the line
  the call goes back to the queue (the dialplan moved the caller to waiting and says so:
  UserEvent PRResponderLeft).
- The rooms: the call counts as bridged, and ``time_to_human_s`` is measured, when the
  caller and the responder who took it are both in ``call-<id>``.
- A caller's channel that hangs up while the call is still live (no FastAGI server to run
  the ``h`` extension's report): the call ends as what it was after a short grace.
- The dialplan's UserEvents: PRFallback (the static group has the caller), PRUnattended,
  PRResponderLeft, PRWhisperFailed (no FastAGI server: the caller goes to the fallback group),
  PRCallerGone (the record's caller channel is not the caller's: the call ends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import WatchError

from crisisline import callbacks as cb
from crisisline.call import State
from crisisline.stores.calls import QUEUE, call_key, event_body
from crisisline.stores.offers import legs_key
from workers.dispatcher.ami import parse_leg_id, parse_supervisor_leg_id
from workers.dispatcher.interpreter import parse_interpreter_leg_id

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

log = logging.getLogger(__name__)
HANGUP_GRACE_S = 1.0  # the h extension's own report usually lands first
LIVE_STATES = ("ivr", "waiting", "dispatching", "bridged")
# Asterisk's OriginateResponse Reason codes (main/pbx.c) -> why the offer ended.
ORIGINATE_REASON = {"1": "hung_up", "3": "no_answer", "5": "busy", "8": "congestion", "0": "failed"}


class CallWatch:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        # Who is in each room now: conference -> channel names (from ConfbridgeJoin/Leave).
        # Kept by every dispatcher, on duty for the node or not (duty.py): one taking over
        # the duty knows who is where.
        self.rooms: dict[str, set[str]] = {}
        self._later: set[asyncio.Task] = set()
        # An Originate's answer comes only to the session that sent it: always handled here.
        dispatcher.ami.originate_results.append(self.on_originate_result)

    @property
    def redis(self):
        return self.d.redis

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def stop(self) -> None:
        """The dispatcher is stopping: what waits on a grace goes (the reconciler of the next
        one finishes it), rather than fail later on a closed Redis client."""
        for task in list(self._later):
            task.cancel()

    def observe(self, event: dict[str, str]) -> None:
        """What every dispatcher notes of an event, on duty or not: who is in which room.
        Only the events in ami.HANDLED_EVENTS reach here: one read here needs it there."""
        name = event.get("Event", "")
        if name == "ConfbridgeJoin":
            self.rooms.setdefault(event.get("Conference", ""), set()).add(event.get("Channel", ""))
        elif name == "ConfbridgeLeave":
            self.rooms.get(event.get("Conference", ""), set()).discard(event.get("Channel", ""))
        elif name == "ConfbridgeEnd":
            self.rooms.pop(event.get("Conference", ""), None)

    def wants(self, event: dict[str, str]) -> bool:
        """Whether :meth:`act` does anything with the event (the others cost no task, and
        a dispatcher not on duty keeps no copy of them): keep the two in step."""
        name = event.get("Event", "")
        if name == "Newchannel":
            return parse_leg_id(event.get("Uniqueid", "")) is not None
        if name == "Hangup":
            uniqueid = event.get("Uniqueid", "")
            return not (parse_interpreter_leg_id(uniqueid) or parse_supervisor_leg_id(uniqueid))
        if name == "ConfbridgeJoin":
            return event.get("Conference", "").startswith("call-")
        if name == "UserEvent":
            return bool(event.get("CallID"))
        if name == "DialEnd":
            return event.get("DialStatus") == "ANSWER" and bool(event.get("Channel"))
        return False

    async def act(self, event: dict[str, str]) -> None:
        """What the dispatcher on duty for the event's node does about it (duty.py). Every
        write here may be made twice (a duty changing hands replays the last seconds'
        events) and must come out the same."""
        name = event.get("Event", "")
        if name == "Newchannel":
            await self._new_channel(event)
        elif name == "Hangup":
            await self._hangup(event)
        elif name == "ConfbridgeJoin":
            await self._joined(event)
        elif name == "UserEvent":
            await self._user_event(event)
        elif name == "DialEnd" and event.get("DialStatus") == "ANSWER":
            await self._fallback_answered(event)
        # (No wake-up of the queue here: a call these put back in the queue says so in the
        # event stream, which wakes it; every AMI event was a claim that found nothing.)

    async def on_event(self, event: dict[str, str]) -> None:
        """Both, for one dispatcher acting on everything (tests that drive events by hand)."""
        self.observe(event)
        await self.act(event)

    # ---- legs ------------------------------------------------------------------------------
    async def _new_channel(self, event: dict[str, str]) -> None:
        leg = parse_leg_id(event.get("Uniqueid", ""))
        if leg is None:
            return
        call_id, _, _, rid = leg
        status = await self.d.offers.leg_up(call_id, rid, event.get("Channel", ""))
        if not status.startswith("ringing") and status != "accepted":
            # The offer ended (the caller left, someone else took it) before Asterisk even
            # created this leg: it must not ring on.
            await self.d.hangup_leg(call_id, rid)

    async def _hangup(self, event: dict[str, str]) -> None:
        channel = event.get("Channel", "")
        leg = parse_leg_id(event.get("Uniqueid", ""))
        if leg is not None:
            call_id, _, _, rid = leg
            await self._responder_leg_ended(call_id, rid, channel)
            return
        if parse_interpreter_leg_id(event.get("Uniqueid", "")) or \
                parse_supervisor_leg_id(event.get("Uniqueid", "")):
            return
        call_id = await self.d.calls.call_on_channel(channel)
        if call_id:
            self._spawn(self._caller_gone(call_id, channel))

    async def _responder_leg_ended(self, call_id: str, rid: str, channel: str) -> None:
        offers = self.d.offers
        ended, status = await offers.leg_gone(call_id, rid, channel, "hung_up")
        if ended or status != "accepted":
            return  # it ended while ringing or in the whisper, or had ended before
        await offers.end_call(rid, call_id, self.d.settings.wrapup_s,
                              event=event_body(call_id, "responder_left", responder=rid))
        self._spawn(self._never_connected(call_id, rid))

    async def _never_connected(self, call_id: str, rid: str) -> None:
        """The leg of the responder who took the call ended before the caller was ever with
        them, and the dialplan moved nobody: the whisper's FastAGI server died between the
        accept and telling the leg (PR_ACCEPTED unset, so no PRResponderLeft). The caller
        still waits where they were; the search starts again, rather than leave them until
        the fallback group. After a grace: the dialplan's own word (PRResponderLeft,
        PRCallerGone), sent before the leg's Hangup, goes first."""
        await asyncio.sleep(HANGUP_GRACE_S)
        data = await self.d._hash(call_id)
        if data.get("connected_at") or data.get("cb_state") in (cb.CALLING, cb.PENDING) or \
                not data.get("channel"):
            return  # with them, or a callback (the caller isn't on the line): not this case
        if await self._requeue(call_id, rid, "responder_never_connected"):
            log.warning("call %s: %s took it but their leg ended before the caller reached "
                        "them; searching again", call_id, rid)

    async def _requeue(self, call_id: str, rid: str, reason: str = "responder_left") -> bool:
        """The call goes back to the queue if ``rid`` still has it, bridged (checked and
        written in one transaction: the dialplan's PRResponderLeft and the leg's own end can
        both ask)."""
        key = call_key(call_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                state, taker, cycle_raw, score_raw = await pipe.hmget(
                    key, "state", "accepted_by", "cycle", "queue_score")
                if state != b"bridged" or (taker or b"").decode() != rid:
                    return False
                cycle = int(cycle_raw or 0) + 1
                score = float(score_raw or time.time() * 1000)
                pipe.multi()
                pipe.hset(key, mapping={
                    "state": "waiting", "accepted_by": "", "accepted_at": "", "owner": "",
                    "previous_responder": rid, "cycle": cycle, "wave": 0})
                # Gone, not emptied: the next person's arrival is noted with HSETNX.
                pipe.hdel(key, "connected_at")
                pipe.zadd(QUEUE, {call_id: score})
                await pipe.execute()
            except WatchError:
                return False  # changed meanwhile: whoever changed it decided
        await self.d.calls.event(call_id, "requeued", reason=reason)
        return True

    async def _caller_gone(self, call_id: str, channel: str) -> None:
        """The caller's channel hung up: give the h extension's report a moment, then end
        the call as what it was if nobody did (no FastAGI server to run it)."""
        await asyncio.sleep(HANGUP_GRACE_S)
        data = await self.d._hash(call_id)
        if data.get("channel") != channel:
            return
        calls = self.d.calls
        if data.get("state") in LIVE_STATES:
            if data.get("state") == "bridged" or data.get("time_to_human_s"):
                await calls.end(call_id, State.ENDED, "bridged", "call_ended", "channel_hung_up")
            else:
                await calls.end(call_id, State.ABANDONED, "", "caller_hung_up", "channel_hung_up")
            data = await self.d._hash(call_id)
            if data.get("state") not in LIVE_STATES:
                await self.d.cancel_legs(call_id)  # (a callback request goes on ringing)
        await self._release_taker(call_id, data)

    async def _release_taker(self, call_id: str, data: dict[str, str]) -> None:
        """The call is over: the responder who took it leaves too. Normally the room sees to
        it (the caller is its marked user), but a caller who hung up between being moved and
        reaching the room never joined it, and the responder's leg would wait there for them
        for good (wait_marked), on no call as far as Redis knows, and be rung for the next
        one while still in that room (found by bench/soak.py)."""
        rid = data.get("accepted_by", "")
        if not rid or rid.startswith("supervisor:") or data.get("state") in LIVE_STATES or \
                data.get("cb_state") in (cb.CALLING, cb.PENDING):
            return
        await self.d.hangup_leg(call_id, rid)  # (only if still up: once, by one dispatcher)

    async def on_originate_result(self, channel_id: str, result: dict[str, str]) -> None:
        leg = parse_leg_id(channel_id)
        if leg is None or result.get("Response") == "Success":
            return
        call_id, _, _, rid = leg
        reason = ORIGINATE_REASON.get(result.get("Reason", "0"), "failed")
        await self.d.offers.passed(call_id, rid, reason)  # only if it is still ringing

    # ---- rooms -----------------------------------------------------------------------------
    async def _joined(self, event: dict[str, str]) -> None:
        room = event.get("Conference", "")  # (its member noted by observe)
        if not room.startswith("call-"):
            return
        call_id = room[len("call-"):]
        interpreter = parse_interpreter_leg_id(event.get("Uniqueid", ""))
        if interpreter is not None:
            await self.d.interpreters.joined(call_id)
            return
        await self._maybe_bridged(call_id, room)

    async def _maybe_bridged(self, call_id: str, room: str) -> None:
        """Both the caller and the responder who took the call are in the room: that is the
        moment a person is with the caller (time to a human)."""
        members = self.rooms.get(room, set())
        if len(members) < 2:
            return  # a caller alone in their room, waiting: nothing to read about it
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(call_key(call_id))
            pipe.hgetall(legs_key(call_id))
            raw, legs = await pipe.execute()
        data = {k.decode(): v.decode() for k, v in raw.items()}
        winner = data.get("accepted_by", "")
        if not winner or data.get("connected_at") or data.get("state") != "bridged":
            return
        leg = legs.get(winner.encode())
        responder_in = (leg is not None and leg.decode() in members) or winner.startswith("supervisor:")
        if data.get("channel") not in members or not responder_in:
            return
        now = time.time()
        waited = now - float(data.get("created_at") or now)
        fields = {"time_to_human_s": f"{waited:.3f}"}
        called_back = data.get("cb_outcome") == cb.BRIDGED and data.get("cb_result") == cb.BRIDGED
        if data.get("cb_requested_at") and (called_back or data.get("cb_state") == cb.REQUESTED):
            # From the request to a person: what the oversight report counts for callbacks.
            fields["cb_time_to_human_s"] = f"{now - float(data['cb_requested_at']):.3f}"
        said = {"responder": winner, "time_to_human_s": f"{waited:.3f}",
                "callback": int(called_back)}
        holding = data.get("cb_state") == cb.REQUESTED
        # Every dispatcher hears every node's rooms: the first to note the moment records it.
        # (Holding a request: its event comes after the request is closed, below.)
        if not await self.d.calls.connected(
                call_id, now, fields, None if holding else event_body(call_id, "bridged", **said)):
            return
        if holding:
            # Reached on the line while holding a request: it is done, nobody calls back.
            await self.d.callbacks.close(call_id, cb.BRIDGED, data.get("callback_number", ""))
            await self.d.calls.event(call_id, "bridged", **said)
        if called_back:
            # Held back at the accept (nobody to interpret for yet): the caller is here now.
            await self.d.interpreters.on_bridged(call_id, await self.d._hash(call_id))

    async def _fallback_answered(self, event: dict[str, str]) -> None:
        """Someone at the fallback group answered the caller (Asterisk's own word, so the
        record is right even when no FastAGI server could report the hang-up)."""
        if not event.get("Channel"):
            return  # an Originate's answer (no calling channel): a responder's leg
        call_id = await self.d.calls.call_on_channel(event["Channel"])
        if not call_id:
            return
        # The caller's own context says where the Dial was: the fallback group's answer can
        # come before this dispatcher has written the call's move there (its UserEvent is
        # handled first, but a lease holder elsewhere may write it later).
        at_desk = event.get("Context") == "pr-fallback" or \
            await self.d.calls.field(call_id, "state") == "fallback"
        if at_desk and await self.redis.hsetnx(call_key(call_id), "fallback_answered", "1"):
            await self.d.calls.event(call_id, "fallback_answered")

    # ---- the dialplan's own events ---------------------------------------------------------
    async def _user_event(self, event: dict[str, str]) -> None:
        kind = event.get("UserEvent")
        call_id = event.get("CallID", "")
        if not call_id:
            return
        if kind == "PRFallback":
            await self.d.cancel_legs(call_id)
            await self.d.calls.to_fallback(call_id, "dialplan")
        elif kind == "PRUnattended":
            await self.d.calls.event(call_id, "unattended")
        elif kind == "PRWhisperFailed":
            # No FastAGI server runs the whisper: no responder can take any call now. A
            # person at the fallback group beats ringing phones nobody can answer.
            data = await self.d._hash(call_id)
            if data.get("state") in ("waiting", "dispatching") and data.get("channel"):
                log.error("the whisper could not run (FastAGI server down?); call %s goes to "
                          "the fallback group", call_id)
                await self.d.cancel_legs(call_id)
                await self.d.calls.to_fallback(call_id, "whisper_unavailable")
                await self.d.move(data["channel"], "pr-fallback", "fallback")
        elif kind == "PRCallerGone":
            # The responder took the call, but the channel the record names is not this
            # call's caller (a node restarted: names repeat) or is gone: nobody was moved,
            # and the caller never reached them. The call ends as its caller left it (a
            # callback request left to the reconciler, which keeps it).
            data = await self.d._hash(call_id)
            if data.get("accepted_by") == event.get("Responder") and \
                    not data.get("connected_at") and not data.get("cb_state"):
                log.warning("call %s: its caller's channel is gone; ended", call_id)
                await self.d.calls.end(call_id, State.ABANDONED, "", "caller_hung_up",
                                       "caller_gone")
        elif kind == "PRResponderLeft":
            # The responder's leg ended with the caller still on the line; Asterisk has sent
            # the caller back to waiting ([pr-responder] h): the search starts again.
            await self._requeue(call_id, event.get("Responder", ""))
