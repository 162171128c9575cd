"""Queue a recorded message for transcription (called by the IVR when recording ends)."""

from __future__ import annotations

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job

from workers import transcripts_store as store
from workers.transcription import on_failure, transcribe_call

QUEUE = "transcription"
# Decoding is capped at 2 x max_message_s (60 s of audio by default) at RTF ~0.3-0.5 on one
# core, plus a model load if the worker wasn't preloaded: 180 s bounds a sane job with margin.
JOB_TIMEOUT_S = 180
RETRY = Retry(max=2, interval=[1, 5])
# Results hold only the outcome (no text), kept briefly for `rq info` and debugging.
RESULT_TTL_S = 3600
FAILURE_TTL_S = 7 * 86400


def enqueue_transcription(redis: Redis, call_id: str, wav_path: str, language: str,
                          *, job_timeout: int = JOB_TIMEOUT_S) -> Job:
    store.record(redis, call_id, store.PENDING, transcript_error="")
    queue = Queue(QUEUE, connection=redis)
    return queue.enqueue(
        transcribe_call, call_id, str(wav_path), language,
        job_timeout=job_timeout, retry=RETRY, on_failure=Callback(on_failure),
        result_ttl=RESULT_TTL_S, failure_ttl=FAILURE_TTL_S,
        # The description is shown by `rq info`; keep the recording path out of it.
        description=f"transcribe call {call_id} ({language})")
