"""Text conversations in Redis: their messages, who is texting, one-time links, sessions.

A conversation IS a call (crisisline.call.Call, source ``text``, no Asterisk channel): it is
created, queued and ended with CallStore, so it shares the queue, the event stream, the
panel's live queue and the recorder's SQL records with calls, and OfferStore's ring /
accept / pass scripts decide who has it. This module adds what only texts have.

Keys (prefix ``pr:text:``):
  msgs:<call>      stream  the conversation: sender (texter|responder|supervisor|line),
                           author, body, at. Live while the conversation is; copied to SQL
                           when it ends (then it expires)
  live             set     live conversations (the chat app's upkeep looks only at these)
  from:<sha>       str     an SMS texter's current conversation, by their number's hash
  last:<sha>       str     their latest one, ended or not (DELETE erases it), for as long as
                           conversations are kept
  chat:<sha>       str     a chat page's conversation, by the hash of the key only the
                           page holds (in memory: nothing is stored in the browser)
  sid:<MessageSid> str     a provider message already taken (providers retry)
  optout:<sha>     str     a number that sent STOP: nothing is sent to it until START
  link:<token>     hash    a responder's one-time link: call_id, rid, status open|used|closed
  links:<call>     hash    rid -> their link's token (to close it when the offer ends)
  desk             hash    token -> "call rid": offers to desk phones, shown on the panel
  session:<sid>    hash    a responder's page after the link was used: call_id, rid, csrf
  erased:<call>    str     the texter erased it (DELETE): nothing of it may be written again
  rate:<k>:<who>   str     per-minute counters
  notify           pub/sub a conversation's id whenever something was written to it

Events on ``pr:events`` never carry a message's words (``text_message`` says who wrote).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from redis.asyncio import Redis

from crisisline.call import Call, State
from crisisline.stores.calls import EVENTS, EVENTS_MAXLEN, PREFIX, CallStore, call_key
from crisisline.stores.offers import OfferStore
from crisisline.textflow import TextState

TEXT = PREFIX + "text:"
LIVE_TEXTS = TEXT + "live"
NOTIFY = TEXT + "notify"
DESK = TEXT + "desk"
MESSAGES_MAXLEN = 5000
ARCHIVED_TTL_S = 600  # a finished conversation's messages, once in SQL: the page's last poll
SESSION_FIELDS = ("call_id", "rid", "csrf")
READ_FIELDS = ("state", "accepted_by", "callback_number")
# What a conversation's hash may hold that identifies the texter (erased by DELETE).
PERSONAL = ("caller_number", "callback_number", "zip_code", "note", "transcript")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def messages_key(call_id: str) -> str:
    return f"{TEXT}msgs:{call_id}"


def from_key(number: str) -> str:
    return f"{TEXT}from:{digest(number)}"


def last_key(number: str) -> str:
    return f"{TEXT}last:{digest(number)}"


def chat_key(key: str) -> str:
    return f"{TEXT}chat:{digest(key)}"


def sid_key(sid: str) -> str:
    return f"{TEXT}sid:{sid}"


def optout_key(number: str) -> str:
    return f"{TEXT}optout:{digest(number)}"


def link_key(token: str) -> str:
    return f"{TEXT}link:{token}"


def links_key(call_id: str) -> str:
    return f"{TEXT}links:{call_id}"


def session_key(sid: str) -> str:
    return f"{TEXT}session:{sid}"


def rate_key(kind: str, who: str) -> str:
    return f"{TEXT}rate:{kind}:{digest(who)[:32]}"


def erased_key(call_id: str) -> str:
    return f"{TEXT}erased:{call_id}"


# A message goes in only while the conversation exists and was not erased; the event says
# who wrote, never what. KEYS: call hash, erased, messages, events
# ARGV: sender, author, body, now, call id, notify channel, maxlen
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'sender', ARGV[1],
                      'author', ARGV[2], 'body', ARGV[3], 'at', ARGV[4])
redis.call('HSET', KEYS[1], 'x_last_message_at', ARGV[4])
if ARGV[1] == 'texter' then redis.call('HSET', KEYS[1], 'x_last_texter_at', ARGV[4]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '200000', '*', 'type', 'text_message',
           'call_id', ARGV[5], 'at', ARGV[4], 'sender', ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return id
"""

# Use a one-time link: only an open one, once. KEYS: link; returns {call_id, rid} or false
_USE = """
local v = redis.call('HMGET', KEYS[1], 'call_id', 'rid', 'status')
if not v[1] or v[3] ~= 'open' then return false end
redis.call('HSET', KEYS[1], 'status', 'used')
redis.call('HDEL', ARGV[1], ARGV[2])
return {v[1], v[2]}
"""

# Close a responder's link to a conversation (their offer ended): it then says why.
# KEYS: links hash, desk hash; ARGV: rid, link key prefix
_CLOSE = """
local token = redis.call('HGET', KEYS[1], ARGV[1])
if not token then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], token)
local key = ARGV[2] .. token
if redis.call('HGET', key, 'status') == 'open' then redis.call('HSET', key, 'status', 'closed') end
return 1
"""


def text_state(data: dict[str, str]) -> TextState:
    """A conversation's progress, from its hash."""
    return TextState(stage=data.get("x_stage") or "new", language=data.get("language") or None,
                     zip_code=data.get("zip_code") or None,
                     neighborhood=data.get("neighborhood") or None,
                     defaulted=tuple(d for d in (data.get("x_defaulted") or "").split(",") if d))


def state_fields(state: TextState) -> dict[str, str]:
    out = {"x_stage": state.stage, "zip_code": state.zip_code or "",
           "neighborhood": state.neighborhood or "", "x_defaulted": ",".join(state.defaulted)}
    if state.language:  # a call always has a language: the default until one is chosen
        out["language"] = state.language
    return out


class TextStore:
    """Async adapter over Redis; one per process."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.calls = CallStore(redis)
        self.offers = OfferStore(redis)
        self._add = redis.register_script(_ADD)
        self._use = redis.register_script(_USE)
        self._close = redis.register_script(_CLOSE)

    async def hash(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(call_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    # ---- conversations -------------------------------------------------------------------
    async def create(self, call: Call, *, number: str | None = None, key: str | None = None,
                     ttl_s: int = 86400, remember_s: int = 30 * 86400) -> None:
        """A new conversation (not queued yet), found again by the texter's number (SMS) or
        by the key their chat page holds."""
        await self.calls.create(call)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(LIVE_TEXTS, call.id)
            if number:
                pipe.set(from_key(number), call.id, ex=ttl_s)
                pipe.set(last_key(number), call.id, ex=remember_s)
            if key:
                pipe.set(chat_key(key), call.id, ex=ttl_s)
            await pipe.execute()

    async def by_number(self, number: str) -> str | None:
        value = await self.redis.get(from_key(number))
        return value.decode() if value else None

    async def last_of(self, number: str) -> str | None:
        """The number's latest conversation, even ended (until the retention period)."""
        value = await self.redis.get(last_key(number))
        return value.decode() if value else None

    async def by_key(self, key: str) -> str | None:
        value = await self.redis.get(chat_key(key)) if key else None
        return value.decode() if value else None

    async def touch(self, *, number: str | None = None, key: str | None = None,
                    ttl_s: int = 86400) -> None:
        if number:
            await self.redis.expire(from_key(number), ttl_s)
        if key:
            await self.redis.expire(chat_key(key), ttl_s)

    async def save_state(self, call_id: str, state: TextState) -> bool:
        return await self.calls.update(call_id, **state_fields(state))

    async def queue(self, call_id: str) -> bool:
        """Into the queue beside calls (priority of source "text"); False when it is gone or
        was queued already."""
        data = await self.hash(call_id)
        if not data or data.get("queued_at") or data.get("state") != State.IVR.value:
            return False
        call = Call.from_hash(data)
        await self.calls.enqueue(call)
        # The "IVR" of a text is done once it is queued: the dispatcher's honest updates apply.
        await self.calls.update(call_id, ivr_done="1", step="waiting")
        return True

    async def end(self, call_id: str, reason: str) -> bool:
        """End it as what it was (with a person: ended; before one: abandoned); close every
        link, free the responder after their wrap-up elsewhere (OfferStore.end_call)."""
        data = await self.hash(call_id)
        if not data:
            return False
        if data.get("accepted_by"):
            done = await self.calls.end(call_id, State.ENDED, "bridged", "call_ended", reason)
        else:
            done = await self.calls.end(call_id, State.ABANDONED, "", "caller_hung_up", reason)
        await self.close_links(call_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(LIVE_TEXTS, call_id)
            if data.get("caller_number"):
                # The number's next text starts a new conversation (if it still maps here).
                pipe.delete(from_key(data["caller_number"]))
            pipe.publish(NOTIFY, call_id)
            await pipe.execute()
        return done

    async def erase(self, call_id: str, retention_days: int) -> None:
        """DELETE: the conversation's words, number and ZIP code leave Redis now; a marker
        stops anything of it from being written again (the recorder checks it too)."""
        data = await self.hash(call_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(erased_key(call_id), "1", ex=max(1, retention_days) * 86400)
            pipe.delete(messages_key(call_id))
            pipe.hdel(call_key(call_id), *PERSONAL)
            if data.get("caller_number"):
                pipe.delete(from_key(data["caller_number"]), last_key(data["caller_number"]))
            pipe.srem(LIVE_TEXTS, call_id)
            pipe.publish(NOTIFY, call_id)
            await pipe.execute()

    async def erased(self, call_id: str) -> bool:
        return bool(await self.redis.exists(erased_key(call_id)))

    async def live(self) -> list[str]:
        return [m.decode() for m in await self.redis.smembers(LIVE_TEXTS)]

    # ---- messages ------------------------------------------------------------------------
    async def add(self, call_id: str, sender: str, body: str, author: str = "") -> str | None:
        """Append a message; its stream id, or None when the conversation is gone/erased."""
        got = await self._add(
            keys=[call_key(call_id), erased_key(call_id), messages_key(call_id), EVENTS],
            args=[sender, author, body, f"{time.time():.3f}", call_id, NOTIFY, str(MESSAGES_MAXLEN)])
        return got.decode() if got else None

    async def messages(self, call_id: str, after: str = "",
                       count: int = 500) -> list[tuple[str, dict[str, str]]]:
        start = f"({after}" if after else "-"
        rows = await self.redis.xrange(messages_key(call_id), min=start, count=count)
        return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in rows]

    async def read(self, call_id: str, after: str = "") -> tuple[list[tuple[str, dict[str, str]]],
                                                                 dict[str, str]]:
        """A waiting page's look, in one round trip: the messages after ``after`` and the
        conversation's state, who has it, and whether the texter asked for a call."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(messages_key(call_id), min=f"({after}" if after else "-", count=500)
            pipe.hmget(call_key(call_id), READ_FIELDS)
            rows, values = await pipe.execute()
        messages = [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in rows]
        return messages, {k: v.decode() for k, v in zip(READ_FIELDS, values, strict=True) if v}

    async def archived(self, call_id: str) -> None:
        """Its messages are in SQL now: Redis keeps them only for a last poll of the page."""
        await self.redis.expire(messages_key(call_id), ARCHIVED_TTL_S)

    # ---- SMS bookkeeping -------------------------------------------------------------------
    async def first_time(self, sid: str, ttl_s: int = 2 * 86400) -> bool:
        """True the first time a provider's MessageSid is seen (providers retry webhooks)."""
        return bool(await self.redis.set(sid_key(sid), "1", nx=True, ex=ttl_s))

    async def opted_out(self, number: str) -> bool:
        return bool(await self.redis.exists(optout_key(number)))

    async def opt_out(self, number: str) -> None:
        await self.redis.set(optout_key(number), f"{time.time():.0f}")

    async def opt_in(self, number: str) -> None:
        await self.redis.delete(optout_key(number))

    async def hits(self, kind: str, who: str, window_s: int = 60) -> int:
        """Count one more request of ``who``; how many in this window."""
        key = rate_key(kind, who)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def limited(self, kind: str, who: str, limit: int, window_s: int = 60) -> bool:
        """Count one more; True when ``who`` is over ``limit`` per window."""
        return await self.hits(kind, who, window_s) > limit

    # ---- responders' one-time links --------------------------------------------------------
    async def new_link(self, call_id: str, rid: str, lifetime_s: int, desk: bool = False) -> str:
        token = secrets.token_urlsafe(24)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(link_key(token), mapping={"call_id": call_id, "rid": rid, "status": "open",
                                                "at": f"{time.time():.3f}"})
            pipe.expire(link_key(token), lifetime_s)
            pipe.hset(links_key(call_id), rid, token)
            pipe.expire(links_key(call_id), 86400)
            if desk:
                pipe.hset(DESK, token, f"{call_id} {rid}")
            await pipe.execute()
        return token

    async def link(self, token: str) -> dict[str, str]:
        """What a link is about (call_id, rid, status), without using it; {} when unknown."""
        if not token or len(token) > 64:
            return {}
        raw = await self.redis.hgetall(link_key(token))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def use_link(self, token: str) -> tuple[str, str] | None:
        """Use a link (once): (call_id, rid), or None when it is unknown, used or closed."""
        info = await self.link(token)
        if not info:
            return None
        got = await self._use(keys=[link_key(token)], args=[DESK, token])
        return (got[0].decode(), got[1].decode()) if got else None

    async def close_link(self, call_id: str, rid: str) -> bool:
        """The responder's offer ended: their link no longer opens it (it says why)."""
        return bool(await self._close(keys=[links_key(call_id), DESK], args=[rid, link_key("")]))

    async def close_links(self, call_id: str) -> None:
        for rid in [r.decode() for r in await self.redis.hkeys(links_key(call_id))]:
            await self.close_link(call_id, rid)

    async def desk_offers(self) -> list[tuple[str, str, str]]:
        """(token, call_id, rid) of open offers to desk phones."""
        out = []
        for token, value in (await self.redis.hgetall(DESK)).items():
            call_id, _, rid = value.decode().partition(" ")
            out.append((token.decode(), call_id, rid))
        return out

    # ---- responders' pages -----------------------------------------------------------------
    async def new_session(self, call_id: str, rid: str, ttl_s: int) -> str:
        sid = secrets.token_urlsafe(32)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(session_key(sid), mapping={"call_id": call_id, "rid": rid,
                                                 "csrf": secrets.token_urlsafe(24)})
            pipe.expire(session_key(sid), ttl_s)
            await pipe.execute()
        return sid

    async def session(self, sid: str) -> dict[str, str]:
        if not sid or len(sid) > 64:
            return {}
        raw = await self.redis.hgetall(session_key(sid))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def extend_session(self, sid: str, ttl_s: int) -> None:
        await self.redis.expire(session_key(sid), ttl_s)

    async def end_session(self, sid: str) -> None:
        await self.redis.delete(session_key(sid))


__all__ = ["DESK", "EVENTS", "EVENTS_MAXLEN", "LIVE_TEXTS", "NOTIFY", "TextStore", "text_state"]
