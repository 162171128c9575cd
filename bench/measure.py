"""What every benchmark measures with: a free port, a process's CPU, percentiles."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stat_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process from /proc/<pid>/stat. Asterisk runs a thread per
    channel that is gone when the call ends; stat keeps the CPU of exited threads, a sum
    over the live threads' schedstat would lose it. Resolution: one clock tick (10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]
