"""Calls end to end: the stand-in runs our dialplan and connects to our real FastAGI
server, which writes to a real Redis. What a caller would notice, and what stays behind."""

from __future__ import annotations

import asyncio

import pytest

from standin.caller import CallerScript
from tests.intake_helpers import Redis, call, pbx_for, running_agi

LANGUAGE_KEY = {"en": "1", "es": "2"}


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("source", ["direct", "911", "988"])
async def test_every_source_in_every_language_reaches_the_waiting_room(
        live_settings, redis_url, source, language):
    keys = f"{LANGUAGE_KEY[language]} 02121 1"
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        trace = await call(pbx, source, CallerScript(keys=keys, stay_s=None,
                                                     caller_id_num="6175550123"))
        call_id = trace.variables["PR_CALL_ID"]
        db = Redis(redis_url)
        record = db.call(call_id)
        assert trace.room == f"call-{call_id}" and trace.variables["PR_QUEUED"] == "1"
        assert db.waiting() == [call_id]
        assert (record["source"], record["language"], record["neighborhood"]) == (
            source, language, "Dorchester")
        assert record["caller_number"] == "+16175550123"
        assert int(record["priority"]) == live_settings.priority_for(source)
        heard = [p.split("/")[-2] for p in trace.prompts]
        menu = 2  # no TRANSFER_LANGUAGE here: every source hears the menu first
        assert set(heard[menu:]) == {language}, trace.prompts  # everything after the menu
        promise = "promise" if source == "direct" else "transfer_promise"
        assert any(p.endswith(f"{language}/{promise}") for p in trace.prompts)
        await pbx.hangup(trace.channel)
        assert db.waiting() == []
        assert db.call(call_id)["end_step"] == "waiting_room"


@pytest.mark.parametrize("source", ["911", "988"])
async def test_transfers_skip_what_the_center_told_us(live_settings, redis_url, source):
    script = CallerScript(keys="", stay_s=0, variables={
        "TRANSFER_LANGUAGE": "es-US", "TRANSFER_ZIP": "02128", "TRANSFER_NOTE": "safe; wants talk"})
    async with running_agi(live_settings) as server:
        trace = await call(pbx_for(live_settings, server.port), source, script)
    names = [p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in trace.prompts]
    assert names == ["es/transfer_promise", "es/waiting"]
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert record["note"] == "safe; wants talk" and record["neighborhood"] == "East Boston"


async def test_a_caller_who_presses_nothing_reaches_the_queue(live_settings, redis_url):
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        trace = await call(pbx, "direct", CallerScript(keys="- - -", stay_s=None))
        db = Redis(redis_url)
        record = db.call(trace.variables["PR_CALL_ID"])
        assert db.waiting() == [record["id"]]
        assert (record["language"], record["neighborhood"], record["consented_to_message"]) == (
            "en", "", "0")
        assert not trace.fallback_dialed
        await pbx.close()


async def test_wrong_keys_retry_then_default(live_settings, redis_url):
    async with running_agi(live_settings) as server:
        trace = await call(pbx_for(live_settings, server.port), "direct",
                           CallerScript(keys="7 7 7 123 123 123 5 5 5", stay_s=0))
    assert trace.room is not None and not trace.fallback_dialed
    played = [p.rsplit("/", 1)[-1] for p in trace.prompts]
    assert played.count("invalid_key") == 4 and played.count("zip_not_recognized") == 2
    assert played.count("ask_zip") == 3 and played.count("ask_consent") == 3
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert (record["language"], record["zip_code"], record["consented_to_message"]) == ("en", "", "0")


async def test_hanging_up_after_any_prompt_leaves_nothing_waiting(live_settings, redis_url):
    db = Redis(redis_url)
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        full = await call(pbx, "direct", CallerScript(keys="2 02121 1", stay_s=0))
        total = len(full.prompts)
        assert total >= 6
        for n in range(1, total + 1):
            trace = await call(pbx, "direct", CallerScript(keys="2 02121 1", hangup_after=n))
            assert len(trace.prompts) == n
            record = db.call(trace.variables["PR_CALL_ID"])
            assert record["state"] == "abandoned", (n, record)
            assert record["end_step"], n
            last = db.events(record["id"])[-1]
            assert last["type"] == "caller_hung_up" and last["step"] == record["end_step"]
    assert db.waiting() == [] and db.claimed() == []
    assert all(c["state"] == "abandoned" for c in db.all_calls())


async def test_no_fastagi_server_means_the_fallback_group(live_settings, redis_url):
    pbx = pbx_for(live_settings, 1)  # nothing listens on port 1: AGISTATUS=FAILURE
    trace = await call(pbx, "direct", CallerScript(keys="1 02121 1", stay_s=0))
    assert trace.agi_status[0] == "FAILURE" and trace.fallback_dialed and trace.room is None


async def test_a_missing_prompt_sends_the_caller_to_a_person_and_redis_agrees(
        live_settings, redis_url, tmp_path):
    import dataclasses
    import shutil

    prompts = tmp_path / "prompts"
    shutil.copytree(live_settings.prompts_path, prompts)
    # STREAM FILE of a missing file fails (AGISTATUS=FAILURE); GET DATA skips it in silence,
    # which only `peoples-response check` can catch. Removed after the server started (a
    # language missing audio at start is left off the menu: tests/test_languages.py).
    settings = dataclasses.replace(live_settings, prompts_dir=str(prompts))
    async with running_agi(settings) as server:
        (prompts / "es" / "promise.wav").unlink()
        trace = await call(pbx_for(settings, server.port), "direct",
                           CallerScript(keys="2 02121 1", stay_s=0))
    assert trace.fallback_dialed and trace.room is None
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert record["state"] == "fallback" and Redis(redis_url).waiting() == []


async def test_many_calls_at_once_share_one_server(live_settings, redis_url):
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        scripts = [CallerScript(keys=f"{1 + n % 2} 02121 {1 + n % 2}", stay_s=None)
                   for n in range(150)]  # more than redis-py's default pool of 100
        traces = await asyncio.gather(*(call(pbx, "direct", s) for s in scripts))
        db = Redis(redis_url)
        assert sorted(db.waiting()) == sorted(t.variables["PR_CALL_ID"] for t in traces)
        assert all(t.room for t in traces)
        await pbx.close()
        assert db.waiting() == []


async def test_a_message_is_recorded_only_after_an_explicit_yes(live_settings, redis_url,
                                                                spoken_message):
    from rq import Queue

    db = Redis(redis_url)
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        yes = await call(pbx, "direct", CallerScript(keys="1 02121 1", stay_s=0,
                                                     speech=spoken_message))
        no = await call(pbx, "direct", CallerScript(keys="1 02121 2", stay_s=0,
                                                    speech=spoken_message))
        silent = await call(pbx, "direct", CallerScript(keys="1 02121 -", stay_s=0,
                                                        speech=spoken_message))
    recorded = [c for t in (yes, no, silent) for tr in t.transcripts for c in tr.commands
                if c.startswith("RECORD FILE")]
    assert len(recorded) == 1 and yes.variables["PR_CALL_ID"] in recorded[0]
    message = live_settings.recordings_path / f"message-{yes.variables['PR_CALL_ID']}.wav"
    assert message.exists()
    assert db.call(yes.variables["PR_CALL_ID"])["x_message_file"] == str(message)[:-4]
    jobs = Queue("transcription", connection=db.client.__class__.from_url(redis_url)).jobs
    assert [j.args[0] for j in jobs] == [yes.variables["PR_CALL_ID"]]
    assert list(live_settings.recordings_path.glob("*.wav")) == [message]


async def test_hanging_up_during_the_message_keeps_no_audio(live_settings, redis_url,
                                                            spoken_message):
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        trace = await call(pbx, "direct", CallerScript(keys="1 02121 1", stay_s=0,
                                                       record_end="hangup", speech=spoken_message))
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert (record["state"], record["end_step"]) == ("abandoned", "message")
    assert not list(live_settings.recordings_path.glob("*.wav"))
