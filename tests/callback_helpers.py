"""Callback requests in every state, made through the real stores on the test Redis (what the
IVR, the whisper and the dispatcher call), and the recorder's pass over the event stream.
For the records, retention and panel tests; the end-to-end flows are tests/test_callbacks.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from crisisline import callbacks as cb
from crisisline.call import Call, Source, State
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import QUEUE, CallStore
from crisisline.stores.offers import OfferStore
from workers.dispatcher.recorder import Recorder

NUMBER = "+16175550142"


class Line:
    """The stores on one Redis connection (async: use inside ``async with``)."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.calls = CallStore(self.redis)
        self.offers = OfferStore(self.redis)
        self.callbacks = CallbackStore(self.redis)

    async def __aenter__(self) -> Line:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.redis.aclose()

    async def hash(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"pr:call:{call_id}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def waiting_call(self, call_id: str, created_at: float, priority: int = 2,
                           language: str = "es", neighborhood: str | None = "Dorchester") -> Call:
        call = Call(id=call_id, source=Source.DIRECT, language=language, priority=priority,
                    neighborhood=neighborhood, caller_number=NUMBER, created_at=created_at,
                    channel=f"PJSIP/trunk-{call_id}")
        await self.calls.create(call)
        await self.calls.enqueue(call)
        return call

    async def requested(self, call_id: str, created_at: float, number: str = NUMBER,
                        safe_here: bool | None = True, message_ok: bool = False,
                        **kw: Any) -> None:
        """The caller answered the safety questions and is still on the line."""
        await self.waiting_call(call_id, created_at, **kw)
        holder = await self.callbacks.request(call_id, cb.SafetyAnswers(number, safe_here,
                                                                        message_ok))
        assert holder == call_id

    async def pending(self, call_id: str, created_at: float, **kw: Any) -> None:
        """... and then hung up: the request is worked from the call's place."""
        await self.requested(call_id, created_at, **kw)
        assert await self.calls.end(call_id, State.ABANDONED, "", "caller_hung_up") is True

    async def calling(self, call_id: str, rid: str) -> int:
        """A responder took the pending request: the line is dialling the caller."""
        data = await self.hash(call_id)
        # As a dispatcher's claim leaves it: out of the queue, being rung for.
        await self.redis.zrem(QUEUE, call_id)
        await self.redis.hset(f"pr:call:{call_id}", "state", "dispatching")
        assert await self.offers.ring(call_id, rid, 1, int(data.get("cycle") or 0))
        assert await self.offers.accept(call_id, rid)
        attempt = await self.callbacks.start_attempt(call_id, rid)
        assert attempt > 0
        return attempt

    async def attempt_fails(self, call_id: str, rid: str, result: str = cb.NO_ANSWER,
                            attempts: int = 3, retry_s: float = 600.0) -> cb.Next:
        """One attempt, unanswered: the request waits ``retry_s`` (or fails at the last)."""
        attempt = await self.calling(call_id, rid)
        nxt = cb.after_attempt(result, attempt, attempts, retry_s, time.time())
        data = await self.hash(call_id)
        assert await self.callbacks.finish_attempt(call_id, attempt, result, nxt,
                                                   data.get("callback_number", ""))
        return nxt

    async def answered(self, call_id: str, rid: str) -> None:
        """The caller answered the callback and is in the room with the responder (what
        CallWatch writes when both are there)."""
        attempt = await self.calling(call_id, rid)
        data = await self.hash(call_id)
        assert await self.callbacks.finish_attempt(call_id, attempt, cb.BRIDGED,
                                                   cb.Next(cb.DONE, cb.BRIDGED),
                                                   data.get("callback_number", ""))
        now = time.time()
        await self.redis.hset(f"pr:call:{call_id}", mapping={
            "connected_at": f"{now:.3f}", "time_to_human_s": f"{now - float(data['created_at']):.3f}",
            "cb_time_to_human_s": "95.500"})
        await self.calls.event(call_id, "bridged", responder=rid, callback=1)


async def record(url: str, engine: Engine) -> None:
    """One pass of the recorder over what the stream holds that it hasn't read."""
    client = aioredis.Redis.from_url(url)
    try:
        recorder = Recorder(client, engine, "rec-test")
        await recorder.ensure_group()
        got = await client.xreadgroup("recorder", "rec-test", {"pr:events": ">"}, count=100_000)
        if got and got[0][1]:
            await recorder.handle(got[0][1])
    finally:
        await client.aclose()


async def replay(url: str, engine: Engine) -> None:
    """Every event again, as after a crash before the acknowledgement."""
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange("pr:events")
        await Recorder(client, engine, "rec-test").handle(entries)
    finally:
        await client.aclose()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
