"""RQ job: transcribe one caller's recorded message and store it on the call.

Outcomes (``transcript_status`` on the call hash):
  done           text stored, audio deleted
  empty          decoded but no speech (silence, a header-only file), audio deleted
  failed         bad input (missing, empty, corrupt, unsupported audio): not retried, audio
                 deleted because it can't be used; or, via :func:`on_failure`, an unexpected
                 error after the last retry: audio kept (an operator may requeue the job;
                 retention deletes it after a day)
  no_model       no model for the language, or its model failed to load: the call goes on
                 without a transcript; audio kept for retention to sweep
  skipped_ended  the call already ended (or no longer exists): nobody is being rung for it,
                 so the message isn't decoded and the audio is deleted

Unexpected exceptions propagate so RQ's Retry runs them again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from crisisline.speech.models import ModelLoadError
from crisisline.speech.transcribe import AudioError, transcribe_wav
from workers import runtime
from workers import transcripts_store as store

log = logging.getLogger(__name__)


def _delete(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # retention sweeps what's left; don't fail a stored transcript
        log.warning("could not delete recording %s: %s", path, exc)


def cap_seconds(max_message_s: float) -> float:
    """Audio decoded per message. The IVR stops recording at max_message_s; twice that
    leaves room for a different recorder without letting a runaway file hold the worker."""
    return float(max_message_s) * 2


def transcribe_call(call_id: str, wav_path: str, language: str) -> dict[str, Any]:
    settings = runtime.settings()
    r = runtime.connection()
    path = Path(wav_path)

    state = store.call_state(r, call_id)
    if state is None or state in store.ENDED_STATES:
        log.info("call %s %s: recording not transcribed, deleted", call_id,
                 "no longer exists" if state is None else f"already {state}")
        if state is not None:
            store.record(r, call_id, store.SKIPPED_ENDED)
        _delete(path)
        return {"status": store.SKIPPED_ENDED}

    already = store.field(r, call_id, "transcript_status")
    if already in (store.DONE, store.EMPTY):
        # A retry of a job that stored its transcript and then died: don't decode again, and
        # above all don't turn a stored transcript into "failed" because the audio is gone.
        _delete(path)
        return {"status": already, "already_stored": True}

    try:
        model = runtime.registry().get(language)
        reason = None if model is not None else f"no speech model for language {language!r}"
    except ModelLoadError as exc:
        model, reason = None, f"speech model for {language!r} failed to load: {exc.reason}"
    if model is None:
        log.warning("call %s: %s; no transcript (configure vosk_models.%s)",
                    call_id, reason, language)
        store.record(r, call_id, store.NO_MODEL, transcript_error=reason)
        return {"status": store.NO_MODEL, "reason": reason}

    try:
        result = transcribe_wav(model, path, cap_seconds(settings.max_message_s))
    except AudioError as exc:
        log.warning("call %s: recording unusable: %s", call_id, exc.reason)
        store.record(r, call_id, store.FAILED, transcript_error=exc.reason)
        _delete(path)
        return {"status": store.FAILED, "reason": exc.reason}

    status = store.DONE if result.text else store.EMPTY
    if result.truncated:
        log.warning("call %s: recording longer than %.0f s; transcribed the first %.0f s only",
                    call_id, cap_seconds(settings.max_message_s), result.duration_s)
    store.record(r, call_id, status, transcript=result.text,
                 transcript_duration_s=result.duration_s, transcript_decode_s=result.decode_s,
                 transcript_truncated="1" if result.truncated else "0", transcript_error="")
    # Only now (a crash before this line leaves the audio for a retry), and only if the call
    # is over: while responders are rung, the whisper plays the caller's own words. A call
    # still going has its audio deleted by the recorder when it ends.
    if store.call_state(r, call_id) in store.ENDED_STATES | {None}:
        _delete(path)
    log.info("call %s: transcript %s (%.1f s audio in %.2f s%s)", call_id, status,
             result.duration_s, result.decode_s, ", truncated" if result.truncated else "")
    return {"status": status, "duration_s": result.duration_s, "decode_s": result.decode_s,
            "truncated": result.truncated}


def _final_failure(job: Any, connection: Any, reason: str) -> None:
    call_id = job.args[0] if job.args else job.kwargs.get("call_id")
    if not call_id:
        return
    if job.should_retry:
        # RQ calls on_failure on every failed attempt; the call stays "pending" while a
        # retry is coming, with the error kept for the panel.
        log.warning("call %s: transcription attempt failed (%s); %s retries left",
                    call_id, reason, job.retries_left)
        store.record(connection, call_id, store.PENDING, transcript_error=reason)
        return
    log.error("call %s: transcription failed after retries: %s", call_id, reason)
    store.record(connection, call_id, store.FAILED, transcript_error=reason)


def on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ on_failure callback for transcription jobs."""
    reason = f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}"[:300]
    _final_failure(job, connection, reason)


def on_horse_killed(job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
    """Worker hook: a work horse died (crash in libvosk, OOM kill, hard timeout). RQ doesn't
    run on_failure then, so the call would otherwise stay "pending" for ever."""
    if job.func_name != f"{__name__}.transcribe_call":
        return
    _final_failure(job, job.connection, f"worker process died (status {ret_val})")
