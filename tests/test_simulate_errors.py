"""`simulate call` when the system it drives goes away: a one-line reason, no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "peoples_response.cli"]


def fake_pbx_that_dies_mid_call() -> tuple[socket.socket, int]:
    """An AMI server that logs the client in, takes the call, then closes (as `up` stopping)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"Asterisk Call Manager/11.0.0\r\n")
            buf = b""
            blocks = 0
            while blocks < 2:  # Login, then StandinPlaceCall
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    blocks += 1
                    action_id = next((line.split(b": ", 1)[1] for line in block.split(b"\r\n")
                                      if line.lower().startswith(b"actionid:")), b"")
                    if blocks == 1:
                        conn.sendall(b"Response: Success\r\nActionID: " + action_id +
                                     b"\r\nMessage: Authentication accepted\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_simulate_says_why_when_the_pbx_goes_away(tmp_path: Path, redis_url: str) -> None:
    server, port = fake_pbx_that_dies_mid_call()
    run_dir = tmp_path / "var" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "up.json").write_text(json.dumps({
        "pid": os.getpid(), "ami": f"127.0.0.1:{port}", "ami_secret": "x" * 20,
        "redis_url": redis_url}))
    env = {**os.environ, "PR_VAR_DIR": str(tmp_path / "var"), "PR_REDIS_URL": redis_url}
    done = subprocess.run([*CLI, "simulate", "call", "--keys", "2 02121 2"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    server.close()
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"simulate: lost the PBX at 127.0.0.1:{port}")
    assert "peoples-response up" in lines[0]
