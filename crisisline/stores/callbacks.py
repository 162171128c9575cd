"""Callback requests in Redis: on the call's own hash (fields ``cb_*``), so a request keeps
the call's place in the queue (its ``queue_score``: priority, then arrival).

Keys (prefix ``pr:``):
  callback:number:<digest>  str   the call holding the open request for a number (one
                                  person never holds two); a digest, not the number
  callback:later            zset  pending requests between attempts, score = when to retry

Every step is one Lua script, so two processes can't both start an attempt, and an
attempt's result is taken once (a late or repeated report is ignored). States and
outcomes: crisisline.callbacks.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from crisisline import callbacks as cb
from crisisline.stores.calls import CLAIMED, EVENTS, LIVE, PREFIX, QUEUE, call_key

LATER = PREFIX + "callback:later"


def number_index(number: str) -> str:
    return f"{PREFIX}callback:number:{cb.number_key(number)}"


# KEYS: call hash, number index, events; ARGV: call id, number, safe_here, message_ok, now
# Returns the call id holding the request: this one, or another live one for that number.
_REQUEST = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  local other = redis.call('HGET', ARGV[6] .. 'call:' .. holder, 'cb_state')
  if other and other ~= '' and other ~= 'done' then return holder end
end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'waiting' and state ~= 'dispatching' then return false end
local current = redis.call('HGET', KEYS[1], 'cb_state')
if current and current ~= '' and current ~= 'done' then return ARGV[1] end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'callback_number', ARGV[2], 'cb_state', 'requested',
           'cb_requested_at', ARGV[5], 'cb_safe_here', ARGV[3], 'cb_message', ARGV[4],
           'cb_attempts', '0', 'cb_outcome', '', 'cb_result', '', 'cb_message_left', '')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', 'callback_requested',
           'call_id', ARGV[1], 'at', ARGV[5], 'safe_here', ARGV[3], 'message_ok', ARGV[4])
return ARGV[1]
"""

# The responder first: a pending request becomes this responder's attempt (once).
# KEYS: call hash, events; ARGV: call id, rid, now. Returns the attempt number, or 0.
_START = """
if redis.call('HGET', KEYS[1], 'cb_state') ~= 'pending' then return 0 end
if redis.call('HGET', KEYS[1], 'accepted_by') ~= ARGV[2] then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'cb_attempts', 1)
redis.call('HSET', KEYS[1], 'cb_state', 'calling', 'cb_calling_by', ARGV[2],
           'cb_attempt_at', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'type', 'callback_calling',
           'call_id', ARGV[1], 'at', ARGV[3], 'responder', ARGV[2], 'attempt', n)
return n
"""

# An attempt's result, taken once. KEYS: call hash, number index, later, queue, claimed,
# live, events, offers hash; ARGV: call id, attempt, result, next state, outcome, retry at,
# now, prefix. Returns 1 when taken.
_FINISH = """
if redis.call('HGET', KEYS[1], 'cb_state') ~= 'calling' then return 0 end
if redis.call('HGET', KEYS[1], 'cb_attempts') ~= ARGV[2] then return 0 end
local rid = redis.call('HGET', KEYS[1], 'accepted_by') or ''
if ARGV[3] == 'message_left' then redis.call('HSET', KEYS[1], 'cb_message_left', '1') end
if ARGV[4] == 'done' and ARGV[5] == 'bridged' then
  -- The responder is talking with the caller now: still on this call (freed when it ends).
  redis.call('HSET', KEYS[1], 'cb_state', 'done', 'cb_outcome', 'bridged', 'cb_result', ARGV[3],
             'cb_done_at', ARGV[7])
  if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', '200000', '*', 'type', 'callback_answered',
             'call_id', ARGV[1], 'at', ARGV[7], 'attempt', ARGV[2], 'responder', rid)
  return 1
end
if rid ~= '' then
  local rkey = ARGV[8] .. 'responder:' .. rid
  if redis.call('HGET', rkey, 'on_call_with') == ARGV[1] then
    redis.call('HSET', rkey, 'on_call_with', '', 'ringing_for', '')
  end
end
redis.call('DEL', KEYS[8])
local cycle = tonumber(redis.call('HGET', KEYS[1], 'cycle') or '0') + 1
redis.call('HSET', KEYS[1], 'accepted_by', '', 'accepted_at', '', 'owner', '', 'cycle', cycle,
           'wave', 0, 'cb_result', ARGV[3], 'cb_calling_by', '')
redis.call('ZREM', KEYS[5], ARGV[1])
if ARGV[4] == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'cb_state', 'pending', 'cb_next_at', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', '200000', '*', 'type', 'callback_attempt_failed',
             'call_id', ARGV[1], 'at', ARGV[7], 'attempt', ARGV[2], 'result', ARGV[3],
             'responder', rid, 'retry_at', ARGV[6])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'callback_failed', 'cb_state', 'done', 'cb_outcome', ARGV[5],
           'cb_done_at', ARGV[7], 'ended_at', ARGV[7], 'end_reason', ARGV[5], 'end_step', 'callback')
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', '200000', '*', 'type', 'callback_failed',
           'call_id', ARGV[1], 'at', ARGV[7], 'attempt', ARGV[2], 'result', ARGV[3],
           'outcome', ARGV[5], 'responder', rid)
return 1
"""

# Pending requests whose retry time came: back in the queue at their own place.
# KEYS: later, queue, events; ARGV: prefix, now
_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, 100)
local out = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. 'call:' .. id
  if redis.call('HGET', key, 'cb_state') == 'pending' and
      redis.call('HGET', key, 'state') == 'waiting' then
    redis.call('ZADD', KEYS[2], redis.call('HGET', key, 'queue_score'), id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', 'requeued', 'call_id', id,
               'at', ARGV[2], 'reason', 'callback_retry')
    table.insert(out, id)
  end
end
return out
"""

# The caller calls in again and chooses to wait on the line: the same request, the same
# place, now with them on this channel. KEYS: call hash, later, queue, claimed, events;
# ARGV: call id, channel, uniqueid, now. Returns 1 when they rejoined.
_REJOIN = """
if redis.call('HGET', KEYS[1], 'cb_state') ~= 'pending' then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'waiting' and state ~= 'dispatching' then return 0 end
redis.call('HSET', KEYS[1], 'cb_state', 'requested', 'channel', ARGV[2], 'x_uniqueid', ARGV[3],
           'cb_rejoined_at', ARGV[4])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'queue_score'), ARGV[1])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '200000', '*', 'type', 'callback_rejoined',
           'call_id', ARGV[1], 'at', ARGV[4])
return 1
"""

# A supervisor cancels a request (never one being dialled right now). A caller still on the
# line keeps their call; a request whose caller left ends the call.
# KEYS: call hash, number index, later, queue, claimed, live, events; ARGV: call id, by, now
_CANCEL = """
local cbs = redis.call('HGET', KEYS[1], 'cb_state')
if cbs ~= 'requested' and cbs ~= 'pending' then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'cb_state', 'done', 'cb_outcome', 'cancelled', 'cb_done_at', ARGV[3],
           'cb_cancelled_by', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local taken = redis.call('HGET', KEYS[1], 'accepted_by')
if cbs == 'pending' and (not taken or taken == '') then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'ended_at', ARGV[3], 'end_reason', 'cancelled',
             'end_step', 'callback')
end
redis.call('XADD', KEYS[7], 'MAXLEN', '~', '200000', '*', 'type', 'callback_cancelled',
           'call_id', ARGV[1], 'at', ARGV[3], 'by', ARGV[2], 'ends_call',
           cbs == 'pending' and '1' or '0')
return 1
"""

# The caller, still holding their request, reached a person some other way (a responder
# while on the line, the fallback desk): the request is done. KEYS: call hash, number index,
# later, events; ARGV: call id, outcome, now
_CLOSE = """
local cbs = redis.call('HGET', KEYS[1], 'cb_state')
if cbs ~= 'requested' and cbs ~= 'pending' then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'cb_state', 'done', 'cb_outcome', ARGV[2], 'cb_done_at', ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '200000', '*', 'type', 'callback_closed',
           'call_id', ARGV[1], 'at', ARGV[3], 'outcome', ARGV[2])
return 1
"""

# The caller left the fallback group unanswered while holding a request: it is pending from
# its own place again. KEYS: call hash, queue, live, events; ARGV: call id, now
_AFTER_FALLBACK = """
if redis.call('HGET', KEYS[1], 'cb_state') ~= 'requested' then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'fallback' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'cb_state', 'pending', 'channel', '',
           'owner', '', 'accepted_by', '', 'cb_left_at', ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'queue_score'), ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '200000', '*', 'type', 'callback_pending',
           'call_id', ARGV[1], 'at', ARGV[2], 'from', 'fallback')
return 1
"""


# A pending request some responder "accepted" without an attempt starting (their whisper saw
# the caller still on the line a moment before they left, or the leg went): nobody will ever
# dial it. It is offered again from its own place. KEYS: call hash, queue, claimed, later,
# events; ARGV: call id, responder, now, prefix. Returns 1 when it was put back.
_UNSTICK = """
if redis.call('HGET', KEYS[1], 'cb_state') ~= 'pending' then return 0 end
if redis.call('HGET', KEYS[1], 'accepted_by') ~= ARGV[2] or ARGV[2] == '' then return 0 end
local rkey = ARGV[4] .. 'responder:' .. ARGV[2]
if redis.call('HGET', rkey, 'on_call_with') == ARGV[1] then
  redis.call('HSET', rkey, 'on_call_with', '', 'ringing_for', '')
end
local cycle = tonumber(redis.call('HGET', KEYS[1], 'cycle') or '0') + 1
redis.call('HSET', KEYS[1], 'state', 'waiting', 'accepted_by', '', 'accepted_at', '', 'owner', '',
           'cycle', cycle, 'wave', 0)
redis.call('DEL', ARGV[4] .. 'offers:' .. ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'queue_score') or ARGV[3], ARGV[1])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '200000', '*', 'type', 'requeued', 'call_id', ARGV[1],
           'at', ARGV[3], 'reason', 'callback_not_started', 'responder', ARGV[2])
return 1
"""

class CallbackStore:
    """Async adapter; one per process."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._request = redis.register_script(_REQUEST)
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._due = redis.register_script(_DUE)
        self._rejoin = redis.register_script(_REJOIN)
        self._cancel = redis.register_script(_CANCEL)
        self._close = redis.register_script(_CLOSE)
        self._after_fallback = redis.register_script(_AFTER_FALLBACK)
        self._unstick = redis.register_script(_UNSTICK)

    async def request(self, call_id: str, answers: cb.SafetyAnswers) -> str | None:
        """Record the request; returns the call that holds the open request for that number
        (this one, or another: one person never holds two), or None when this call can no
        longer take one (it ended meanwhile)."""
        safe = "" if answers.safe_here is None else ("1" if answers.safe_here else "0")
        got = await self._request(
            keys=[call_key(call_id), number_index(answers.number), EVENTS],
            args=[call_id, answers.number, safe, "1" if answers.message_ok else "0",
                  f"{time.time():.3f}", PREFIX])
        return got.decode() if got else None

    async def holder(self, number: str) -> str | None:
        """The call holding an open request for ``number``, if any."""
        got = await self.redis.get(number_index(number))
        if not got:
            return None
        call_id = got.decode()
        state = await self.redis.hget(call_key(call_id), "cb_state")
        return call_id if state and state.decode() not in ("", cb.DONE) else None

    async def start_attempt(self, call_id: str, rid: str) -> int:
        return int(await self._start(keys=[call_key(call_id), EVENTS],
                                     args=[call_id, rid, f"{time.time():.3f}"]))

    async def finish_attempt(self, call_id: str, attempt: int, result: str,
                             nxt: cb.Next, number: str) -> bool:
        now = time.time()
        return bool(await self._finish(
            keys=[call_key(call_id), number_index(number) if number else PREFIX + "none", LATER,
                  QUEUE, CLAIMED, LIVE, EVENTS, f"{PREFIX}offers:{call_id}"],
            args=[call_id, str(attempt), result, nxt.state, nxt.outcome, f"{nxt.retry_at:.3f}",
                  f"{now:.3f}", PREFIX]))

    async def release_due(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        got = await self._due(keys=[LATER, QUEUE, EVENTS], args=[PREFIX, f"{now:.3f}"])
        return [g.decode() for g in got]

    async def rejoin(self, call_id: str, channel: str, uniqueid: str) -> bool:
        return bool(await self._rejoin(
            keys=[call_key(call_id), LATER, QUEUE, CLAIMED, EVENTS],
            args=[call_id, channel, uniqueid, f"{time.time():.3f}"]))

    async def cancel(self, call_id: str, by: str, number: str) -> bool:
        return bool(await self._cancel(
            keys=[call_key(call_id), number_index(number) if number else PREFIX + "none", LATER,
                  QUEUE, CLAIMED, LIVE, EVENTS],
            args=[call_id, by, f"{time.time():.3f}"]))

    async def close(self, call_id: str, outcome: str, number: str) -> bool:
        return bool(await self._close(
            keys=[call_key(call_id), number_index(number) if number else PREFIX + "none", LATER,
                  EVENTS],
            args=[call_id, outcome, f"{time.time():.3f}"]))

    async def after_fallback(self, call_id: str) -> bool:
        return bool(await self._after_fallback(keys=[call_key(call_id), QUEUE, LIVE, EVENTS],
                                               args=[call_id, f"{time.time():.3f}"]))

    async def start_now(self, call_id: str) -> bool:
        """A supervisor starts a pending request now rather than at its retry time."""
        if await self.redis.zadd(LATER, {call_id: 0}, xx=True, ch=True) == 0 and \
                await self.redis.zscore(LATER, call_id) is None:
            return False
        return call_id in await self.release_due()

    async def unstick(self, call_id: str, rid: str) -> bool:
        """A pending request taken by ``rid`` whose attempt never started: offered again."""
        return bool(await self._unstick(keys=[call_key(call_id), QUEUE, CLAIMED, LATER, EVENTS],
                                        args=[call_id, rid, f"{time.time():.3f}", PREFIX]))

    async def fields(self, call_id: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(call_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items() if k.decode().startswith("cb_")}
