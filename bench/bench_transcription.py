"""Benchmark: transcription jobs through a real worker process and a real Redis.

For Korean messages of 5, 15 and 30 s (espeak-ng sentences, trimmed/padded with sox to the
exact length, 8 kHz mono 16-bit) it runs the same jobs through three workers:

  fork+preload   peoples-response worker as shipped: models loaded in the parent, rq's
                 forking Worker, each job in a forked horse sharing the model pages
  simple+preload the same with rq's SimpleWorker (no fork)
  naive          forking Worker with nothing preloaded: every job loads the model

and prints, per job: decode real-time factor (decode seconds / audio seconds), the time from
enqueue (end of speech) to the transcript stored on the call, and per worker: start-up time
and peak memory (RSS and PSS of the worker and all its children, sampled from /proc every
20 ms). PSS splits shared pages between the processes sharing them, so the PSS total is the
real memory cost; summed RSS would count the shared model once per process.

    .venv/bin/python bench/bench_transcription.py [--redis redis://127.0.0.1:6379/11]

Uses (and flushes) its own Redis database, 11 by default. Runs in about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers import transcripts_store as store  # noqa: E402
from workers.enqueue import enqueue_transcription  # noqa: E402

LENGTHS = (5, 15, 30)
SENTENCES = ["안녕하세요. 도움이 필요해요.", "저는 지금 집에 있어요.",
             "오늘 너무 힘든 하루였어요.", "누군가와 이야기하고 싶어요.",
             "제 동생이 많이 불안해하고 있어요.", "주소는 보스턴 시내예요."]
MODES = (("fork+preload", "fork", True), ("simple+preload", "simple", True),
         ("naive", "fork", False))


def make_audio(folder: Path) -> dict[int, Path]:
    text = " ".join(SENTENCES * 4)  # ~45 s of speech at espeak-ng's default rate
    raw = folder / "all.raw.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
    out = {}
    for seconds in LENGTHS:
        path = folder / f"speech{seconds}.wav"
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path),
                        "trim", "0", str(seconds), "pad", "0", str(seconds)], check=True)
        subprocess.run(["sox", str(path), str(path) + ".t.wav", "trim", "0", str(seconds)],
                       check=True)
        os.replace(str(path) + ".t.wav", path)
        out[seconds] = path
    return out


# ---- memory -------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _kb(path: str, keys: tuple[str, ...]) -> int:
    total = 0
    try:
        for line in Path(path).read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in keys:
                total += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return total


@dataclass
class Memory:
    """Peaks over the worker's process tree. Children present when the worker became ready
    are rq's scheduler; children that appear later are work horses (one per job)."""

    root: int
    peak_root_rss: int = 0
    peak_horse_rss: int = 0
    peak_horse_private: int = 0
    peak_other_rss: int = 0
    peak_total_pss: int = 0
    horses: set[int] = field(default_factory=set)
    others: set[int] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _ticks: int = 0

    def mark_ready(self) -> None:
        self.others = set(_tree(self.root)) - {self.root}

    def sample(self) -> None:
        # smaps_rollup walks every mapping: read it every 5th tick only, /proc/*/status is cheap.
        detailed = self._ticks % 5 == 0
        self._ticks += 1
        total_pss = 0
        for pid in _tree(self.root):
            rss = _kb(f"/proc/{pid}/status", ("VmRSS",))
            if detailed:
                total_pss += _kb(f"/proc/{pid}/smaps_rollup", ("Pss",))
            if pid == self.root:
                self.peak_root_rss = max(self.peak_root_rss, rss)
            elif self.others is None or pid in self.others:
                self.peak_other_rss = max(self.peak_other_rss, rss)
            else:
                self.horses.add(pid)
                self.peak_horse_rss = max(self.peak_horse_rss, rss)
                if detailed:
                    private = _kb(f"/proc/{pid}/smaps_rollup", ("Private_Clean", "Private_Dirty"))
                    self.peak_horse_private = max(self.peak_horse_private, private)
        self.peak_total_pss = max(self.peak_total_pss, total_pss)

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.02)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


# ---- one worker ---------------------------------------------------------------------------

WORKER = """
import sys
from crisisline import config
from workers.worker import run_worker
settings = config.load(env={{}}, redis_url={redis!r}, var_dir={var!r})
sys.exit(run_worker(settings, worker_class={kind!r}, preload={preload!r}))
"""


@dataclass
class JobResult:
    seconds: int
    audio_s: float
    decode_s: float
    latency_s: float
    status: str


def _wait_for_outcome(r: redis.Redis, call_id: str, cursor: bytes) -> bytes:
    """Block on the event stream (no polling to compete for the CPU) until the call's
    transcript_ready / transcript_failed event."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for _, entries in r.xread({store.EVENTS: cursor}, block=1000) or []:
            for entry_id, body in entries:
                cursor = entry_id
                if body.get(b"call_id") == call_id.encode() and body.get(b"type", b"").startswith(
                        b"transcript_"):
                    return cursor
    raise TimeoutError(f"no transcript outcome for {call_id}")


def run_mode(redis_url: str, audio: dict[int, Path], var: Path, kind: str, preload: bool,
             repeat: int) -> tuple[float, Memory, list[JobResult]]:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    recordings = var / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(redis=redis_url, var=str(var), kind=kind,
                                             preload=preload)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    memory = Memory(proc.pid)
    sampler = memory.start()
    assert proc.stdout is not None
    for line in proc.stdout:  # start-up lines end with "worker <name>: queues ..."
        if line.startswith("worker "):
            break
    ready_s = time.perf_counter() - started
    time.sleep(0.3)  # let rq start its scheduler process before telling it from horses
    memory.mark_ready()
    results: list[JobResult] = []
    try:
        for n in range(repeat):
            for seconds, src in audio.items():
                call_id = f"bench-{seconds}-{n}"
                r.hset(store.call_key(call_id), mapping={
                    "id": call_id, "state": "waiting", "language": "ko",
                    "created_at": f"{time.time():.3f}"})
                wav = recordings / f"{call_id}.wav"
                shutil.copyfile(src, wav)
                last = r.xrevrange(store.EVENTS, count=1)
                cursor = last[0][0] if last else b"0-0"
                enqueued = time.time()
                enqueue_transcription(r, call_id, str(wav), "ko")
                cursor = _wait_for_outcome(r, call_id, cursor)
                status = store.field(r, call_id, "transcript_status")
                stored = float(store.field(r, call_id, "transcript_at") or "nan")
                results.append(JobResult(
                    seconds, float(store.field(r, call_id, "transcript_duration_s") or 0),
                    float(store.field(r, call_id, "transcript_decode_s") or 0),
                    stored - enqueued, status or "?"))
    finally:
        memory.stop()
        sampler.join()
        proc.send_signal(signal.SIGTERM)  # rq's warm shutdown; the process is ours
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        r.flushdb()
        r.close()
    return ready_s, memory, results


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_table(table: dict[str, tuple[float, Memory, list[JobResult]]]) -> None:
    latency = {(name, j.seconds): _mean([k.latency_s for k in jobs if k.seconds == j.seconds])
               for name, (_, _, jobs) in table.items() for j in jobs}
    print()
    print(f"{'worker':15} {'audio':>5} {'runs':>4} {'decode':>7} {'RTF':>5} "
          f"{'enqueue->stored':>15} {'not decoding':>12} {'naive/this':>10}")
    for name, (_, _, jobs) in table.items():
        for seconds in LENGTHS:
            mine = [j for j in jobs if j.seconds == seconds]
            decode = _mean([j.decode_s for j in mine])
            audio_s = _mean([j.audio_s for j in mine])
            lat = latency[(name, seconds)]
            statuses = {j.status for j in mine}
            flag = "" if statuses == {"done"} else f"  status {','.join(sorted(statuses))}"
            print(f"{name:15} {seconds:4d}s {len(mine):4d} {decode:6.2f}s {decode / audio_s:5.2f} "
                  f"{lat:14.2f}s {lat - decode:11.2f}s "
                  f"{latency[('naive', seconds)] / lat:9.2f}x{flag}")
    print()
    print(f"{'worker':15} {'ready':>6} {'worker RSS':>10} {'job RSS':>8} {'job private':>11} "
          f"{'scheduler RSS':>13} {'total PSS':>9} {'jobs forked':>11}")
    for name, (ready, mem, _) in table.items():
        horse = mem.peak_horse_rss / 1024
        print(f"{name:15} {ready:5.1f}s {mem.peak_root_rss / 1024:7.0f} MB "
              f"{(f'{horse:5.0f} MB' if horse else '-'):>8} "
              f"{(f'{mem.peak_horse_private / 1024:5.0f} MB' if horse else '-'):>11} "
              f"{mem.peak_other_rss / 1024:10.0f} MB {mem.peak_total_pss / 1024:6.0f} MB "
              f"{len(mem.horses):11d}")
    print("\nRTF = decode time / audio time. 'not decoding' = enqueue->stored minus decode: queue,")
    print("fork, model load (naive) and storing. Memory: peaks over the run, from /proc; 'job' is")
    print("a work horse (SimpleWorker has none: jobs run in the worker); PSS total counts pages")
    print("shared between worker, horse and scheduler once.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11",
                        help="a Redis database the benchmark may flush")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each length per mode")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        audio = make_audio(Path(tmp))
        table: dict[str, tuple[float, Memory, list[JobResult]]] = {}
        for name, kind, preload in MODES:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            table[name] = run_mode(args.redis, audio, Path(tmp) / name, kind, preload,
                                   args.repeat)
    print_table(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
