"""``peoples-response worker``: the RQ worker for transcription and retention.

Models are loaded in this process before RQ starts, and each job runs in a work horse that
RQ forks from it (rq's default ``Worker``). The horse shares the parent's model pages copy-on-
write, so no job pays the load (seconds, hundreds of MB), and the parent stays a supervisor:
a job stuck inside libvosk, or one that crashes it, is killed or dies alone and the next job
runs. ``SimpleWorker`` (no fork) was measured too: it saves the fork (tens of ms) but a hang or
crash in native code would take the worker down with it. Figures: docs/transcription.md.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import IO

from redis import Redis
from rq import Queue, SimpleWorker, Worker

from crisisline.config import Settings
from crisisline.speech.models import ModelRegistry, model_path_for
from crisisline.stores import sync_redis
from workers import retention, runtime
from workers.enqueue import QUEUE as TRANSCRIPTION_QUEUE
from workers.transcription import on_horse_killed

log = logging.getLogger(__name__)

QUEUES = (TRANSCRIPTION_QUEUE, retention.QUEUE)  # transcription first: a caller is waiting
WORKER_CLASSES: dict[str, type[Worker] | type[SimpleWorker]] = {
    "fork": Worker, "simple": SimpleWorker}


def preload_models(settings: Settings, out: IO[str] = sys.stdout,
                   registry: ModelRegistry | None = None) -> ModelRegistry:
    """Load every configured or installed model now and say, per language, how it went."""
    registry = registry or ModelRegistry(settings)
    report = registry.preload()
    for lang, error in sorted(report.items()):
        if error is None:
            print(f"speech model {lang}: loaded from {model_path_for(settings, lang)}", file=out)
        else:
            print(f"speech model {lang}: FAILED: {error}", file=out)
            log.error("speech model %s failed to load: %s", lang, error)
    for lang in settings.languages:
        if lang not in report:
            print(f"speech model {lang}: none configured or installed; messages in {lang} "
                  "will not be transcribed", file=out)
    return registry


def build_worker(settings: Settings, connection: Redis, worker_class: str = "fork") -> Worker:
    cls = WORKER_CLASSES[worker_class]
    queues = [Queue(name, connection=connection) for name in QUEUES]
    return cls(queues, connection=connection, work_horse_killed_handler=on_horse_killed)


def run_worker(settings: Settings, burst: bool = False, *, worker_class: str = "fork",
               preload: bool = True, out: IO[str] = sys.stdout) -> int:
    """Preload models, schedule retention, then work until stopped (or the queues drain)."""
    connection = sync_redis(settings.effective_redis_url)
    registry = preload_models(settings, out) if preload else None
    runtime.configure(settings, registry)
    # Objects alive now (the loaded interpreter) move out of the GC's reach, so collections
    # in forked horses don't write to, and un-share, the parent's pages.
    gc.freeze()
    retention.ensure_scheduled(connection)
    worker = build_worker(settings, connection, worker_class)
    print(f"worker {worker.name}: queues {', '.join(QUEUES)} ({worker_class})", file=out)
    out.flush()
    worker.work(burst=burst, with_scheduler=True)
    return 0
