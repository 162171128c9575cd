"""The call records are written by a process of their own, which the dispatcher starts
(workers/dispatcher/recording.py): it writes what the event stream says, is started again
if it dies, and never outlives the dispatcher, even one killed with -9. Real Redis, real
SQLite, real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Call, Source, State
from crisisline.records.schema import CallRecord
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from workers.dispatcher import recording

ROOT = Path(__file__).resolve().parent.parent
# Stands where `peoples-response dispatcher` does: starts its recorder, keeps it, prints its
# pid each time it starts one.
PARENT = """
import asyncio, sys
from workers.dispatcher import recording
recording.RESTART_S = 0.2
recording.PARENT_CHECK_S = 0.1
child = recording.RecorderChild()
started = child.start
def start():
    started()
    print(child.proc.pid, flush=True)
child.start = start
asyncio.run(child.keep(asyncio.Event()))
"""


def _env(settings: config.Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
    env.update(PR_VAR_DIR=settings.var_dir, PR_REDIS_URL=settings.effective_redis_url,
               PR_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    return env


def _next_pid(parent: subprocess.Popen) -> int:
    """The next recorder the parent started (its children print their banner to the same
    pipe)."""
    while True:
        line = parent.stdout.readline()
        assert line, "the parent stopped"
        if line.strip().isdigit():
            return int(line)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


async def _call_that_ended(settings: config.Settings, call_id: str) -> None:
    redis = async_redis(settings.effective_redis_url)
    try:
        calls = CallStore(redis)
        call = Call(call_id, Source.DIRECT, "es", 2, created_at=time.time() - 30)
        await calls.create(call)
        await calls.enqueue(call)
        await calls.end(call.id, State.ABANDONED, "waiting", "caller_hung_up", "hung_up")
    finally:
        await redis.aclose()


def _outcome(settings: config.Settings, call_id: str, wait_s: float = 20.0) -> str | None:
    engine = db.engine_for(settings)
    try:
        deadline = time.time() + wait_s
        while time.time() < deadline:
            with Session(engine) as session:
                record = session.get(CallRecord, call_id)
                if record is not None and record.outcome != "in_progress":
                    return record.outcome
            time.sleep(0.1)
        return None
    finally:
        engine.dispose()


def test_the_dispatchers_recorder_writes_comes_back_and_leaves_with_it(settings):
    db.upgrade(settings)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=_env(settings), cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        first = _next_pid(parent)
        asyncio.run(_call_that_ended(settings, "c-one"))
        assert _outcome(settings, "c-one") == "abandoned"
        # The recorder dies: another is started, and what comes meanwhile is written too.
        os.kill(first, signal.SIGKILL)
        asyncio.run(_call_that_ended(settings, "c-two"))
        second = _next_pid(parent)
        assert second != first
        assert _outcome(settings, "c-two") == "abandoned"
        # The dispatcher is killed: its recorder leaves by itself.
        parent.kill()
        parent.wait(10)
        deadline = time.time() + 10
        while not _gone(second) and time.time() < deadline:
            time.sleep(0.1)
        assert _gone(second)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_recorder_run_on_its_own_stops_on_sigterm(settings):
    db.upgrade(settings)
    proc = subprocess.Popen([sys.executable, "-m", "peoples_response.cli", "recorder"],
                            env=_env(settings), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "recorder" in proc.stdout.readline()
        asyncio.run(_call_that_ended(settings, "c-alone"))
        assert _outcome(settings, "c-alone") == "abandoned"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_parent_it_names_is_what_it_watches(monkeypatch):
    """PR_RECORDER_PARENT set by the dispatcher: a parent other than the real one means the
    dispatcher is gone (the child was handed to init)."""
    stop = asyncio.Event()
    asyncio.run(asyncio.wait_for(recording._leave_with(os.getppid() + 1_000_000, stop), 5))
    assert stop.is_set()
