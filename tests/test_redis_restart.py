"""Redis restarted without its data (as docker-compose.yml runs it, with no persistence)
while callers are on the line: nothing may be forgotten.

A caller waiting in their room is rebuilt from Asterisk (the channel's own variables) and
reached; a caller arriving right after the restart gets through the IVR (no stale pooled
connection sends them to the fallback group); the recorder makes its consumer group again
and keeps writing call records. A real redis-server of the test's own, killed and started
again empty on the same port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from crisisline import db
from crisisline.records.schema import CallRecord
from tests.dispatch_helpers import running_system, team_roster

ROSTER = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en,es", False))


class RedisServer:
    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port",
             str(self.port), "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def until(check, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return bool(check())


async def test_redis_comes_back_empty_and_nobody_on_the_line_is_forgotten(live_settings,
                                                                          own_redis):
    import dataclasses

    settings = dataclasses.replace(live_settings, redis_url=own_redis.url)
    async with running_system(settings, ROSTER, wave_timeout_s=1.0, max_wait_s=120,
                              default_phone="never") as system:
        system.reconcile_s = 1.0  # applies to the dispatcher started below
        for d in list(system.dispatchers):
            await system.kill(d)
        await system.start_dispatcher("d2")
        waiting = await system.call("2 02121 2")
        waiting_id = await system.wait_call_id(waiting, timeout=30)
        assert await until(lambda: system.db.call(waiting_id).get("ivr_done") == "1", 30)

        own_redis.kill()
        own_redis.start()  # empty: no persistence
        assert system.db.call(waiting_id) == {}

        # The waiting caller is rebuilt from what Asterisk has, and queued again...
        assert await until(lambda: system.db.call(waiting_id).get("restored") == "1", 20)
        restored = system.db.call(waiting_id)
        assert (restored["language"], restored["neighborhood"], restored["source"]) == (
            "es", "Dorchester", "direct")
        # ...and reached: their phones answer now.
        system.phones.set_default("answer:1")
        assert await until(lambda: system.db.call(waiting_id).get("connected_at"), 30)

        # A caller right after the restart gets through the IVR to a person.
        after = await system.call("1 02121 2")
        after_id = await system.wait_call_id(after, timeout=30)
        assert not after.trace.fallback_dialed
        assert await until(lambda: system.db.call(after_id).get("connected_at"), 30)
        await system.pbx.hangup(after.name)
        await system.pbx.hangup(waiting.name)

        # The recorder made its consumer group again and wrote both records.
        def records() -> dict[str, str]:
            with Session(db.engine_for(system.settings)) as session:
                rows = session.query(CallRecord).filter(
                    CallRecord.id.in_([waiting_id, after_id])).all()
                return {r.id: r.outcome for r in rows}
        assert await until(lambda: records() == {waiting_id: "bridged", after_id: "bridged"}, 20)
