"""The two commands a user runs: `peoples-response up`, then `simulate call` against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "peoples_response.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The example roster's on-call people depend on the hour: pin it (a Wednesday afternoon
# in Boston), so the test means the same at any hour it runs.
AFTERNOON = "2026-12-02 14:00"


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PR_VAR_DIR": str(tmp_path / "var"), "PR_AGI_PORT": str(free_port()),
           "PR_AMI_PORT": str(free_port()), "PR_WEB_PORT": str(free_port()),
           "PR_UP_REDIS_PORT": str(free_port()), "PR_STANDIN_TIME_SCALE": "0.05",
           "PR_WAVE_TIMEOUT_S": "3", "PR_MAX_WAIT_S": "40", "PR_LOG_LEVEL": "WARNING",
           "PR_ASTERISK": "standin", "PR_CLOCK": AFTERNOON, "PR_LANGUAGES": "en,es",
           **extra}
    env.pop("PR_REDIS_URL", None)  # none configured: `up` starts its own
    env.pop("PR_AMI_SECRET", None)
    return env


def start_up(env: dict[str, str], log_path: Path, timeout: float = 120, *args: str):
    log = open(log_path, "a+")
    proc = subprocess.Popen([*CLI, "up", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if text.count("is up") > start_up.count.get(str(log_path), 0):
            start_up.count[str(log_path)] = text.count("is up")
            return proc, log
        if proc.poll() is not None:
            pytest.fail(f"up exited ({proc.returncode}):\n{text}")
        time.sleep(0.2)
    pytest.fail(f"up did not come up in {timeout:g} s:\n{text}")


start_up.count = {}  # type: ignore[attr-defined]


@pytest.fixture
def system(tmp_path):
    env = up_env(tmp_path)
    proc, log = start_up(env, tmp_path / "up.log")
    yield env, proc, log
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def simulate(env, *args: str) -> dict:
    done = subprocess.run([*CLI, "simulate", "call", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # exactly one JSON object
    return json.loads(lines[0])


def test_up_then_simulate_reaches_a_responder_and_ctrl_c_stops_everything(system):
    env, proc, log = system
    bridged = simulate(env, "--keys", "2 02121 2", "--responders", "answer:2")
    assert bridged["outcome"] == "bridged" and bridged["answered_by"]
    assert (bridged["language"], bridged["neighborhood"], bridged["queued"]) == (
        "es", "Dorchester", True)
    assert bridged["time_to_human_s"] > 0 and 0 < bridged["first_ring_s"] < bridged["time_to_human_s"]
    # At 14:00 on a Wednesday nobody in the Dorchester team speaks Spanish: the first wave is
    # Spanish speakers of other teams (waves 1-4 are speakers only), never a non-speaker.
    assert bridged["rung"] and bridged["rung"][0]["wave"] in (2, 3, 4)
    assert all(p.startswith(("en/", "es/")) for p in bridged["prompts"])

    gone = simulate(env, "--keys", "1 02121 2", "--hangup-after", "2")
    assert (gone["outcome"], gone["queued"], gone["hung_up_at"]) == ("abandoned", False, "language")

    check = subprocess.run([*CLI, "check"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout

    import urllib.request

    deadline = time.monotonic() + 30
    while True:  # the panel comes up beside the rest
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{env['PR_WEB_PORT']}/health", timeout=2) as r:
                assert r.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) == 0
    log.seek(0)
    assert "People's Response stopped." in log.read()
    for port in ("PR_AGI_PORT", "PR_AMI_PORT", "PR_UP_REDIS_PORT", "PR_WEB_PORT"):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(env[port]))) != 0, f"{port} still open"


def test_after_kill_9_of_everything_the_next_caller_reaches_the_same_responders(tmp_path):
    """`up` killed with SIGKILL mid-call, then started again on the same data (its Redis
    reloads from var/): the responder who was on the killed call is free again and rung for
    the next caller, whose call is not lost to a responder stuck 'on a call' forever."""
    env = up_env(tmp_path, PR_WRAPUP_S="0")
    proc, _log = start_up(env, tmp_path / "up.log")
    talking = subprocess.Popen([*CLI, "simulate", "call", "--keys", "2 02121 2", "--responders",
                                "answer:1", "--talk", "300"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    import redis as redis_lib

    client = redis_lib.Redis(port=int(env["PR_UP_REDIS_PORT"]), decode_responses=True)
    deadline = time.monotonic() + 60
    taken_by = None
    while time.monotonic() < deadline and not taken_by:
        for key in client.scan_iter("pr:responder:*"):
            if client.hget(key, "on_call_with"):
                taken_by = key.rsplit(":", 1)[-1]
        time.sleep(0.2)
    assert taken_by, "nobody took the first call"
    os.killpg(proc.pid, signal.SIGKILL)  # up, its Redis, the stand-in, every part at once
    os.killpg(talking.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(1)
    proc, _log = start_up(env, tmp_path / "up.log")
    try:
        # The other Spanish speakers on call at 14:00 don't answer: only the responder who was
        # on the killed call can take this one, and must be free to.
        others = {"carmen-figueroa", "esperanza-cruz", "ana-lucia-ramirez",
                  "yolanda-baptiste"} - {taken_by}
        after = simulate(env, "--keys", "2 02121 2", "--responders",
                         ",".join(f"{rid}=never" for rid in others))
        assert (after["outcome"], after["answered_by"]) == ("bridged", taken_by), after["rung"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_up_runs_the_real_asterisk_and_simulate_places_a_sip_call_through_it(tmp_path):
    """The default on a machine where scripts/install-asterisk ran: `up` runs the real
    Asterisk with our configuration, and `simulate call` works the same against it (a SIP
    caller from the world Asterisk pressing RFC 4733 DTMF). Ctrl-C stops it all."""
    from localpbx.install import installed

    if installed() is None:
        pytest.fail("Asterisk is not installed: scripts/install-asterisk (scripts/test runs it)")
    env = up_env(tmp_path, PR_ASTERISK="auto", PR_WAVE_TIMEOUT_S="8")
    proc, log = start_up(env, tmp_path / "up.log", timeout=180)
    try:
        log.seek(0)
        assert "PBX Asterisk 22 (real)" in log.read()
        call = simulate(env, "--keys", "2 02121 2", "--responders", "answer:2", "--talk", "2")
        assert (call["outcome"], call["language"], call["neighborhood"]) == (
            "bridged", "es", "Dorchester")
        assert call["answered_by"] and call["time_to_human_s"] > call["first_ring_s"] > 0
        assert call["prompts"][-1] == "es/connecting"
        runtime = json.loads((tmp_path / "var" / "run" / "up.json").read_text())
        pids = [int(p.read_text().split()[0]) for p in (tmp_path / "var" / "asterisk").glob(
            "*/run/asterisk.pid") if p.read_text().strip()]
        assert runtime["pbx"] == "real" and len(pids) == 2
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
    for pid in pids:  # both Asterisk processes are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_simulate_follows_a_callback_from_the_offer_to_a_person(tmp_path):
    """Nobody answers; the caller asks to be called back at their (safe) number, no message,
    and hangs up; then responders answer: the line rings one, then calls the caller back."""
    env = up_env(tmp_path, PR_CALLBACK_RETRY_S="1", PR_CALLBACK_ATTEMPTS="2",
                 PR_WAVE_TIMEOUT_S="2", PR_RING_PER_WAVE="0")
    proc, _ = start_up(env, tmp_path / "up.log")
    try:
        common = ["--keys", "2 02121 2", "--callback-keys", "1 1 2", "--responders", "never",
                  "--responders-after-callback", "answer:1", "--leave-after-callback"]
        call = simulate(env, *common, "--caller-id", "6175550142", "--callback-answer", "answer")
        assert call["outcome"] == "bridged" and call["answered_by"]
        assert call["callback"] == {"requested": True, "safe_to_call": True,
                                    "message_allowed": False, "attempts": 1,
                                    "outcome": "bridged", "last_attempt": "bridged",
                                    "time_to_human_s": call["callback"]["time_to_human_s"]}
        assert call["callback"]["time_to_human_s"] > 0
        assert "callback_calling" in call["events"] and "callback_answered" in call["events"]
        machine = simulate(env, *common, "--caller-id", "6175550143", "--callback-answer", "machine")
        assert machine["callback"]["outcome"] == "machine_hung_up"
        assert machine["callback"]["attempts"] == 2 and machine["outcome"] == "callback"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_up_with_two_nodes_connects_each_caller_on_their_own_node(tmp_path):
    """`up --nodes 2`: two PBX nodes, two FastAGI servers, two dispatchers on one machine."""
    env = up_env(tmp_path)
    proc, log = start_up(env, tmp_path / "up.log", 120, "--nodes", "2")
    try:
        log.seek(0)
        assert "2 stand-in nodes (a=127.0.0.1:" in log.read()
        on_a = simulate(env, "--node", "a", "--keys", "2 02121 2", "--responders", "answer:2")
        on_b = simulate(env, "--node", "b", "--keys", "1 02121 2", "--responders", "answer:2")
        assert (on_a["outcome"], on_a["pbx_node"], on_a["language"]) == ("bridged", "a", "es")
        assert (on_b["outcome"], on_b["pbx_node"], on_b["language"]) == ("bridged", "b", "en")
        bad = subprocess.run([*CLI, "simulate", "call", "--node", "z"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "no node 'z'" in bad.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_up_with_two_real_nodes_behind_kamailio(tmp_path):
    """`up --nodes 2` where the real Asterisk and Kamailio are installed: two real nodes on
    their own loopback addresses behind Kamailio, which spreads the world's calls over them;
    each caller reaches a person on the node Kamailio chose, and Ctrl-C stops every part."""
    from localpbx import kamailio
    from localpbx.install import installed

    if installed() is None or kamailio.binary() is None:
        pytest.fail("needs the real Asterisk and Debian's kamailio (scripts/setup)")
    env = up_env(tmp_path, PR_ASTERISK="auto", PR_WAVE_TIMEOUT_S="8")
    proc, log = start_up(env, tmp_path / "up.log", 180, "--nodes", "2")
    try:
        log.seek(0)
        assert "2 real Asterisk nodes behind Kamailio 127.0.0.10:" in log.read()
        calls = [simulate(env, "--keys", keys, "--responders", "answer:2", "--talk", "1")
                 for keys in ("2 02121 2", "1 02121 2")]
        assert [(c["outcome"], c["language"]) for c in calls] == [("bridged", "es"),
                                                                   ("bridged", "en")]
        # Round robin: one caller on each node, each record saying which.
        assert sorted(c["pbx_node"] for c in calls) == ["a", "b"]
        bad = subprocess.run([*CLI, "simulate", "call", "--node", "a"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "Kamailio" in bad.stderr
        runtime = json.loads((tmp_path / "var" / "run" / "up.json").read_text())
        assert runtime["nodes"].startswith("a=127.0.0.11:") and ",b=127.0.0.12:" in runtime["nodes"]
        pids = [int(p.read_text().split()[0]) for p in (tmp_path / "var" / "asterisk").glob(
            "*/run/asterisk.pid") if p.read_text().strip()]
        assert len(pids) == 3  # the two nodes and the world
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert subprocess.run(["pgrep", "-f", str(tmp_path / "var" / "kamailio")],
                              capture_output=True).returncode == 1  # Kamailio is gone too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
