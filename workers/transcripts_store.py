"""Where transcription outcomes are written: the live call hash in Redis and the event stream.

Kept to a few functions so the SQL call record can be written from here later without
touching the jobs. Keys follow crisisline/stores/calls.py (``pr:call:<id>``, ``pr:events``);
they're repeated rather than imported because that store is async and these jobs are not
(the offers store's key functions are plain and imported where needed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from redis import Redis

PREFIX = "pr:"
EVENTS = PREFIX + "events"

PENDING = "pending"
DONE = "done"
EMPTY = "empty"
FAILED = "failed"
NO_MODEL = "no_model"
SKIPPED_ENDED = "skipped_ended"
STATUSES = (PENDING, DONE, EMPTY, FAILED, NO_MODEL, SKIPPED_ENDED)
_EVENT_FOR = {DONE: "transcript_ready", EMPTY: "transcript_ready",
              FAILED: "transcript_failed", NO_MODEL: "transcript_failed"}

# Personal data a call hash may hold, cleared by retention.
PERSONAL_FIELDS = ("transcript", "caller_number", "callback_number", "note")
ENDED_STATES = frozenset({"ended", "abandoned", "fallback"})
# States after which nothing more happens to a call in Redis (SQL keeps its record): a
# callback request that failed, or was cancelled after its caller left, ends its call too.
FINISHED_STATES = ENDED_STATES | {"callback", "callback_failed", "cancelled"}

# Write only into a call that exists (never resurrect a purged or unknown call as a stray
# hash), and write the outcome and its event together.
# KEYS: call hash, events; ARGV: call_id, now, event type ('' = none), status, field, value...
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = {'transcript_status', ARGV[4], 'transcript_at', ARGV[2]}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'type', ARGV[3],
             'call_id', ARGV[1], 'at', ARGV[2], 'status', ARGV[4])
end
return 1
"""


def call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def call_state(r: Redis, call_id: str) -> str | None:
    """The call's state, or None when there is no such call (unknown or already purged)."""
    if not r.exists(call_key(call_id)):
        return None
    raw = r.hget(call_key(call_id), "state")
    return raw.decode() if isinstance(raw, bytes) else (raw or "")


def record(r: Redis, call_id: str, status: str, **fields: Any) -> bool:
    """Set ``transcript_status`` (and extra ``transcript*`` fields) on the call; add its event.

    False when the call doesn't exist, in which case nothing is written.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown transcript status {status!r}")
    flat: list[str] = []
    for key, value in fields.items():
        flat += [key, "" if value is None else str(value)]
    script = r.register_script(_RECORD)
    done = script(keys=[call_key(call_id), EVENTS],
                  args=[call_id, f"{time.time():.3f}", _EVENT_FOR.get(status, ""), status, *flat])
    return bool(done)


def field(r: Redis, call_id: str, name: str) -> str | None:
    raw = r.hget(call_key(call_id), name)
    return raw.decode() if isinstance(raw, bytes) else raw


def iter_call_ids(r: Redis) -> Iterator[str]:
    prefix = call_key("")
    for key in r.scan_iter(match=prefix + "*", count=500):
        name = key.decode() if isinstance(key, bytes) else key
        yield name[len(prefix):]


def call_time(r: Redis, call_id: str) -> float | None:
    """When the call began (created_at, else the earliest other time it carries)."""
    for name in ("created_at", "queued_at", "ended_at", "transcript_at"):
        value = field(r, call_id, name)
        if value:
            try:
                return float(value)
            except ValueError:
                continue
    return None


def purge_personal(r: Redis, call_id: str, now: float) -> bool:
    """Remove the transcript, the caller's and callback numbers and the transfer note from
    one call, and a text conversation's messages (what the SQL purge clears too); True if
    there was any."""
    from crisisline.stores.texts import messages_key

    key = call_key(call_id)
    removed = r.hdel(key, *PERSONAL_FIELDS) + r.delete(messages_key(call_id))
    if removed:
        r.hset(key, "purged_at", f"{now:.3f}")
    return bool(removed)


def forget_callback_number(r: Redis, call_id: str) -> bool:
    """A callback request that is over, on a call that has ended: its number goes now, not
    after the retention period (the recorder does this as it goes; this catches any it
    missed). True if there was one to remove."""
    state, cb_state, number = (
        v.decode() if isinstance(v, bytes) else (v or "")
        for v in r.hmget(call_key(call_id), ["state", "cb_state", "callback_number"]))
    if not number or state not in FINISHED_STATES or cb_state != "done":
        return False  # (at the fallback desk a request stays open: pending if they leave)
    return bool(r.hdel(call_key(call_id), "callback_number"))


def forget_call(r: Redis, call_id: str) -> bool:
    """Delete a finished call's keys from Redis (hash, offers, legs, offered sets): its
    record lives on in SQL. A call not finished is left alone; True if it was deleted."""
    state = field(r, call_id, "state")
    if state not in FINISHED_STATES:
        return False
    from crisisline.stores.offers import legs_key, offered_keys_pattern, offers_key
    from crisisline.stores.texts import links_key, messages_key

    keys = [call_key(call_id), offers_key(call_id), legs_key(call_id), messages_key(call_id),
            links_key(call_id), *r.scan_iter(match=offered_keys_pattern(call_id), count=500)]
    r.delete(*keys)
    return True
