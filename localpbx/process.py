"""An Asterisk process on this machine: started in the foreground (its console to a file),
ready when it is fully booted, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class AsteriskFailed(RuntimeError):
    """Asterisk did not start; the message ends with the last lines of its console."""


class AsteriskProcess:
    def __init__(self, install: Path, conf: Path, console_log: Path,
                 env: dict[str, str] | None = None,
                 wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        self.install = install
        self.conf = conf
        self.console_log = console_log
        self.env = env or {}
        # How the command is run: e.g. inside a network namespace (localpbx.netns). The
        # control socket (asterisk -rx) is a file in the state folder, so the CLI needs none.
        self.wrap = wrap or (lambda argv: argv)
        self.proc: subprocess.Popen | None = None

    @property
    def binary(self) -> str:
        return str(self.install / "sbin" / "asterisk")

    def cli(self, command: str, timeout: float = 10) -> str:
        """One CLI command over the control socket (asterisk -rx)."""
        result = subprocess.run([self.binary, "-C", str(self.conf), "-rx", command],
                                capture_output=True, text=True, timeout=timeout)
        return result.stdout

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until FullyBooted (every module loaded, ready for calls)."""
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.console_log, "ab")
        # -f foreground, -n no colour, -g core on crash; -c would need a terminal.
        argv = self.wrap([self.binary, "-f", "-n", "-g", "-C", str(self.conf)])
        self.proc = subprocess.Popen(argv,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
                                     start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AsteriskFailed(f"Asterisk exited at start (code {self.proc.returncode}):\n"
                                     + self.tail())
            try:
                if "fully booted" in self.cli("core waitfullybooted", timeout=5).lower():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.1)
        self.stop()
        raise AsteriskFailed(f"Asterisk was not fully booted within {timeout:g} s:\n" + self.tail())

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """'core stop now', then SIGTERM, then SIGKILL: by PID, never by name."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.cli("core stop now", timeout=3)
        except (subprocess.TimeoutExpired, OSError):
            pass
        try:
            self.proc.wait(timeout=timeout / 2)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout / 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """As kill -9: no clean-up at all (a crashed PBX)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
