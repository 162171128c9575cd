"""Live calls in Redis: a hash per call, a priority queue, leases, and the event stream.

Keys (prefix ``pr:``):
  call:<id>   hash    the call (crisisline.call.Call.to_hash) plus dispatch fields
  queue       zset    waiting calls, score = priority * 1e13 + arrival in ms: (priority, arrival)
  claimed     zset    calls a dispatcher has taken, score = lease deadline (epoch s)
  live        set     every call not ended yet (what reconciliation with the PBX checks)
  channel:<name> str  the call on that Asterisk channel (a day), for its Hangup event
  events      stream  every state change: type, call_id, at, and details

Taking a call is one Lua script (pop + lease + mark), so two dispatchers can never take
the same call, and a dispatcher that dies leaves a lease that runs out and is requeued.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from crisisline.call import Call, State
from crisisline.stores.scripts import evalsha_many

PREFIX = "pr:"
QUEUE = PREFIX + "queue"
CLAIMED = PREFIX + "claimed"
LIVE = PREFIX + "live"
EVENTS = PREFIX + "events"
EVENTS_MAXLEN = 200_000


def call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def channel_key(channel: str) -> str:
    return f"{PREFIX}channel:{channel}"


def queue_score(priority: int, arrival: float) -> float:
    return priority * 1e13 + int(arrival * 1000)


def event_body(call_id: str, type_: str, **fields: Any) -> dict[str, str]:
    """An entry of the event stream (what :meth:`CallStore.event` writes)."""
    body = {"type": type_, "call_id": call_id, "at": f"{time.time():.3f}"}
    body.update({k: "" if v is None else str(v) for k, v in fields.items()})
    return body


# The most urgent ARGV[5] waiting calls (at least one), in queue order: each id and its
# hash as taken. KEYS: queue, claimed, events; ARGV: prefix, owner, lease deadline, now, how many
_CLAIM = """
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[5]) or 1)
if #popped == 0 then return false end
local out = {}
for i = 1, #popped, 2 do
  local id, score = popped[i], popped[i + 1]
  local key = ARGV[1] .. 'call:' .. id
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('HSET', key, 'state', 'dispatching', 'owner', ARGV[2], 'queue_score', score)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', 'claimed', 'call_id', id,
             'at', ARGV[4], 'owner', ARGV[2])
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
"""

# Leave the queue and any lease, but only while the call is still live (not already ended).
# An empty step means "where the caller was" (the IVR keeps it in the hash as it goes).
# KEYS: queue, claimed, events, live; ARGV: prefix, id, state, step, now, event type, reason
_END = """
local key = ARGV[1] .. 'call:' .. ARGV[2]
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
local step = ARGV[4]
if step == '' then step = redis.call('HGET', key, 'step') or '' end
if step == '' then step = ARGV[7] end
if state == 'ended' or state == 'abandoned' or state == 'fallback' or state == 'callback'
    or state == 'callback_failed' or state == 'cancelled' then
  return 0
end
-- A caller holding a callback request (crisisline/callbacks.py) who hangs up keeps it, and
-- the call keeps its place: the request is pending, worked like a waiting call.
local cb = redis.call('HGET', key, 'cb_state') or ''
if cb == 'requested' and ARGV[6] == 'caller_hung_up' and state ~= 'bridged' then
  redis.call('HSET', key, 'cb_state', 'pending', 'channel', '', 'cb_left_at', ARGV[5],
             'cb_left_step', step)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', 'callback_pending',
             'call_id', ARGV[2], 'at', ARGV[5], 'step', step)
  return 2
end
if cb == 'pending' and ARGV[6] == 'caller_hung_up' then
  return 0  -- nobody was on the line to hang up: the request goes on
end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
-- Nobody stays "ringing for" a call that has ended (they would never be offered another).
local offers = redis.call('HGETALL', ARGV[1] .. 'offers:' .. ARGV[2])
for i = 1, #offers, 2 do
  local rkey = ARGV[1] .. 'responder:' .. offers[i]
  if redis.call('HGET', rkey, 'ringing_for') == ARGV[2] then
    redis.call('HSET', rkey, 'ringing_for', '')
  end
end
-- At the fallback group with a request, the call stays live: if nobody there answers,
-- the request is pending again when the caller leaves (agi/handlers/hangup.py).
if not (cb == 'requested' and ARGV[3] == 'fallback') then
  redis.call('SREM', KEYS[4], ARGV[2])
end
redis.call('HSET', key, 'state', ARGV[3], 'end_step', step, 'ended_at', ARGV[5],
           'end_reason', ARGV[7])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', ARGV[6], 'call_id', ARGV[2],
           'at', ARGV[5], 'step', step, 'reason', ARGV[7], 'previous_state', state)
return 1
"""

# A wave was rung: its fields and its event, but only while the call is live (a call that
# ended meanwhile is never brought back to "dispatching" by a copy read before it ended).
# KEYS: call hash, events; ARGV: call id, wave, cycle, started at, label, responders
_WAVE_STARTED = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'waiting' and state ~= 'dispatching' then return 0 end
local used = tonumber(redis.call('HGET', KEYS[1], 'waves_used') or '0') or 0
if tonumber(ARGV[2]) > used then used = tonumber(ARGV[2]) end
redis.call('HSET', KEYS[1], 'state', 'dispatching', 'wave', ARGV[2], 'cycle', ARGV[3],
           'wave_started_at', ARGV[4], 'waves_used', used)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'type', 'wave_started',
           'call_id', ARGV[1], 'at', ARGV[4], 'wave', ARGV[2], 'cycle', ARGV[3],
           'label', ARGV[5], 'responders', ARGV[6])
return 1
"""

# KEYS: call hash, claimed; ARGV: owner, lease deadline, call id
_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[3])
return 1
"""

# Put leases that ran out back in the queue at their original place. KEYS: claimed, queue, events
_REQUEUE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local out = {}
for _, id in ipairs(expired) do
  local key = ARGV[1] .. 'call:' .. id
  redis.call('ZREM', KEYS[1], id)
  local state = redis.call('HGET', key, 'state')
  if state == 'dispatching' or state == 'waiting' then
    local score = redis.call('HGET', key, 'queue_score')
    redis.call('ZADD', KEYS[2], score, id)
    redis.call('HSET', key, 'state', 'waiting', 'owner', '')
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', '200000', '*', 'type', 'requeued', 'call_id', id,
               'at', ARGV[3])
    table.insert(out, id)
  end
end
return out
"""


# Fields of a call that exists; never a fragment of one (after Redis lost its data, the IVR's
# next update must not create a call hash with no id). KEYS: call hash; ARGV: field, value...
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


# The caller and the responder are together: noted once, by whoever hears it first (every
# dispatcher hears every node). KEYS: call, events; ARGV: connected_at, the number n of
# field/value pairs to set, those pairs, then the event's field/value pairs (none: no event).
_CONNECTED = """
if redis.call('HSETNX', KEYS[1], 'connected_at', ARGV[1]) == 0 then return 0 end
local n = tonumber(ARGV[2])
for i = 3, 2 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV > 2 + 2 * n then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '""" + str(EVENTS_MAXLEN) + """', '*',
             unpack(ARGV, 3 + 2 * n))
end
return 1
"""


class CallStore:
    """Async adapter over Redis. One per process; cheap to share between sessions."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._end = redis.register_script(_END)
        self._requeue = redis.register_script(_REQUEUE)
        self._renew = redis.register_script(_RENEW)
        self.wave_started_script = redis.register_script(_WAVE_STARTED)
        self._update = redis.register_script(_UPDATE)
        self._connected = redis.register_script(_CONNECTED)

    async def event(self, call_id: str, type_: str, **fields: Any) -> None:
        await self.redis.xadd(EVENTS, event_body(call_id, type_, **fields),  # type: ignore[arg-type]
                              maxlen=EVENTS_MAXLEN, approximate=True)

    async def create(self, call: Call) -> None:
        """The call exists (the IVR answered); it is not waiting yet."""
        call.created_at = call.created_at or time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(call_key(call.id), mapping=call.to_hash())
            pipe.sadd(LIVE, call.id)
            if call.channel:
                pipe.set(channel_key(call.channel), call.id, ex=86400)
            pipe.xadd(EVENTS, {"type": "call_started", "call_id": call.id,
                               "at": f"{call.created_at:.3f}", "source": call.source.value},
                      maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()

    async def update(self, call_id: str, **fields: Any) -> bool:
        """Set fields of an existing call; False (and nothing written) when it is gone."""
        flat: list[str] = []
        for k, v in fields.items():
            flat += [k, "" if v is None else ("1" if v is True else "0" if v is False else str(v))]
        if not flat:
            return True
        return bool(await self._update(keys=[call_key(call_id)], args=flat))

    async def enqueue(self, call: Call) -> None:
        """Into the waiting room's queue, ordered by (priority, arrival)."""
        now = time.time()
        call.state = State.WAITING
        call.queued_at = now
        score = queue_score(call.priority, call.created_at or now)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(call_key(call.id), mapping={**call.to_hash(), "queue_score": str(score)})
            pipe.zadd(QUEUE, {call.id: score})
            pipe.xadd(EVENTS, {"type": "queued", "call_id": call.id, "at": f"{now:.3f}",
                               "source": call.source.value, "language": call.language,
                               "neighborhood": call.neighborhood or "",
                               "priority": str(call.priority)},
                      maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()

    async def get(self, call_id: str) -> Call | None:
        data = await self.redis.hgetall(call_key(call_id))
        if not data:
            return None
        return Call.from_hash({k.decode(): v.decode() for k, v in data.items()})

    async def field(self, call_id: str, name: str) -> str | None:
        value = await self.redis.hget(call_key(call_id), name)
        return value.decode() if value is not None else None

    async def waiting(self) -> list[str]:
        return [m.decode() for m in await self.redis.zrange(QUEUE, 0, -1)]

    async def claim_next(self, owner: str, lease_s: float) -> str | None:
        """Atomically take the most urgent waiting call, or None."""
        got = await self.claim(owner, lease_s, 1)
        return got[0][0] if got else None

    async def claim(self, owner: str, lease_s: float,
                    count: int) -> list[tuple[str, dict[str, str]]]:
        """Atomically take up to ``count`` of the most urgent waiting calls, in queue order,
        each with its hash as taken (a burst of callers costs a round trip per batch, not
        two per call)."""
        now = time.time()
        got = await self._claim(keys=[QUEUE, CLAIMED, EVENTS],
                                args=[PREFIX, owner, f"{now + lease_s:.3f}", f"{now:.3f}",
                                      str(max(1, count))])
        out = []
        for call_id, flat in zip(got[::2], got[1::2], strict=True) if got else ():
            fields = [v.decode() for v in flat]
            out.append((call_id.decode(), dict(zip(fields[::2], fields[1::2], strict=True))))
        return out

    async def renew_if_owner(self, call_id: str, owner: str, lease_s: float) -> bool:
        """Renew the lease if ``owner`` still holds the call (one round trip); False when
        another dispatcher does now."""
        return bool(await self._renew(keys=[call_key(call_id), CLAIMED],
                                      args=[owner, f"{time.time() + lease_s:.3f}", call_id]))

    async def renew_and_read(self, call_id: str, owner: str, lease_s: float,
                             also: str | None = None
                             ) -> tuple[bool, dict[str, str], dict[str, str]]:
        """:meth:`renew_if_owner`, the call's hash and (``also``) another hash of it, in one
        round trip: (still ours, call, other)."""
        def reads(pipe: Any) -> None:
            pipe.hgetall(call_key(call_id))
            if also:
                pipe.hgetall(also)

        got = await evalsha_many(self.redis, [
            (self._renew, [call_key(call_id), CLAIMED],
             [owner, f"{time.time() + lease_s:.3f}", call_id])], also=reads)
        other = got[2] if also else {}
        return (bool(got[0]), {k.decode(): v.decode() for k, v in got[1].items()},
                {k.decode(): v.decode() for k, v in other.items()})

    async def requeue_expired(self) -> list[str]:
        now = time.time()
        got = await self._requeue(keys=[CLAIMED, QUEUE, EVENTS],
                                  args=[PREFIX, f"{now:.3f}", f"{now:.3f}"])
        return [g.decode() for g in got]

    async def end(self, call_id: str, state: State, step: str, event: str,
                  reason: str = "") -> bool:
        """Take the call out of queue and leases and mark it ended; False if it already was.
        ``step`` "" records where the caller was (the hash's ``step``)."""
        done = await self._end(keys=[QUEUE, CLAIMED, EVENTS, LIVE],
                               args=[PREFIX, call_id, state.value, step, f"{time.time():.3f}",
                                     event, reason])
        return bool(done)

    async def abandon(self, call_id: str, step: str) -> bool:
        """The caller hung up at ``step``: nothing of the call may stay waiting."""
        return await self.end(call_id, State.ABANDONED, step, "caller_hung_up")

    async def to_fallback(self, call_id: str, reason: str) -> bool:
        """The dialplan's ring group has (or will have) the caller: no one else rings for it.
        The record keeps the caller's own step; ``reason`` says why (never a step name)."""
        return await self.end(call_id, State.FALLBACK, "", "fallback", reason)

    async def live(self) -> list[str]:
        return [m.decode() for m in await self.redis.smembers(LIVE)]

    async def connected(self, call_id: str, at: float, fields: dict[str, str],
                        event: dict[str, str] | None = None) -> bool:
        """The caller is with a person now: ``connected_at``, ``fields`` and ``event``, all
        or nothing, and only if nobody noted it before (False then)."""
        flat = [x for kv in fields.items() for x in kv]
        ev = [x for kv in (event or {}).items() for x in kv]
        got = await evalsha_many(self.redis, [(self._connected, [call_key(call_id), EVENTS],
                                               [f"{at:.3f}", str(len(fields)), *flat, *ev])])
        return bool(got[0])

    async def call_on_channel(self, channel: str) -> str | None:
        value = await self.redis.get(channel_key(channel))
        return value.decode() if value else None

    async def read(self, call_id: str, also: str | None = None
                   ) -> tuple[dict[str, str], dict[str, str]]:
        """The call's hash, decoded (empty: no such call), and with ``also`` that hash too
        (the call's offers, say), in one round trip (with the other reads made now: the
        client joins one loop turn's requests)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(call_key(call_id))
            if also:
                pipe.hgetall(also)
            got = await pipe.execute()
        data = {k.decode(): v.decode() for k, v in got[0].items()}
        return data, ({k.decode(): v.decode() for k, v in got[1].items()} if also else {})
