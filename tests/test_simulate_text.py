"""``peoples-response simulate text`` against a running text line (what `up` runs: the chat
app, a dispatcher, the SMS provider stand-in), found through `up`'s runtime file."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os

from crisisline import db
from crisisline.roster.store import RosterStore
from peoples_response import simulate_text
from peoples_response.cli import build_parser
from peoples_response.up import runtime_file
from tests.text_helpers import text_roster, text_system

ROSTER = text_roster(("ana", "dot", "en,es", "+16175550101"), ("ben", "dot", "en,es", "+16175550102"),
                     ("dee", "rox", "en", "+16175550103"))


def as_if_up_ran(system) -> None:
    s = system.settings
    RosterStore(db.engine_for(s), s.timezone).replace_all(ROSTER)
    path = runtime_file(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "redis_url": s.effective_redis_url,
                                "chat": system.base, "sms_standin": system.standin.url}))


def simulate(system, argv: list[str]) -> dict:
    args = build_parser().parse_args(["simulate", "text", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert simulate_text.run(args, system.settings) == 0
    return json.loads(out.getvalue())


async def test_simulate_text_by_sms_and_by_chat(live_settings) -> None:
    async with text_system(live_settings, ROSTER, text_wave_timeout_s=1.0) as system:
        as_if_up_ran(system)
        got = await system.http(simulate, system, [
            "--channel", "sms", "--messages", "2|hola, necesito hablar con alguien",
            "--responders", "ana=decline,ben=answer:20", "--talk", "0.5", "--wait", "30"])
        assert set(got) == {"conversation_id", "channel", "language", "neighborhood", "rung",
                            "answered_by", "time_to_human_s", "outcome"}
        assert (got["channel"], got["language"], got["outcome"], got["answered_by"]) == \
            ("sms", "es", "bridged", "ben")
        assert got["time_to_human_s"] is not None
        assert {r["responder"]: r["result"] for r in got["rung"]}["ana"] == "declined"
        # The responder ended it after --talk; the texter heard so, in Spanish.
        state = system.db.call(got["conversation_id"])["state"]
        assert state == "ended"

        chat = await system.http(simulate, system, [
            "--channel", "chat", "--messages", "2|necesito ayuda|02121", "--talk", "0.2",
            "--wait", "30"])
        assert (chat["channel"], chat["language"], chat["outcome"]) == ("chat", "es", "bridged")
        assert system.db.call(chat["conversation_id"])["state"] == "ended"


def test_simulate_text_says_when_nothing_runs(settings, capsys) -> None:
    args = argparse.Namespace(channel="sms", messages="2", sender="", responders="", talk=1.0,
                              wait=1.0)
    assert simulate_text.run(args, settings) == 2
    assert "stand-in" in capsys.readouterr().err


def test_up_runs_the_chat_app_and_the_provider_stand_in_when_none_is_configured(settings) -> None:
    import dataclasses

    from peoples_response.up import parts_for
    from smsstandin.serve import standin_env

    names = [p.name for p in parts_for(settings, ["pr"])]
    assert names[-2:] == ["chat", "sms-standin"]
    env = standin_env(settings)
    assert env["PR_SMS_API_URL"] == "http://127.0.0.1:8091" and env["PR_SMS_ACCOUNT"].startswith("AC")
    assert len(env["PR_SMS_TOKEN"]) >= 32
    provider = dataclasses.replace(settings, sms_api_url="https://api.example.org", sms_account="AC1")
    assert "sms-standin" not in [p.name for p in parts_for(provider, ["pr"])]
    assert standin_env(provider) == {}


def test_the_sms_stand_in_runs_as_a_process(settings) -> None:
    import subprocess
    import sys
    import time
    import urllib.error

    from tests.text_helpers import ACCOUNT, TOKEN, free_port
    from textline.sms import SmsClient, SmsError

    port = free_port()
    env = {**os.environ, "PR_SMS_API_URL": f"http://127.0.0.1:{port}", "PR_SMS_ACCOUNT": ACCOUNT,
           "PR_SMS_TOKEN": TOKEN, "PR_VAR_DIR": settings.var_dir}
    proc = subprocess.Popen([sys.executable, "-m", "peoples_response.cli", "sms-standin"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = SmsClient(f"http://127.0.0.1:{port}", ACCOUNT, TOKEN, "+16175550151", attempts=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.send("+16175550101", "hello").startswith("SM")
                break
            except (SmsError, urllib.error.URLError):
                assert time.monotonic() < deadline, "the stand-in never answered"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
