"""What a soak run keeps track of: its callers, PBX nodes, processes and report windows, and
the timestamped progress line it prints."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import stat_cpu_seconds
from standin.ami import AmiServer


def log(t0: float, text: str) -> None:
    print(f"  t={time.time() - t0:7.1f}s  {text}", flush=True)


def responder_of(channel_name: str) -> str | None:
    """``PJSIP/r0012-0000000a`` -> ``r0012``; None for anything that isn't a responder's."""
    if not channel_name.startswith("PJSIP/r"):
        return None
    return channel_name[6:].rsplit("-", 1)[0]


@dataclass
class Caller:
    n: int
    node: str
    started: float  # epoch
    talk_s: float
    patience_s: float
    callback: bool
    ch: object = None  # the live channel; dropped once the call is over
    name: str = ""
    call_id: str = ""
    connected_at: float | None = None
    how: str = "on the line"
    ended: float | None = None


@dataclass
class Node:
    name: str
    agi: str  # its PR_AGI
    port: int = 0
    pbx: object = None
    server: AmiServer | None = None
    up: bool = False


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    cpu: float = 0.0  # CPU seconds of earlier, killed incarnations
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.proc.pid)

    def cpu_now(self) -> float:
        try:
            return self.cpu + (stat_cpu_seconds(self.proc.pid) if self.proc else 0.0)
        except OSError:
            return self.cpu

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.cpu = self.cpu_now()
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Window:
    label: str
    start: float  # seconds into the run
    end: float
