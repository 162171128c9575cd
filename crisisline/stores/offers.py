"""Offers to responders, and responders' live state, in Redis.

Keys (prefix ``pr:``):
  responder:<rid>        hash   ringing_for, on_call_with, last_offered_at, resting_until
                                (epoch s: wrap-up after their last call ends)
  offers:<call>          hash   <rid> -> "ringing:<wave>" | "ringing:<wave>:whisper" (answered,
                                hearing who is waiting) | "passed:<reason>" | "accepted"
  offered:<call>:<cycle> set    responders offered in this cycle: nobody rings twice per wave
  legs:<call>            hash   <rid> -> channel name of their leg while it is up (removed at
                                its Hangup, so only live legs are ever hung up)
  commands               stream supervisor actions for the dispatcher (from the panel)

Accepting is one Lua script: the first responder to press 1 while the caller still waits
wins; everyone after is told the call was taken.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from crisisline.stores.calls import CLAIMED, EVENTS, EVENTS_MAXLEN, PREFIX, call_key
from crisisline.stores.scripts import evalsha_many

COMMANDS = PREFIX + "commands"
SEPARATOR = "\x1f"  # between responder ids in one script argument (never in an id)


def responder_key(rid: str) -> str:
    return f"{PREFIX}responder:{rid}"


def offers_key(call_id: str) -> str:
    return f"{PREFIX}offers:{call_id}"


def offered_key(call_id: str, cycle: int) -> str:
    return f"{PREFIX}offered:{call_id}:{cycle}"


def offered_keys_pattern(call_id: str) -> str:
    """SCAN pattern for every cycle's offered set of a call."""
    return f"{PREFIX}offered:{call_id}:*"


def legs_key(call_id: str) -> str:
    """Responder id -> the Asterisk channel of their leg (from Newchannel), to hang it up."""
    return f"{PREFIX}legs:{call_id}"


# KEYS: call hash, offers hash, responder hash, events; ARGV: call id, rid, now
_ACCEPT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'waiting' and state ~= 'dispatching' then return 0 end
if redis.call('HGET', KEYS[1], 'accepted_by') then
  local by = redis.call('HGET', KEYS[1], 'accepted_by')
  if by ~= '' then return 0 end
end
-- Never a responder in two calls: one already on another call can't take this one (their
-- phone may still answer a second leg), nor can an offer that already ended (a wave's
-- timeout, a hang-up) come back to life. A supervisor's take has no offer.
local busy = redis.call('HGET', KEYS[3], 'on_call_with')
if busy and busy ~= '' and busy ~= ARGV[1] then return 0 end
local offer = redis.call('HGET', KEYS[2], ARGV[2])
if offer and string.sub(offer, 1, 8) ~= 'ringing:' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'bridged', 'accepted_by', ARGV[2], 'accepted_at', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], 'accepted')
redis.call('HSET', KEYS[3], 'on_call_with', ARGV[1], 'ringing_for', '')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '200000', '*', 'type', 'accepted', 'call_id', ARGV[1],
           'at', ARGV[3], 'responder', ARGV[2])
return 1
"""

# Mark ringing only if this responder isn't ringing for, or on, another call, isn't resting
# after one, and has no open offer (ringing or in the whisper) for this very call: nobody is
# rung twice for one call at once. KEYS: responder hash, offers hash, offered set, events;
# ARGV: call id, rid, wave, now. Nor for a call that ended or was taken meanwhile (KEYS[5]:
# the call's hash): a dispatcher working from a copy read a moment ago never rings for it.
_RING = """
local state = redis.call('HGET', KEYS[5], 'state')
if state ~= 'waiting' and state ~= 'dispatching' then return 0 end
local by = redis.call('HGET', KEYS[5], 'accepted_by')
if by and by ~= '' then return 0 end
local ringing = redis.call('HGET', KEYS[1], 'ringing_for')
local busy = redis.call('HGET', KEYS[1], 'on_call_with')
if (ringing and ringing ~= '' and ringing ~= ARGV[1]) or (busy and busy ~= '') then return 0 end
local resting = redis.call('HGET', KEYS[1], 'resting_until')
if resting and resting ~= '' and tonumber(resting) > tonumber(ARGV[4]) then return 0 end
local open = redis.call('HGET', KEYS[2], ARGV[2])
if open and string.sub(open, 1, 7) == 'ringing' then return 0 end
if redis.call('SADD', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'ringing_for', ARGV[1], 'last_offered_at', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], 'ringing:' .. ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '200000', '*', 'type', 'offer_ringing', 'call_id',
           ARGV[1], 'at', ARGV[4], 'responder', ARGV[2], 'wave', ARGV[3])
return 1
"""


# An offer still ringing (or in its whisper) ends: the first reason given stands, so the
# dispatcher's "no_answer" for a leg it hung up isn't overwritten by the whisper seeing that
# hang-up, and an accepted offer is never turned into a pass. Either way the responder stops
# ringing for this call (only this one). KEYS: offers hash, events, responder hash;
# ARGV: call id, rid, reason, now
_PASS = """
if redis.call('HGET', KEYS[3], 'ringing_for') == ARGV[1] then
  redis.call('HSET', KEYS[3], 'ringing_for', '')
end
local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current or string.sub(current, 1, 7) ~= 'ringing' then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], 'passed:' .. ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'type', 'offer_passed', 'call_id',
           ARGV[1], 'at', ARGV[4], 'responder', ARGV[2], 'reason', ARGV[3])
return 1
"""


# A leg's Hangup: out of the legs hash, if it is still the one there (a later leg of the same
# responder for the call may have replaced it). KEYS: legs hash; ARGV: rid, channel
_FORGET_LEG = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


# Take a leg out of the legs hash to hang it up: whoever takes it hangs it up, so only once.
# KEYS: legs hash; ARGV: rid. Returns the channel, or nil when there was none.
_TAKE_LEG = """
local channel = redis.call('HGET', KEYS[1], ARGV[1])
if channel then redis.call('HDEL', KEYS[1], ARGV[1]) end
return channel
"""


# The responder answered and is hearing the whisper: still an open offer, but one a wave's
# timeout must not cut off. KEYS: offers hash; ARGV: rid
_LISTENING = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current or string.sub(current, 1, 8) ~= 'ringing:' then return 0 end
if string.sub(current, -8) == ':whisper' then return 1 end
redis.call('HSET', KEYS[1], ARGV[1], current .. ':whisper')
return 1
"""


def in_whisper(status: str) -> bool:
    return status.startswith("ringing:") and status.endswith(":whisper")


# Of many responders, those who could take an offer at ARGV[1] (epoch s): not on a call, not
# resting. Busy ones are left out here, not in Python: with hundreds of callers most of a
# large roster is busy, and a plan needs only the others. The ids come as one argument
# (ARGV[3], separated by ARGV[2]; ARGV[4]: the key prefix), not as hundreds of KEYS: packing
# a command of a thousand arguments was most of this read's cost to the dispatcher. (Keys
# named in a script, not declared: fine on one Redis, primary or Sentinel's; not on a Redis
# Cluster.)
# Returns index (1-based), ringing_for, last_offered_at, resting_until for each, all in one
# string separated by ARGV[2] (one reply to split, not a thousand to decode).
_CANDIDATES = """
local out = {}
local at = tonumber(ARGV[1])
local i = 0
for rid in string.gmatch(ARGV[3], '[^' .. ARGV[2] .. ']+') do
  i = i + 1
  local v = redis.call('HMGET', ARGV[4] .. rid, 'on_call_with', 'resting_until',
                       'ringing_for', 'last_offered_at')
  if (not v[1] or v[1] == '') and (not v[2] or v[2] == '' or tonumber(v[2]) <= at) then
    out[#out + 1] = i .. ARGV[2] .. (v[3] or '') .. ARGV[2] .. (v[4] or '') .. ARGV[2] ..
                    (v[2] or '')
  end
end
return table.concat(out, ARGV[2])
"""


# The responder's leg of a call they were on has ended: free after their wrap-up, but only
# if they are still marked as on that call. KEYS: responder hash; ARGV: call id, resting until
_LEFT = """
if redis.call('HGET', KEYS[1], 'on_call_with') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'on_call_with', '', 'ringing_for', '', 'resting_until', ARGV[2])
return 1
"""


# A responder the PBX shows talking in a call's room, whom Redis thinks free (the write that
# said so was lost in a Redis failover): on that call again, so nobody offers them another.
# Not one freed since the listing was taken (their rest, which begins when a leg ends, began
# after it): that leg has left the room since. KEYS: responder hash; ARGV: call id, listed at
# (epoch s). Returns 1 when restored.
_TALKING = """
local on = redis.call('HGET', KEYS[1], 'on_call_with')
if on and on ~= '' then return 0 end
local resting = redis.call('HGET', KEYS[1], 'resting_until')
if resting and resting ~= '' and tonumber(resting) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'on_call_with', ARGV[1])
if redis.call('HGET', KEYS[1], 'ringing_for') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'ringing_for', '')
end
return 1
"""


class OfferStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._accept = redis.register_script(_ACCEPT)
        self._ring = redis.register_script(_RING)
        self._candidates = redis.register_script(_CANDIDATES)
        self._forget_leg = redis.register_script(_FORGET_LEG)
        self._take_leg = redis.register_script(_TAKE_LEG)
        self._pass = redis.register_script(_PASS)
        self._listening = redis.register_script(_LISTENING)
        self._left = redis.register_script(_LEFT)
        self._talking = redis.register_script(_TALKING)

    async def ring(self, call_id: str, rid: str, wave: int, cycle: int) -> bool:
        """Claim this responder for this call's wave; False if busy or already offered."""
        got = await self._ring(
            keys=[responder_key(rid), offers_key(call_id), offered_key(call_id, cycle), EVENTS,
                  call_key(call_id)],
            args=[call_id, rid, str(wave), f"{time.time():.3f}"])
        return bool(got)

    async def ring_many(self, offers: list[tuple[str, str, int, int]]) -> list[bool]:
        """:meth:`ring` for many (call id, rid, wave, cycle) at once: one round trip, each
        offer still decided by its own script, in the order given (the first call asking
        for a responder gets them)."""
        if not offers:
            return []
        now = f"{time.time():.3f}"
        got = await evalsha_many(self.redis, [
            (self._ring, [responder_key(rid), offers_key(call_id), offered_key(call_id, cycle),
                          EVENTS, call_key(call_id)], [call_id, rid, str(wave), now])
            for call_id, rid, wave, cycle in offers])
        return [bool(g) for g in got]

    async def accept(self, call_id: str, rid: str) -> bool:
        got = await self._accept(
            keys=[call_key(call_id), offers_key(call_id), responder_key(rid), EVENTS],
            args=[call_id, rid, f"{time.time():.3f}"])
        return bool(got)

    async def passed(self, call_id: str, rid: str, reason: str) -> bool:
        """The responder won't take it (declined, no key, hung up, taken, no answer). Only
        an offer still ringing becomes a pass; False when it had already ended."""
        done = await self._pass(keys=[offers_key(call_id), EVENTS, responder_key(rid)],
                                args=[call_id, rid, reason, f"{time.time():.3f}"])
        return bool(done)  # (and the responder released: one round trip, not three)

    async def pass_many(self, call_id: str, rids: list[str], reason: str) -> list[bool]:
        """:meth:`passed` for several responders of one call: one round trip."""
        if not rids:
            return []
        now = f"{time.time():.3f}"
        got = await evalsha_many(self.redis, [
            (self._pass, [offers_key(call_id), EVENTS, responder_key(rid)],
             [call_id, rid, reason, now]) for rid in rids])
        return [bool(g) for g in got]

    async def end_offers(self, call_id: str, rids: list[str], reason: str,
                         unclaim: bool = False) -> list[str]:
        """:meth:`passed` for these responders (the reason first: the whisper sees the
        hang-up and would call it its own), then their legs taken out of the legs hash (with
        ``unclaim``, the call out of the claimed set too): one round trip. Returns the
        channels to hang up."""
        if not rids and not unclaim:
            return []
        now = f"{time.time():.3f}"
        got = await evalsha_many(self.redis, [
            *((self._pass, [offers_key(call_id), EVENTS, responder_key(rid)],
               [call_id, rid, reason, now]) for rid in rids),
            *((self._take_leg, [legs_key(call_id)], [rid]) for rid in rids)],
            also=(lambda pipe: pipe.zrem(CLAIMED, call_id)) if unclaim else None)
        return [channel.decode() for channel in got[len(rids):2 * len(rids)] if channel]

    async def talking(self, pairs: list[tuple[str, str]], listed_at: float) -> list[str]:
        """(rid, call id) the PBX showed talking at ``listed_at``: each marked on that call
        unless Redis has them on one already; returns the rids restored."""
        if not pairs:
            return []
        got = await evalsha_many(self.redis, [
            (self._talking, [responder_key(rid)], [call_id, f"{listed_at:.3f}"])
            for rid, call_id in pairs])
        return [rid for (rid, _), done in zip(pairs, got, strict=True) if done]

    async def take_leg(self, call_id: str, rid: str) -> str | None:
        """The responder's leg, taken out of the legs hash to be hung up (once), if up."""
        channel = await self._take_leg(keys=[legs_key(call_id)], args=[rid])
        return channel.decode() if channel else None

    async def leg_up(self, call_id: str, rid: str, channel: str) -> str:
        """The responder's leg is up as ``channel`` (its Newchannel): noted in the legs hash,
        so any dispatcher can hang it up. Returns their offer's status now. (Legs that come
        up together go to Redis in one write: the client joins one loop turn's pipelines.)"""
        key = legs_key(call_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, rid, channel)
            pipe.expire(key, 86400)
            pipe.hget(offers_key(call_id), rid)
            got = await pipe.execute()
        return (got[2] or b"").decode()

    async def leg_gone(self, call_id: str, rid: str, channel: str, reason: str) -> tuple[bool, str]:
        """The responder's leg ``channel`` hung up: it leaves the legs hash, and their offer,
        if still open, ends with ``reason``. Returns (it ended now, the offer's status after)."""
        got = await evalsha_many(self.redis, [
            (self._forget_leg, [legs_key(call_id)], [rid, channel]),
            (self._pass, [offers_key(call_id), EVENTS, responder_key(rid)],
             [call_id, rid, reason, f"{time.time():.3f}"])],
            also=lambda pipe: pipe.hget(offers_key(call_id), rid))
        return bool(got[1]), (got[2] or b"").decode()

    async def listening(self, call_id: str, rid: str) -> bool:
        """The responder's phone answered and the whisper is playing; False when the offer
        already ended (then the whisper has nothing to offer)."""
        return bool(await self._listening(keys=[offers_key(call_id)], args=[rid]))

    async def end_call(self, rid: str, call_id: str, wrapup_s: float = 0.0,
                       event: dict[str, str] | None = None) -> bool:
        """The responder's leg of ``call_id`` ended: they rest ``wrapup_s``, then are free.
        ``event``: written to the event stream in the same round trip."""
        got = await evalsha_many(
            self.redis, [(self._left, [responder_key(rid)],
                          [call_id, f"{time.time() + wrapup_s:.3f}"])],
            also=(lambda pipe: pipe.xadd(EVENTS, event, maxlen=EVENTS_MAXLEN, approximate=True))
            if event else None)
        return bool(got[0])

    async def offers(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(offers_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def candidates(self, rids: list[str], at: float
                         ) -> dict[str, tuple[str, float | None, float | None]]:
        """Of ``rids``, those not on a call and not resting at ``at``: (ringing_for or "",
        last_offered_at, resting_until) each. One round trip; the busy ones cost nothing."""
        if not rids:
            return {}
        reply = await self._candidates(keys=[], args=[repr(at), SEPARATOR, SEPARATOR.join(rids),
                                                      responder_key("")])
        values = reply.decode().split(SEPARATOR) if reply else []
        out = {}
        for n in range(0, len(values), 4):
            index, ringing, offered, resting = values[n:n + 4]
            out[rids[int(index) - 1]] = (ringing, float(offered) if offered else None,
                                         float(resting) if resting else None)
        return out
