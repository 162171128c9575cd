"""The recorder writes what the event stream says to SQL: every process is its own consumer,
so events a killed one took and never acknowledged are taken over by a live one (found by
bench/soak.py: a dispatcher killed mid-batch left calls with no record). Real Redis, real
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Call, Source, State
from crisisline.records.schema import CallRecord
from crisisline.stores import async_redis
from crisisline.stores.calls import EVENTS, CallStore
from workers.dispatcher import recorder as recorder_module
from workers.dispatcher.recorder import GROUP, Recorder


async def test_events_a_killed_recorder_took_are_written_by_another(
        sql_settings: config.Settings, monkeypatch) -> None:
    db.upgrade(sql_settings)
    engine = db.engine_for(sql_settings)
    redis = async_redis(sql_settings.effective_redis_url)
    calls = CallStore(redis)
    stop = asyncio.Event()
    try:
        live = Recorder(redis, engine, "recorder-live")
        await live.ensure_group()
        call = Call("c-orphan", Source.DIRECT, "es", 2, created_at=time.time() - 60)
        await calls.create(call)
        await calls.enqueue(call)
        await calls.end(call.id, State.ABANDONED, "waiting", "caller_hung_up", "hung_up")
        # The recorder that read them died before writing them (nothing acknowledged).
        taken = await redis.xreadgroup(GROUP, "recorder-dead", {EVENTS: ">"}, count=100)
        assert taken and taken[0][1]
        # A live recorder takes them over once idle long enough (shortened here).
        monkeypatch.setattr(recorder_module, "ORPHAN_IDLE_S", 0.05)
        monkeypatch.setattr(recorder_module, "ORPHAN_EVERY_S", 0.1)
        task = asyncio.create_task(live.run(stop))
        for _ in range(100):
            with Session(engine) as session:
                record = session.get(CallRecord, call.id)
                if record is not None and record.outcome == "abandoned":
                    break
            await asyncio.sleep(0.1)
        assert record is not None and record.outcome == "abandoned"
        for _ in range(50):
            if (await redis.xpending(EVENTS, GROUP))["pending"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (await redis.xpending(EVENTS, GROUP))["pending"] == 0
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        await redis.aclose()
        engine.dispose()
