"""Redis and the PBX agree again: when the dispatcher connects to AMI, and every
RECONCILE_S after.

Nothing may depend on every process having stopped cleanly. After a crash (`up` killed
with SIGKILL, the PBX or the whole box restarted) Redis can say a caller is waiting whose
channel is long gone, or a responder is on a call that ended: then every wave comes up
empty and new callers hear only music. And after Redis restarts without its data, callers
still on the line are missing from it. So, from what Asterisk says (AMI CoreShowChannels
and the channels' own variables):

- a live call whose caller channel is gone ends as what it was (bridged, or abandoned at
  the step the caller was at; a callback request stays: the caller asked for one); a
  callback being dialled whose responder leg is gone counts as a lost attempt;
- a responder marked on a call whose leg is gone is free after their wrap-up; one marked
  ringing for a call with no live leg is free at once;
- a caller channel on the line that Redis doesn't know (PR_CALL_ID set, no call hash) is
  put back: its source, language and neighborhood come from the channel's variables
  (PR_SOURCE, PR_LANGUAGE, PR_NEIGHBORHOOD), and it is queued again if it had been.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from crisisline import callbacks as cb
from crisisline.call import Call, Source, State
from crisisline.stores.calls import LIVE, QUEUE, call_key, channel_key, queue_score
from crisisline.stores.offers import legs_key, responder_key
from workers.dispatcher.ami import parse_leg_id

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

log = logging.getLogger(__name__)
RECONCILE_S = 30.0
ACCEPT_MARGIN_S = 2.0  # an accept this close to the listing: its leg may not be in it
GONE_GRACE_S = 3.0  # a caller's channel gone this long, and nobody reported their hang-up
YOUNG_S = 10.0  # an offer younger than this may not have its leg up yet (Originate in flight)
CALLER_CONTEXTS = ("from-", "pr-intake", "pr-waiting", "pr-connect", "pr-callback",
                   "pr-fallback", "pr-responder-left")
PAGE = 500  # hashes read per pipeline


def _legs_index(live: set[str]) -> dict[str, list[str]]:
    """Our legs' uniqueids (``pr-<call>-...-<rid>``) by every ``pr-<call>-`` prefix they
    have (a call id may hold a dash): a responder's leg is then found without scanning
    every channel (responders x channels was seconds a pass at 500 callers)."""
    index: dict[str, list[str]] = {}
    for uniqueid in live:
        if not uniqueid.startswith("pr-"):
            continue
        at = uniqueid.find("-", 3)
        while at != -1:
            index.setdefault(uniqueid[:at + 1], []).append(uniqueid)
            at = uniqueid.find("-", at + 1)
    return index


def _leg_up(legs: dict[str, list[str]], call_id: str, rid: str) -> bool:
    """A leg of ``rid`` for ``call_id`` is in the listing."""
    return any(u.endswith(f"-{rid}") for u in legs.get(f"pr-{call_id}-", ()))


class Reconciler:
    def __init__(self, dispatcher: Dispatcher, every_s: float = RECONCILE_S) -> None:
        self.d = dispatcher
        self.every_s = every_s
        # When a pass left a responder alone because their offer was too young to judge
        # (its leg may not be up yet), the next pass comes as soon as it can be judged, not
        # every_s later: a leg that ended while no dispatcher listened (say the one that rang
        # it died) must not keep that responder "ringing" for half a minute.
        self.revisit_in: float | None = None
        self._missing: dict[str, float] = {}  # call id -> when its channel was first seen gone
        self.unseen: set[str] = set()  # nodes this pass could not ask (their calls wait)

    async def run(self, stop: asyncio.Event) -> None:
        """As soon as an AMI session is up (after every reconnect too), then every every_s."""
        session: float | None = None
        next_at = 0.0
        primary: str | None = None
        while not stop.is_set():
            # A new Redis primary (Sentinel failed over) may lack the last writes before
            # the old one died: a pass at once puts back what the PBX shows.
            now_primary = await self._primary()
            if now_primary is not None:
                if primary is not None and now_primary != primary:
                    log.warning("Redis has a new primary: reconciling with the PBX now")
                    next_at = 0.0
                primary = now_primary
            since = self.d.ami.listening_since
            if since is not None and (since != session or time.monotonic() >= next_at):
                session = since
                next_at = time.monotonic() + self.every_s
                self.revisit_in = None
                try:
                    await self.once()
                except Exception:
                    log.exception("reconciling Redis with the PBX failed; next try later")
                if self.revisit_in is not None:
                    next_at = min(next_at, time.monotonic() + self.revisit_in)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass

    async def _primary(self) -> str | None:
        """The Redis server's run id (a new one after a failover or a restart); None when
        Redis can't be asked now."""
        try:
            info = await self.d.redis.info("server")
        except Exception:
            return None
        return str(info.get("run_id", "")) or None

    async def once(self) -> dict[str, int]:
        """One pass; returns counts of what it changed (for logs and tests)."""
        # Whatever changed after this moment can't be judged from the listing: with hundreds
        # of calls a pass takes seconds, and a responder who took a call meanwhile has a leg
        # the listing doesn't show.
        listed_at = time.time()
        action = {"Action": "CoreShowChannels"}
        by_node = getattr(self.d.ami, "listing_nodes", None)
        if by_node is not None:
            # Several nodes: each judged on its own listing; the calls of a node that could
            # not be asked are left alone (not taken for a node with no calls).
            channels, self.unseen = await by_node(action, "CoreShowChannel")
            if len(self.unseen) == len(self.d.ami.gateways):
                return {}
        else:
            channels, self.unseen = await self.d.ami.listing(action, "CoreShowChannel"), set()
            if channels is None:
                return {}  # Asterisk could not be asked: change nothing on a guess
        # Channel names start again from 00000000 when Asterisk restarts: a new call can
        # carry an old call's channel name. Uniqueids don't repeat: compare those.
        live = {c.get("Uniqueid", "") for c in channels}
        legs = _legs_index(live)
        hashes = await self._live_calls()
        counts = {"ended": 0, "freed": 0, "restored": 0, "busy": 0}
        counts["busy"] = await self._busy_again(channels, listed_at)
        counts["ended"] = await self._end_gone_calls(live, legs, hashes)
        counts["freed"] = await self._free_responders(legs, listed_at)
        known = {data.get("x_uniqueid") for data in hashes.values()} - {None, ""}
        counts["restored"] = await self._restore_callers(channels, known)
        if any(counts.values()):
            log.warning("reconciled with the PBX: %s", counts)
        return counts

    async def _busy_again(self, channels: list[dict[str, str]], listed_at: float) -> int:
        """Responders the PBX shows in a call's room whom Redis has free (a write lost in a
        Redis failover): on that call again. (A leg that left the room since the listing
        is judged by the next pass, which frees its responder.)"""
        pairs = []
        for info in channels:
            leg = parse_leg_id(info.get("Uniqueid", ""))
            if leg is not None and info.get("Application", "") == "ConfBridge":
                pairs.append((leg[3], leg[0]))
        restored = await self.d.offers.talking(pairs, listed_at)
        for rid in restored:
            log.warning("responder %s is in a call's room but was free in Redis: busy again",
                        rid)
        return len(restored)

    async def _live_calls(self) -> dict[str, dict[str, str]]:
        """Every live call's hash, a pipeline per PAGE calls (not a round trip each)."""
        ids = await self.d.calls.live()
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), PAGE):
            page = ids[start:start + PAGE]
            async with self.d.redis.pipeline(transaction=False) as pipe:
                for call_id in page:
                    pipe.hgetall(call_key(call_id))
                raws = await pipe.execute()
            for call_id, raw in zip(page, raws, strict=True):
                out[call_id] = {k.decode(): v.decode() for k, v in raw.items()}
        return out

    async def _end_gone_calls(self, live: set[str], legs: dict[str, list[str]],
                              hashes: dict[str, dict[str, str]]) -> int:
        """``live``: the uniqueids of every channel Asterisk has now (``legs``: ours, by the
        call they could be of); ``hashes``: the live calls' hashes."""
        calls, n = self.d.calls, 0
        for call_id, data in hashes.items():
            if not data:
                await calls.redis.srem(LIVE, call_id)
                continue
            if data.get("pbx_node") and data["pbx_node"] in self.unseen:
                continue
            request = data.get("cb_state", "")
            if request == cb.PENDING:
                # Nobody is on the line by design: the request waits for its turn, unless
                # a responder took it and no attempt started (their leg gone): nobody would
                # ever dial it.
                n += await self._stuck_request(call_id, data, legs)
                continue
            if request == cb.CALLING:
                n += await self._lost_attempt(call_id, data, legs)
                continue
            uniqueid = data.get("x_uniqueid", "")
            if not uniqueid or uniqueid in live:
                self._missing.pop(call_id, None)
                continue
            # A caller who just hung up is ended by their own h extension (with the step they
            # were at) a moment later: only a call gone for GONE_GRACE_S is ended from here.
            first = self._missing.setdefault(call_id, time.monotonic())
            if time.monotonic() - first < GONE_GRACE_S:
                self._later(GONE_GRACE_S - (time.monotonic() - first) + 0.2)
                continue
            self._missing.pop(call_id, None)
            state = data.get("state", "")
            if state == "fallback" and request == cb.REQUESTED:
                # They left the fallback group with a request and no FastAGI server said so.
                if data.get("fallback_answered") == "1":
                    await self.d.callbacks.close(call_id, cb.FALLBACK_ANSWERED,
                                                 data.get("callback_number", ""))
                    await calls.redis.srem(LIVE, call_id)
                else:
                    await self.d.callbacks.after_fallback(call_id)
                n += 1
                continue
            if state == "bridged" or data.get("time_to_human_s"):
                done = await calls.end(call_id, State.ENDED, "bridged", "call_ended", "pbx_gone")
            elif state in ("ivr", "waiting", "dispatching"):
                done = await calls.end(call_id, State.ABANDONED, "", "caller_hung_up", "pbx_gone")
            else:
                continue
            if done:
                n += 1
                await self.d.cancel_legs(call_id)
        return n

    async def _stuck_request(self, call_id: str, data: dict[str, str],
                             legs: dict[str, list[str]]) -> int:
        rid = data.get("accepted_by", "")
        if not rid or rid.startswith("supervisor:") or _leg_up(legs, call_id, rid):
            return 0
        if time.time() - float(data.get("accepted_at") or 0) < YOUNG_S:
            return 0
        if await self.d.callbacks.unstick(call_id, rid):
            log.warning("call %s: callback request taken by %s never started; offered again",
                        call_id, rid)
            return 1
        return 0

    async def _lost_attempt(self, call_id: str, data: dict[str, str],
                            legs: dict[str, list[str]]) -> int:
        """A callback being dialled whose responder leg is gone (the PBX restarted, or the
        leg's report never came): the attempt counts as lost and the request goes on."""
        rid = data.get("cb_calling_by", "")
        if _leg_up(legs, call_id, rid):
            return 0
        if time.time() - float(data.get("cb_attempt_at") or 0) < YOUNG_S:
            return 0
        attempt = int(data.get("cb_attempts") or 0)
        s = self.d.settings
        nxt = cb.after_attempt(cb.LOST, attempt, s.callback_attempts, s.callback_retry_s,
                               time.time())
        taken = await self.d.callbacks.finish_attempt(call_id, attempt, cb.LOST, nxt,
                                                      data.get("callback_number", ""))
        return int(taken)

    def _later(self, wait: float) -> None:
        self.revisit_in = min(self.revisit_in or wait, wait)

    async def _responder_states(self) -> list[tuple[bytes, list[bytes | None]]]:
        """(key, [on_call_with, ringing_for, last_offered_at]) of every responder known to
        Redis, a pipeline per SCAN page."""
        redis, out = self.d.redis, []
        keys = [key async for key in redis.scan_iter(responder_key("*"), count=500)]
        for start in range(0, len(keys), PAGE):
            page = keys[start:start + PAGE]
            async with redis.pipeline(transaction=False) as pipe:
                for key in page:
                    pipe.hmget(key, "on_call_with", "ringing_for", "last_offered_at")
                out += list(zip(page, await pipe.execute(), strict=True))
        return out

    async def _free_responders(self, legs: dict[str, list[str]], listed_at: float) -> int:
        redis, n = self.d.redis, 0
        for key, (on, ringing, offered) in await self._responder_states():
            rid = key.decode().rsplit(":", 1)[-1]
            for call_id, accepted in ((on, True), (ringing, False)):
                call_id = (call_id or b"").decode()
                if not call_id:
                    continue
                if _leg_up(legs, call_id, rid):
                    continue  # their leg for that call is still up
                data = await self.d._hash(call_id)
                if data.get("pbx_node") and data["pbx_node"] in self.unseen:
                    continue  # its node could not be asked this pass
                if data.get("source") == Source.TEXT:
                    continue  # a text offer has no leg: its link's lifetime ends it (textline)
                if accepted:
                    # Taken (or a callback dialled) since shortly before the listing: their
                    # leg may be missing from it. Judge it on the next pass.
                    since = max(float(data.get("accepted_at") or 0),
                                float(data.get("cb_attempt_at") or 0))
                    if since > listed_at - ACCEPT_MARGIN_S:
                        self._later(since - listed_at + ACCEPT_MARGIN_S + 0.5)
                        continue
                else:
                    # The offer's own time: a wave that began long ago can ring someone new
                    # (a phone that passed is replaced), whose Originate may be in flight.
                    age = listed_at - max(float(data.get("wave_started_at") or 0),
                                          float((offered or b"0").decode() or 0))
                    if data.get("state") in ("waiting", "dispatching") and age < YOUNG_S:
                        self._later(YOUNG_S - age + 0.5)
                        continue
                if accepted:
                    # The call ended when the PBX (or our process) went away, some time ago:
                    # no further rest is owed to anyone.
                    await self.d.offers.end_call(rid, call_id, 0.0)
                else:
                    # (Stops their ringing for this call only: an unconditional clear here
                    # once freed someone rung for a newer call meanwhile, who was then
                    # offered a third and took both.)
                    await self.d.offers.passed(call_id, rid, "leg_gone")
                await redis.hdel(legs_key(call_id), rid)
                n += 1
        return n

    async def _restore_callers(self, channels: list[dict[str, str]], known: set[str]) -> int:
        """Callers Asterisk has and Redis has lost (Redis restarted without its data).
        ``known``: the uniqueids of the callers Redis has (asked nothing about: at 500 callers
        six Getvars each made every pass thousands of AMI round trips)."""
        n = 0
        for info in channels:
            channel = info.get("Channel", "")
            uniqueid = info.get("Uniqueid", "")
            if uniqueid in known or uniqueid.startswith(("pr-", "pri-", "prs-", "pra-", "prt-")):
                continue
            if not info.get("Context", "").startswith(CALLER_CONTEXTS):
                continue
            first = await self._vars(channel, ("PR_CALL_ID",))
            if first is None:
                break  # AMI went away: the next pass (after the reconnect) does the rest
            call_id = first.get("PR_CALL_ID", "")
            if not call_id or await self.d.redis.hexists(call_key(call_id), "id"):
                continue
            values = await self._vars(channel, ("PR_SOURCE", "PR_LANGUAGE", "PR_NEIGHBORHOOD",
                                                "PR_QUEUED", "PR_IN_FALLBACK"))
            if values is None:
                break
            await self._restore(call_id, channel, {**first, **values}, info)
            n += 1
        return n

    async def _vars(self, channel: str, names: tuple[str, ...]) -> dict[str, str] | None:
        """The channel's variables that are set; None when AMI could not be asked."""
        out = {}
        for name in names:
            try:
                reply = await self.d.ami.action({"Action": "Getvar", "Channel": channel,
                                                 "Variable": name})
            except Exception:
                return None
            if reply.get("Response") == "Success":
                out[name] = reply.get("Value", "")
        return out

    async def _restore(self, call_id: str, channel: str, values: dict[str, str],
                       info: dict[str, str]) -> None:
        settings = self.d.settings
        try:
            source = Source(values.get("PR_SOURCE") or "direct")
        except ValueError:
            source = Source.DIRECT
        language = values.get("PR_LANGUAGE") or settings.default_language
        now = time.time()
        call = Call(id=call_id, source=source, language=language,
                    priority=settings.priority_for(source.value),
                    neighborhood=values.get("PR_NEIGHBORHOOD") or None, channel=channel,
                    created_at=now)
        in_room = info.get("Application", "") == "ConfBridge"
        queued = values.get("PR_QUEUED") == "1" and values.get("PR_IN_FALLBACK") != "1"
        redis = self.d.redis
        call.extra["uniqueid"] = info.get("Uniqueid", "")
        mapping = {**call.to_hash(), "restored": "1", "ivr_done": "1" if in_room else "0",
                   "step": "waiting_room" if in_room else ""}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(call_key(call_id), mapping=mapping)
            pipe.sadd(LIVE, call_id)
            pipe.set(channel_key(channel), call_id, ex=86400)
            if queued:
                score = queue_score(call.priority, now)
                pipe.hset(call_key(call_id), mapping={"state": State.WAITING.value,
                                                      "queued_at": f"{now:.3f}",
                                                      "queue_score": str(score)})
                pipe.zadd(QUEUE, {call_id: score})
            await pipe.execute()
        await self.d.calls.event(call_id, "restored_from_pbx", queued=int(queued))
        self.d.wake.set()
