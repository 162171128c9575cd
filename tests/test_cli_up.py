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


@pytest.fixture
def system(tmp_path):
    env = {**os.environ, "PR_VAR_DIR": str(tmp_path / "var"), "PR_AGI_PORT": str(free_port()),
           "PR_AMI_PORT": str(free_port()), "PR_WEB_PORT": str(free_port()),
           "PR_UP_REDIS_PORT": str(free_port()), "PR_STANDIN_TIME_SCALE": "0.05",
           "PR_WAVE_TIMEOUT_S": "3", "PR_MAX_WAIT_S": "40", "PR_LOG_LEVEL": "WARNING"}
    env.pop("PR_REDIS_URL", None)  # none configured: `up` starts its own
    env.pop("PR_AMI_SECRET", None)
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([*CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if "is up" in text:
            break
        if proc.poll() is not None:
            pytest.fail(f"up exited ({proc.returncode}):\n{text}")
        time.sleep(0.2)
    else:
        pytest.fail(f"up did not come up in 90 s:\n{text}")
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
    assert bridged["time_to_human_s"] > 0
    assert bridged["rung"] and bridged["rung"][0]["wave"] == 1
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
