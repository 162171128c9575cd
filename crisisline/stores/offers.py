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

from crisisline.stores.calls import EVENTS, PREFIX, call_key

COMMANDS = PREFIX + "commands"


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
# ARGV: call id, rid, wave, now
_RING = """
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
# hang-up, and an accepted offer is never turned into a pass.
# KEYS: offers hash, events; ARGV: call id, rid, reason, now
_PASS = """
local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current or string.sub(current, 1, 7) ~= 'ringing' then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], 'passed:' .. ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'type', 'offer_passed', 'call_id',
           ARGV[1], 'at', ARGV[4], 'responder', ARGV[2], 'reason', ARGV[3])
return 1
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


# Live state of many responders in one round trip (a plan looks at everyone on call).
# KEYS: responder hashes; returns ringing_for, on_call_with, last_offered_at, resting_until.
_STATES = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'ringing_for', 'on_call_with', 'last_offered_at',
                       'resting_until')
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or ''
  out[#out + 1] = v[4] or ''
end
return out
"""
STATE_FIELDS = ("ringing_for", "on_call_with", "last_offered_at", "resting_until")


# The responder's leg of a call they were on has ended: free after their wrap-up, but only
# if they are still marked as on that call. KEYS: responder hash; ARGV: call id, resting until
_LEFT = """
if redis.call('HGET', KEYS[1], 'on_call_with') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'on_call_with', '', 'ringing_for', '', 'resting_until', ARGV[2])
return 1
"""


class OfferStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._accept = redis.register_script(_ACCEPT)
        self._ring = redis.register_script(_RING)
        self._states = redis.register_script(_STATES)
        self._pass = redis.register_script(_PASS)
        self._listening = redis.register_script(_LISTENING)
        self._left = redis.register_script(_LEFT)

    async def ring(self, call_id: str, rid: str, wave: int, cycle: int) -> bool:
        """Claim this responder for this call's wave; False if busy or already offered."""
        got = await self._ring(
            keys=[responder_key(rid), offers_key(call_id), offered_key(call_id, cycle), EVENTS],
            args=[call_id, rid, str(wave), f"{time.time():.3f}"])
        return bool(got)

    async def accept(self, call_id: str, rid: str) -> bool:
        got = await self._accept(
            keys=[call_key(call_id), offers_key(call_id), responder_key(rid), EVENTS],
            args=[call_id, rid, f"{time.time():.3f}"])
        return bool(got)

    async def passed(self, call_id: str, rid: str, reason: str) -> bool:
        """The responder won't take it (declined, no key, hung up, taken, no answer). Only
        an offer still ringing becomes a pass; False when it had already ended."""
        done = await self._pass(keys=[offers_key(call_id), EVENTS],
                                args=[call_id, rid, reason, f"{time.time():.3f}"])
        await self.release(rid, call_id)
        return bool(done)

    async def listening(self, call_id: str, rid: str) -> bool:
        """The responder's phone answered and the whisper is playing; False when the offer
        already ended (then the whisper has nothing to offer)."""
        return bool(await self._listening(keys=[offers_key(call_id)], args=[rid]))

    async def release(self, rid: str, call_id: str) -> None:
        """Free a responder from ringing for ``call_id`` (leaves other calls alone)."""
        key = responder_key(rid)
        if (await self.redis.hget(key, "ringing_for") or b"").decode() == call_id:
            await self.redis.hset(key, "ringing_for", "")

    async def end_call(self, rid: str, call_id: str, wrapup_s: float = 0.0) -> bool:
        """The responder's leg of ``call_id`` ended: they rest ``wrapup_s``, then are free."""
        return bool(await self._left(keys=[responder_key(rid)],
                                     args=[call_id, f"{time.time() + wrapup_s:.3f}"]))

    async def offers(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(offers_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def states(self, rids: list[str]) -> dict[str, dict[str, str]]:
        """ringing_for / on_call_with / last_offered_at / resting_until per responder."""
        if not rids:
            return {}
        flat = await self._states(keys=[responder_key(r) for r in rids])
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        n = len(STATE_FIELDS)
        return {rid: dict(zip(STATE_FIELDS, values[n * i:n * i + n], strict=True))
                for i, rid in enumerate(rids)}
