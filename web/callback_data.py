"""Callback requests as the panel sees them: the line's own state in Redis (the call's ``cb_*``
fields, crisisline/stores/callbacks.py), and SQL rows for what Redis no longer holds.

Nothing here returns a number except :func:`number`, which a view calls only after the audit
row is committed. Reads are field by field (HMGET with a fixed list that leaves the number
out), as in web/live.py.

Start now and Cancel run the callback store's own scripts (atomic in Redis) on a short-lived
loop, as web/texts.py does for the text line: the supervisor gets the true answer at once (a
cancel is refused while the line is dialling the caller, by the same script that would
otherwise race it), and neither needs Asterisk. Ringing a responder does need Asterisk: that
goes to the dispatcher as a command (web/callbacks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from crisisline import callbacks as cb
from crisisline.config import Settings
from crisisline.records import callbacks as sql_callbacks
from crisisline.stores import async_client
from crisisline.stores.callbacks import LATER, CallbackStore
from crisisline.stores.calls import CLAIMED, LIVE, QUEUE, call_key

WAITING = ("waiting", "dispatching")
FIELDS = ("state", "language", "neighborhood", "queue_score", "cb_state", "cb_requested_at",
          "cb_safe_here", "cb_message", "cb_attempts", "cb_result", "cb_calling_by",
          "cb_outcome", "cb_message_left", "cb_time_to_human_s")
SAFE_WORDS = {"1": "safe to call back at the number they called from",
              "0": "gave another number", "": "number withheld"}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _float(value: str) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


@dataclass
class Request:
    """One callback request as the line holds it now (never its number)."""

    call_id: str
    cb_state: str            # requested | pending | calling | done
    call_state: str
    language: str
    neighborhood: str
    requested_at: float
    attempts: int
    safe_here: str           # "1" | "0" | "" (withheld)
    message_ok: bool
    result: str              # the last attempt's
    outcome: str             # when done
    calling_by: str
    next_at: float | None = None  # waiting between attempts: when the next try is due
    place: int | None = None      # 1 = the next one a free responder gets
    queue_score: float = 0.0

    @property
    def open(self) -> bool:
        return self.cb_state in sql_callbacks.OPEN_STATES

    @property
    def safety_words(self) -> str:
        return SAFE_WORDS.get(self.safe_here, SAFE_WORDS[""])

    @property
    def message_words(self) -> str:
        return "a message may be left" if self.message_ok else "no message"

    @property
    def result_words(self) -> str:
        return sql_callbacks.RESULT_WORDS.get(self.result, self.result)

    def state_words(self, names: dict[str, str]) -> str:
        if self.cb_state == cb.REQUESTED:
            if self.call_state == "fallback":
                return "the caller is with the fallback desk"
            return "the caller is still on the line"
        if self.cb_state == cb.PENDING:
            if self.next_at is not None:
                return "waiting for the next try"
            return "the caller left: waiting for a responder"
        if self.cb_state == cb.CALLING:
            who = names.get(self.calling_by, self.calling_by) or "a responder"
            return f"calling now: {who} first, then the caller"
        return sql_callbacks.STATUS_WORDS.get(sql_callbacks.status_from(
            {"cb_state": self.cb_state, "cb_outcome": self.outcome}) or "", self.outcome)


def _request(call_id: str, values: list[bytes | None]) -> Request | None:
    data = dict(zip(FIELDS, (_text(v) for v in values), strict=True))
    if not data["cb_state"]:
        return None
    try:
        attempts = int(data["cb_attempts"] or 0)
    except ValueError:
        attempts = 0
    return Request(call_id=call_id, cb_state=data["cb_state"], call_state=data["state"],
                   language=data["language"], neighborhood=data["neighborhood"],
                   requested_at=_float(data["cb_requested_at"]), attempts=attempts,
                   safe_here=data["cb_safe_here"], message_ok=data["cb_message"] == "1",
                   result=data["cb_result"], outcome=data["cb_outcome"],
                   calling_by=data["cb_calling_by"], queue_score=_float(data["queue_score"]))


def _read(client: redis.Redis, ids: Iterable[str]) -> list[Request]:
    ids = list(ids)
    with client.pipeline(transaction=False) as pipe:
        for call_id in ids:
            pipe.hmget(call_key(call_id), FIELDS)
        for call_id in ids:
            pipe.zscore(LATER, call_id)
        got = pipe.execute()
    out = []
    for call_id, values, later in zip(ids, got[:len(ids)], got[len(ids):], strict=True):
        found = _request(call_id, values)
        if found is not None:
            found.next_at = later if later is not None and found.cb_state == cb.PENDING else None
            out.append(found)
    return out


def waiting_scores(client: redis.Redis) -> dict[str, float]:
    """Everything waiting for a responder, by queue_score (priority, then arrival): the
    queue, calls a dispatcher is ringing for, and requests between attempts (which go back
    at their own place)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrange(QUEUE, 0, -1, withscores=True)
        pipe.zrange(CLAIMED, 0, -1)
        pipe.zrange(LATER, 0, -1)
        queued, claimed, later = pipe.execute()
    scores = {_text(i): float(s) for i, s in queued}
    others = [i for i in dict.fromkeys(_text(i) for i in [*claimed, *later]) if i not in scores]
    with client.pipeline(transaction=False) as pipe:
        for call_id in others:
            pipe.hmget(call_key(call_id), ("state", "queue_score", "cb_state"))
        rows = pipe.execute()
    for call_id, (state, score, cb_state) in zip(others, rows, strict=True):
        if _text(state) in WAITING and _text(cb_state) != cb.CALLING and score is not None:
            scores[call_id] = _float(_text(score))
    return scores


def open_requests(client: redis.Redis) -> list[Request]:
    """Every request the line is working (requested, pending, calling), in queue order,
    each with its place among everything waiting (None while it is being called)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(LIVE)
        pipe.zrange(LATER, 0, -1)
        live, later = pipe.execute()
    ids = list(dict.fromkeys(_text(i) for i in [*later, *live]))
    with client.pipeline(transaction=False) as pipe:
        for call_id in ids:
            pipe.hget(call_key(call_id), "cb_state")
        states = pipe.execute()
    wanted = [i for i, s in zip(ids, states, strict=True) if _text(s) in sql_callbacks.OPEN_STATES]
    found = _read(client, wanted)
    if not found:
        return []
    scores = waiting_scores(client)
    order = sorted(scores, key=lambda i: (scores[i], i))
    place = {call_id: n for n, call_id in enumerate(order, start=1)}
    for r in found:
        r.place = place.get(r.call_id) if r.cb_state != cb.CALLING else None
    return sorted(found, key=lambda r: (r.place is None, r.place or 0, r.queue_score, r.call_id))


def one(client: redis.Redis, call_id: str) -> Request | None:
    """The request on this call as the line holds it (any state), or None."""
    found = _read(client, [call_id])
    if not found:
        return None
    request = found[0]
    if request.open and request.cb_state != cb.CALLING:
        scores = waiting_scores(client)
        if call_id in scores:
            mine = (scores[call_id], call_id)
            request.place = 1 + sum(1 for i, s in scores.items() if (s, i) < mine)
    return request


def known(client: redis.Redis, ids: list[str]) -> set[str]:
    """Which of these calls Redis still holds a request for (any state)."""
    with client.pipeline(transaction=False) as pipe:
        for call_id in ids:
            pipe.hget(call_key(call_id), "cb_state")
        states = pipe.execute()
    return {i for i, s in zip(ids, states, strict=True) if _text(s)}


def number(client: redis.Redis, call_id: str) -> str:
    """The number to call back, from the line. Call only after the audit row is committed."""
    return _text(client.hget(call_key(call_id), "callback_number"))


# ---- actions (the callback store's scripts) -----------------------------------------------

def _run(settings: Settings, action: str, call_id: str, by: str = "", reason: str = "") -> bool:
    async def go() -> bool:
        client = async_client(settings.effective_redis_url, socket_timeout=10)
        try:
            store = CallbackStore(client)
            if action == "start_now":
                return await store.start_now(call_id)
            key = call_key(call_id)
            held = _text(await client.hget(key, "callback_number"))
            if not await store.cancel(call_id, by, held):
                return False
            # For the record (the recorder copies it to the request's row): no caller details.
            await client.hset(key, "cb_cancel_reason", reason)
            return True
        finally:
            await client.aclose()

    return asyncio.run(go())


def start_now(settings: Settings, call_id: str) -> bool:
    """A request waiting for its next try goes back in the queue now, at its place."""
    return _run(settings, "start_now", call_id)


def cancel(settings: Settings, call_id: str, by: str, reason: str) -> bool:
    """Cancel a request (False while the line is dialling the caller, or once it is over)."""
    return _run(settings, "cancel", call_id, by=by, reason=reason)
