"""RQ job: forget what we promised not to keep.

Every hour it removes transcripts, caller numbers and text conversations' messages from
calls older than ``Settings.retention_days`` (and, for calls that have finished, every Redis
key they left: their SQL record keeps the de-identified facts), removes the number of any
callback request that is over on a call that has ended whatever its age (the recorder does
that as it goes: this catches what it missed), and deletes recordings left under
``var/recordings`` for more than a day (the transcription job deletes each one once its
transcript is stored; what is left is from failed jobs, languages without a model, or
crashes).

Scheduling is idempotent by construction: the job for each hour has the id
``pr-retention-<hour>`` and is scheduled with ``unique=True``, so any number of workers
starting, and each run scheduling its successor, yield one job per hour.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError

from workers import runtime
from workers import transcripts_store as store

log = logging.getLogger(__name__)

QUEUE = "retention"
INTERVAL_S = 3600
RECORDING_MAX_AGE_S = 86400
JOB_PREFIX = "pr-retention-"


def purge_expired(now: float | None = None) -> dict[str, int]:
    settings = runtime.settings()
    r = runtime.connection()
    now = time.time() if now is None else now
    cutoff = now - settings.retention_days * 86400
    calls = forgotten = numbers = 0
    for call_id in list(store.iter_call_ids(r)):
        began = store.call_time(r, call_id)
        if began is None or began >= cutoff:
            numbers += store.forget_callback_number(r, call_id)
            continue
        if store.purge_personal(r, call_id, now):
            calls += 1
        if store.forget_call(r, call_id):
            forgotten += 1
    files = purge_recordings(settings.recordings_path, now)
    records, finished = purge_records(settings, cutoff)
    log.info("retention: cleared transcript/number of %d calls in Redis (%d finished ones "
             "deleted there) and %d call records older than %d days, the numbers of %d finished "
             "callback requests (%d in SQL), deleted %d recordings older than a day", calls,
             forgotten, records, settings.retention_days, numbers, finished, files)
    try:
        schedule_next(r, now)
    except Exception as exc:  # the purge is done; the next worker start schedules again
        log.error("retention: could not schedule the next run: %s", exc)
    return {"calls": calls, "forgotten": forgotten, "recordings": files, "records": records,
            "callback_numbers": numbers + finished}


def purge_records(settings: Any, cutoff: float) -> tuple[int, int]:
    """The same promise in SQL: call records and callback requests lose the caller's number
    and transcript, and text conversations their messages, once they are older than the
    retention period; a callback request that is over on a closed call loses its number at
    any age. Returns (records purged for age, callback numbers cleared for being over)."""
    from sqlalchemy import or_, update
    from sqlalchemy.orm import Session

    from crisisline import db
    from crisisline.records import callbacks as sql_callbacks
    from crisisline.records import texts as sql_texts
    from crisisline.records.schema import CallbackRequest, CallRecord

    before = datetime.fromtimestamp(cutoff, UTC)
    db.upgrade(settings)
    engine = db.engine_for(settings)
    try:
        with Session(engine) as session, session.begin():
            done = session.execute(
                update(CallRecord)
                .where(CallRecord.started_at < before,
                       or_(CallRecord.caller_number.is_not(None), CallRecord.transcript.is_not(None),
                           CallRecord.note.is_not(None)))
                .values(caller_number=None, transcript=None, note=None)).rowcount
            session.execute(update(CallbackRequest)
                            .where(CallbackRequest.requested_at < before,
                                   CallbackRequest.number.is_not(None))
                            .values(number=None))
            # Text conversations: their messages are what a transcript is to a call.
            done += sql_texts.purge_before(session, before)
            finished = sql_callbacks.forget_finished_numbers(session)
        return int(done or 0), finished
    finally:
        engine.dispose()


def purge_recordings(folder: Path, now: float) -> int:
    if not folder.is_dir():
        return 0
    deleted = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < now - RECORDING_MAX_AGE_S:
                path.unlink()
                deleted += 1
        except OSError as exc:  # gone already, or not ours to delete: say so, go on
            log.warning("retention: could not delete %s: %s", path, exc)
    return deleted


def schedule_next(r: Redis, now: float | None = None) -> str | None:
    """Schedule the run at the next hour boundary unless it is already; its job id or None."""
    now = time.time() if now is None else now
    slot = int(now // INTERVAL_S) + 1
    return _schedule(r, slot)


def _schedule(r: Redis, slot: int) -> str | None:
    queue = Queue(QUEUE, connection=r)
    job_id = f"{JOB_PREFIX}{slot}"
    job = queue.create_job(purge_expired, job_id=job_id, timeout=600, result_ttl=INTERVAL_S,
                           description="retention purge")
    try:
        queue.schedule_job(job, datetime.fromtimestamp(slot * INTERVAL_S, UTC), unique=True)
    except DuplicateJobError:
        return None
    return job_id


def ensure_scheduled(r: Redis, now: float | None = None) -> dict[str, Any]:
    """At worker start: run once now (catch up after downtime) and keep the hourly chain."""
    now = time.time() if now is None else now
    queue = Queue(QUEUE, connection=r)
    current = f"{JOB_PREFIX}start-{int(now // INTERVAL_S)}"
    try:
        queue.enqueue(purge_expired, job_id=current, job_timeout=600, result_ttl=INTERVAL_S,
                      description="retention purge (start-up)", unique=True)
    except DuplicateJobError:
        current = ""
    return {"now": current or None, "next": schedule_next(r, now)}
