"""FastAGI server vs the classic one-process-per-call AGI, same IVR flow, same run.

N concurrent scripted callers (1, 100, 1000) go through our real dialplan in the stand-in
PBX and the IVR ("2 02121 2": Spanish, a ZIP, no message), with real Redis. For each mode:
calls/s, p50/p99 AGI command turnaround (the server's think time: from the PBX's reply to
the server's next command), and the serving side's CPU seconds and peak memory per call.

    .venv/bin/python bench/bench_agi.py [--sizes 1,100,1000] [--classic-cap 50]

Classic mode is what Asterisk's AGI(script) does: a process per call over stdin/stdout.
Here a small TCP bridge starts `peoples-response agi --classic` for each connection, so the
stand-in can speak to it unchanged. At most --classic-cap classic processes run at once
(1000 Python processes at once would need tens of GB); the FastAGI server takes all N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crisisline import config  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.render import render_all  # noqa: E402
from crisisline.stores.calls import EVENTS  # noqa: E402
from standin import channel as standin_channel  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.pbx import StandinPBX  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
TIMES: list[float] = []  # server think times, seconds


class TimedLines(list):
    """A transcript that remembers when each line passed (the bench's own instrument)."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.at: list[float] = []

    def append(self, item) -> None:
        now = time.perf_counter()
        if item[0] == ">>" and self and self[-1][0] == "<<":
            TIMES.append(now - self.at[-1])
        super().append(item)
        self.at.append(now)


_orig_init = standin_channel.AgiTranscript.__init__


def _timed_init(self, *a, **k) -> None:
    _orig_init(self, *a, **k)
    self.lines = TimedLines(self.lines)


standin_channel.AgiTranscript.__init__ = _timed_init


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] if values else float("nan")


def pbx_for(port: int, prompts: Path) -> StandinPBX:
    return StandinPBX(ROOT / "dialplan" / "extensions.conf",
                      globals_overrides={"PR_AGI": f"agi://127.0.0.1:{port}"},
                      sounds_dirs=[Path("/usr/share/asterisk/sounds")], prompts_dir=prompts)


async def place(pbx: StandinPBX, n: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(pbx.place_call("from-direct", "6175550100",
                                          CallerScript(keys="2 02121 2", stay_s=0))
                           for _ in range(n)))
    return time.perf_counter() - started


def queued(r: redis.Redis) -> int:
    return sum(1 for _, b in r.xrange(EVENTS) if b.get(b"type") == b"queued")


async def fastagi(n: int, env: dict[str, str], prompts: Path, r: redis.Redis) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "peoples_response.cli", "agi", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        await asyncio.sleep(0.1)
    idle_kb = proc_rss_kb(proc.pid, "VmRSS")
    cpu0 = proc_cpu(proc.pid)
    TIMES.clear()
    wall = await place(pbx_for(port, prompts), n)
    cpu = proc_cpu(proc.pid) - cpu0
    peak_kb = proc_rss_kb(proc.pid, "VmHWM")
    proc.terminate()
    proc.wait(10)
    return {"mode": "fastagi", "n": n, "wall": wall, "cpu": cpu, "peak_mb": peak_kb / 1024,
            "per_call_mb": max(0, peak_kb - idle_kb) / 1024 / n, "times": list(TIMES),
            "queued": queued(r)}


async def classic(n: int, env: dict[str, str], prompts: Path, r: redis.Redis, cap: int) -> dict:
    gate = asyncio.Semaphore(cap)
    peak_child_kb = 0
    active = 0

    async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal peak_child_kb, active
        active += 1
        async with gate:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "peoples_response.cli", "agi", "--classic", env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)

            async def pump(src: asyncio.StreamReader, dst) -> None:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.close()

            await asyncio.gather(pump(reader, child.stdin), pump(child.stdout, writer),
                                 return_exceptions=True)
            await child.wait()
        active -= 1

    server = await asyncio.start_server(bridge, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    TIMES.clear()
    wall = await place(pbx_for(port, prompts), n)
    while active:  # the h extension's hangup sessions may still be finishing
        await asyncio.sleep(0.05)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak_child_kb = after.ru_maxrss  # the largest single child: one call's process
    return {"mode": f"classic(≤{cap})", "n": n, "wall": wall, "cpu": cpu,
            "peak_mb": peak_child_kb * min(cap, n) / 1024, "per_call_mb": peak_child_kb / 1024,
            "times": list(TIMES), "queued": queued(r)}


def row(res: dict) -> str:
    t = res["times"]
    return (f"{res['n']:>5} {res['mode']:<13} {res['queued']:>6} {res['wall']:>7.2f} "
            f"{res['n'] / res['wall']:>8.1f} {pct(t, 50) * 1000:>9.2f} {pct(t, 99) * 1000:>9.2f} "
            f"{res['cpu'] / res['n'] * 1000:>11.1f} {res['peak_mb']:>9.1f} {res['per_call_mb']:>9.3f}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--classic-cap", type=int, default=50)
    parser.add_argument("--classic-max", type=int, default=200,
                        help="classic runs at most this many calls (each costs a whole process)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="bench-agi-"))
    settings = config.load(env={}, var_dir=str(tmp), languages=("en", "es"))
    render_all(settings, load_catalog())
    env = {**os.environ, "PR_REDIS_URL": REDIS_URL, "PR_VAR_DIR": str(tmp),
           "PR_PROMPTS_DIR": str(settings.prompts_path), "PR_LOG_LEVEL": "ERROR"}
    r = redis.Redis.from_url(REDIS_URL)
    print(f"{'N':>5} {'mode':<13} {'queued':>6} {'wall s':>7} {'calls/s':>8} {'turn p50':>9} "
          f"{'turn p99':>9} {'CPU ms/call':>11} {'peak MB':>9} {'MB/call':>9}")
    for n in [int(x) for x in args.sizes.split(",")]:
        r.flushdb()
        fast = await fastagi(n, env, settings.prompts_path, r)
        print(row(fast), flush=True)
        m = min(n, args.classic_max)
        r.flushdb()
        slow = await classic(m, env, settings.prompts_path, r, args.classic_cap)
        print(row(slow) + ("" if m == n else f"   ({m} of {n} calls)"), flush=True)
        print(f"{'':>5} ratio FastAGI/classic: calls/s {(n / fast['wall']) / (m / slow['wall']):.1f}x, "
              f"CPU per call {(slow['cpu'] / m) / (fast['cpu'] / n):.1f}x less, turnaround p50 "
              f"{statistics.median(slow['times']) / statistics.median(fast['times']):.1f}x faster",
              flush=True)
    r.flushdb()


if __name__ == "__main__":
    asyncio.run(main())
