"""Benchmark: the supervisor panel's live queue, with 1,000 calls waiting.

Measures, in one run:

  SSE latency   from an event written to Redis (XADD to pr:events) to its arrival, parsed,
                in a connected panel's event stream (GET /queue/events), with 1, 10 and 50
                panels connected at once. Every panel receives every event; p50/p99 are
                over all deliveries.
                Baseline: the same events read by a bare Redis XREAD BLOCK client (the
                floor any Redis-fed push can reach).
  render time   server time to render GET /queue/ with 1,000 waiting calls (the Flask app
                in this process, no network). Baseline: the same page with an empty queue.

The panel runs in a child process on Werkzeug's threaded WSGI server (what
``peoples-response web`` uses: one thread per open stream), so the panels' reader threads
here don't share its interpreter lock. Events name real waiting calls, so each costs the
panel its full lookup (call hash, offers, responders).

    .venv/bin/python bench/bench_panel.py [--redis redis://127.0.0.1:6379/12] [--events 200]

Uses (and flushes) its own Redis database, 12 by default. Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crisisline import config, db  # noqa: E402
from crisisline.call import Call, Source, State  # noqa: E402
from crisisline.roster import commands  # noqa: E402
from crisisline.stores.calls import EVENTS, QUEUE, call_key, queue_score  # noqa: E402

PANELS = (1, 10, 50)
WAITING = 1000
PASSWORD = "bench passphrase " + secrets.token_hex(4)


def settings_for(var: str, url: str) -> config.Settings:
    return config.load(env={}, var_dir=var, redis_url=url)


def serve(var: str, url: str, port: int) -> None:
    """The child process: the panel on 127.0.0.1:port until killed."""
    from werkzeug.serving import make_server

    from web import create_app

    app = create_app(settings_for(var, url))
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_queue(r: redis.Redis, count: int) -> list[str]:
    now = time.time()
    ids = []
    langs = ("en", "es", "ht", "vi", "pt", "so")
    hoods = ("Dorchester", "Roxbury", "East Boston", "Mattapan", None)
    with r.pipeline(transaction=False) as pipe:
        for i in range(count):
            call = Call(id=f"bench{i:05d}", source=Source.DIRECT, language=langs[i % 6], priority=2,
                        neighborhood=hoods[i % 5], caller_number="+16175550000",
                        created_at=now - i, queued_at=now - i, state=State.WAITING)
            pipe.hset(call_key(call.id), mapping=call.to_hash())
            pipe.zadd(QUEUE, {call.id: queue_score(2, now - i)})
            ids.append(call.id)
        pipe.execute()
    return ids


def login(port: int) -> str:
    """A real log-in through the form; returns the session cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/login")
    response = conn.getresponse()
    html = response.read().decode()
    cookie = response.getheader("Set-Cookie", "").split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    body = urlencode({"name": "bench", "password": PASSWORD, "csrf_token": token})
    conn.request("POST", "/login", body, {"Cookie": cookie,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    assert response.status == 302, response.status
    return response.getheader("Set-Cookie", "").split(";")[0]


class Panel(threading.Thread):
    """One open live-queue page: reads its event stream, notes when each event arrives."""

    def __init__(self, port: int, cookie: str, after: str, arrivals: dict[str, list[float]]) -> None:
        super().__init__(daemon=True)
        self.port, self.cookie, self.after, self.arrivals = port, cookie, after, arrivals
        self.connected = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", f"/queue/events?after={self.after}", headers={"Cookie": self.cookie})
        response = conn.getresponse()
        assert response.status == 200, response.status
        event = ""
        while True:
            line = response.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: "):
                now = time.perf_counter()
                data = json.loads(text[6:])
                if event == "status" and data.get("connected"):
                    self.connected.set()
                elif event == "call":
                    seq = data["event"].get("step", "")
                    if seq == "stop":
                        return
                    with self.lock:
                        self.arrivals.setdefault(seq, []).append(now)


def write_events(r: redis.Redis, ids: list[str], count: int, spacing_s: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    for i in range(count):
        seq = f"s{i}"
        t = time.perf_counter()
        r.xadd(EVENTS, {"type": "queued", "call_id": ids[i % len(ids)], "at": f"{time.time():.3f}",
                        "step": seq})
        sent[seq] = t
        time.sleep(spacing_s)
    return sent


def pct(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), q[98]


def bare_xread(url: str, ids: list[str], count: int, spacing_s: float) -> list[float]:
    r = redis.Redis.from_url(url)
    start = r.xrevrange(EVENTS, count=1)
    last = start[0][0].decode() if start else "0-0"
    arrivals: dict[str, float] = {}

    def reader() -> None:
        client = redis.Redis.from_url(url)
        nonlocal last
        while len(arrivals) < count:
            for _, messages in client.xread({EVENTS: last}, block=1000) or []:
                for mid, fields in messages:
                    last = mid.decode()
                    arrivals[fields[b"step"].decode()] = time.perf_counter()
        client.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    sent = write_events(r, ids, count, spacing_s)
    thread.join(timeout=10)
    r.close()
    return [(arrivals[s] - t) * 1000 for s, t in sent.items() if s in arrivals]


def sse_run(url: str, port: int, cookie: str, ids: list[str], panels: int, count: int,
            spacing_s: float) -> tuple[list[float], int]:
    r = redis.Redis.from_url(url)
    start = r.xrevrange(EVENTS, count=1)
    after = start[0][0].decode() if start else "0-0"
    arrivals: dict[str, list[float]] = {}
    threads = [Panel(port, cookie, after, arrivals) for _ in range(panels)]
    for t in threads:
        t.start()
    for t in threads:
        assert t.connected.wait(10), "a panel did not connect"
    sent = write_events(r, ids, count, spacing_s)
    r.xadd(EVENTS, {"type": "bench_end", "call_id": "", "at": "0", "step": "stop"})
    for t in threads:
        t.join(timeout=20)
    r.close()
    latencies = [(a - sent[s]) * 1000 for s, times in arrivals.items() if s in sent for a in times]
    return latencies, panels * count - len(latencies)


def render_times(var: str, url: str, runs: int) -> list[float]:
    from web import create_app
    from web.auth import _fingerprint

    app = create_app(settings_for(var, url))
    client = app.test_client()
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from crisisline.users.schema import User

    with Session(app.extensions["peoples_response"].engine) as s:
        user = s.scalar(select(User).where(User.name == "bench"))
        assert user is not None
        with client.session_transaction() as sess:
            sess["user_id"], sess["fp"] = user.id, _fingerprint(user.password_hash)
    out = []
    for _ in range(runs + 2):
        t = time.perf_counter()
        response = client.get("/queue/")
        body = response.get_data()
        out.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200 and len(body) > 1000
    return out[2:]  # the first two warm the template cache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--spacing-ms", type=float, default=10.0)
    parser.add_argument("--serve", nargs=2, metavar=("VAR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.redis, int(args.serve[1]))
        return 0

    r = redis.Redis.from_url(args.redis)
    r.flushdb()
    var = tempfile.mkdtemp(prefix="bench-panel-")
    settings = settings_for(var, args.redis)
    db.upgrade(settings)
    commands.ensure_loaded(settings, ROOT / "examples" / "roster.csv")
    from web.cli import user_add

    assert user_add(settings, "bench", "supervisor", io.StringIO(PASSWORD + "\n"), io.StringIO()) == 0

    spacing = args.spacing_ms / 1000
    rows: list[tuple[str, int, float, float, str]] = []
    render_empty = render_times(var, args.redis, 20)
    ids = fill_queue(r, WAITING)
    render_full = render_times(var, args.redis, 20)

    port = free_port()
    env = {**os.environ, "PR_WEB_SECRET_KEY": secrets.token_urlsafe(32)}
    child = subprocess.Popen([sys.executable, __file__, "--redis", args.redis, "--serve", var,
                              str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        cookie = login(port)
        base = bare_xread(args.redis, ids, args.events, spacing)
        b50, b99 = pct(base)
        rows.append(("bare Redis XADD->XREAD (baseline)", len(base), b50, b99, "1.0"))
        for n in PANELS:
            lat, lost = sse_run(args.redis, port, cookie, ids, n, args.events, spacing)
            p50, p99 = pct(lat)
            note = f"{p50 / b50:.1f}" + (f"  ({lost} not delivered)" if lost else "")
            rows.append((f"SSE to {n} panel{'s' if n > 1 else ''}", len(lat), p50, p99, note))
    finally:
        child.terminate()
        child.wait(timeout=5)
        r.flushdb()
        r.close()

    e50, e99 = pct(render_empty)
    f50, f99 = pct(render_full)
    rows.append(("render /queue/, empty queue (baseline)", len(render_empty), e50, e99, "1.0"))
    rows.append((f"render /queue/, {WAITING} waiting", len(render_full), f50, f99, f"{f50 / e50:.1f}"))

    print(f"\nPanel benchmark: {WAITING} calls waiting, {args.events} events per run, "
          f"{args.spacing_ms:g} ms apart; server: Werkzeug threaded WSGI (child process)\n")
    print(f"{'measurement':<42} {'samples':>8} {'p50 ms':>9} {'p99 ms':>9}  ratio p50 vs baseline")
    for name, n, p50, p99, ratio in rows:
        print(f"{name:<42} {n:>8} {p50:>9.2f} {p99:>9.2f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
