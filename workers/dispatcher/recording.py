"""The recorder (recorder.py) in a process of its own, beside the dispatcher that starts it.

Copying the event stream into SQL costs about as much CPU as ringing does at 500 callers
(SQLAlchemy, a transaction per batch); in the dispatcher's own process it held the GIL while
calls waited to be rung. So ``peoples-response dispatcher`` starts ``peoples-response
recorder`` as its child, starts it again if it dies, and stops it when it stops; the child
leaves by itself when its parent is gone, kill -9 included. Several dispatchers, several
recorders: they share the stream's consumer group, and events a killed one held are taken
over by another (recorder.py). Nothing is lost while none runs: the events wait in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time

from crisisline import db
from crisisline.config import Settings
from crisisline.shutdown import stop_on_signals
from crisisline.stores import async_redis
from workers.dispatcher.recorder import Recorder

log = logging.getLogger(__name__)
PARENT_ENV = "PR_RECORDER_PARENT"  # the dispatcher's pid, set for its child
PARENT_CHECK_S = 1.0
RESTART_S = 2.0  # a recorder that keeps dying is started again at most this often
STOP_S = 10.0


async def serve(settings: Settings) -> None:
    """``peoples-response recorder``: the event stream into SQL until SIGINT/SIGTERM, or
    until the dispatcher that started it is gone."""
    db.upgrade(settings)
    redis = async_redis(settings.effective_redis_url)
    recorder = Recorder(redis, db.engine_for(settings), f"recorder-{os.getpid()}",
                        wrapup_s=settings.wrapup_s)
    parent = int(os.environ.get(PARENT_ENV) or 0)
    with stop_on_signals() as stop:
        watch = asyncio.create_task(_leave_with(parent, stop)) if parent else None
        print("peoples-response recorder: writing call records", flush=True)
        try:
            await recorder.run(stop)
        finally:
            if watch is not None:
                watch.cancel()
            await redis.aclose()


async def _leave_with(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("recorder: the dispatcher that started it (pid %d) is gone; stopping",
                        parent)
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK_S)


class RecorderChild:
    """The dispatcher's recorder process: started, kept running, stopped."""

    def __init__(self, config_file: str | None = None, verbose: bool = False) -> None:
        self.args = [sys.executable, "-m", "peoples_response.cli",
                     *(["--config", config_file] if config_file else []),
                     *(["-v"] if verbose else []), "recorder"]
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.args, env={**os.environ, PARENT_ENV: str(os.getpid())})

    async def keep(self, stop: asyncio.Event) -> None:
        """Start it again whenever it died, until ``stop``."""
        while not stop.is_set():
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    log.error("the recorder stopped (exit %s); starting it again",
                              self.proc.returncode)
                    await asyncio.sleep(max(0.0, self.started_at + RESTART_S - time.monotonic()))
                if stop.is_set():
                    return
                self.start()
            try:
                await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
            except TimeoutError:
                pass

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            log.error("the recorder did not stop in %.0f s; killed", STOP_S)
            proc.kill()
            proc.wait()
