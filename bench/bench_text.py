"""Benchmark: the text line with 200 conversations at once, texter to responder page and back.

Measures, in one run:

  delivery      from a message posted by one side's page (POST /chat/send, POST /r/c/send) to
                its arrival in the other side's waiting page (its long poll: POST /r/c/poll,
                POST /chat/poll), for every message of every conversation, both directions,
                all conversations at once (each side a thread, as a phone is one browser).
  CPU/message   CPU time the chat app's process spent (user + system, /proc) per message
                delivered, both directions.
  Baseline      the same number of messages on bare Redis pub/sub: a subscriber per
                conversation, the same concurrency, publish -> subscriber latency, and the CPU
                the publishing and subscribing process spent per message.

The chat app runs in a child process on Werkzeug's threaded server (what `peoples-response
chat` runs: a thread per request, so each waiting page holds one), with the hub waking pages
from one Redis subscription. Conversations are created through the chat page's own requests
and taken through responders' one-time links (made here as the dispatcher would, so no PBX
is needed).

    .venv/bin/python bench/bench_text.py [--redis redis://127.0.0.1:6379/13] [--conversations 200]
                                         [--rounds 5]

Uses (and flushes) its own Redis database, 13 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crisisline import config, db  # noqa: E402
from crisisline.stores.texts import TextStore, chat_key  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def settings_for(var: str, url: str, port: int) -> config.Settings:
    return config.load(env={}, var_dir=var, redis_url=url, chat_public_url=f"http://127.0.0.1:{port}",
                       text_rate_per_conversation=10_000, text_rate_per_address=1_000_000)


def serve(var: str, url: str, port: int) -> None:
    """The child process: the chat app on 127.0.0.1:port until killed."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from textline import create_app
    from textline.runtime import Runtime

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    settings = settings_for(var, url, port)
    app = create_app(settings, runtime=Runtime(settings, upkeep=False))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
    server.request_queue_size = 1024
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def request(port: int, method: str, path: str, form: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        body = urlencode(form) if form is not None else None
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        conn.request(method, path, body, hdrs)
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def pct(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), q[98]


# ---- one conversation's two phones ------------------------------------------------------------

class Conversation:
    def __init__(self, port: int, token: str, n: int) -> None:
        self.port, self.token, self.n = port, token, n
        self.key = ""
        self.cookie = ""
        self.csrf = ""
        self.call_id = ""

    def start(self) -> None:
        status, body, _ = request(self.port, "POST", "/chat/start",
                                  {"csrf_token": self.token, "language": "en",
                                   "body": f"hello from {self.n}"})
        assert status == 201, (status, body)
        self.key = json.loads(body)["key"]

    def take(self, link_path: str) -> None:
        status, _, headers = request(self.port, "POST", link_path, {})
        assert status == 303, status
        self.cookie = headers["Set-Cookie"].split(";")[0]
        status, page, _ = request(self.port, "GET", "/r/c", headers={"Cookie": self.cookie})
        self.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        status, _, _ = request(self.port, "POST", "/r/c/take", {"csrf_token": self.csrf},
                               headers={"Cookie": self.cookie})
        assert status == 303, status

    # texter side
    def texter_send(self, body: str) -> None:
        status, text, _ = request(self.port, "POST", "/chat/send",
                                  {"csrf_token": self.token, "key": self.key, "body": body})
        assert status == 202, (status, text)

    def texter_poll(self, after: str) -> dict:
        return json.loads(request(self.port, "POST", "/chat/poll",
                                  {"csrf_token": self.token, "key": self.key, "after": after})[1])

    # responder side
    def responder_send(self, body: str) -> None:
        status, text, _ = request(self.port, "POST", "/r/c/send", {"body": body},
                                  headers={"Cookie": self.cookie, "X-CSRF-Token": self.csrf})
        assert status == 202, (status, text)

    def responder_poll(self, after: str) -> dict:
        return json.loads(request(self.port, "POST", "/r/c/poll", {"after": after},
                                  headers={"Cookie": self.cookie, "X-CSRF-Token": self.csrf})[1])


def think(pace: float, rng: random.Random) -> None:
    if pace > 0:
        time.sleep(pace * rng.uniform(0.5, 1.5))


def run_conversation(c: Conversation, rounds: int, start: threading.Barrier,
                     there: list[float], back: list[float], lock: threading.Lock,
                     pace: float) -> None:
    """Texter writes, the responder's page gets it and answers, the texter's page gets that;
    ``pace``: about that many seconds between one side's message and the other's answer."""
    rng = random.Random(c.n)
    after_t = c.texter_poll("")["after"]
    after_r = c.responder_poll("")["after"]
    start.wait()
    think(pace, rng)  # people don't all start typing at the same instant
    for n in range(rounds):
        sent = time.perf_counter()
        c.texter_send(f"t|{n}|{sent!r}")
        while True:
            got = c.responder_poll(after_r)
            after_r = got["after"]
            mine = [m for m in got["messages"] if m["body"].startswith(f"t|{n}|")]
            if mine:
                arrived = time.perf_counter()
                break
        think(pace, rng)
        replied = time.perf_counter()
        c.responder_send(f"r|{n}|{replied!r}")
        while True:
            got = c.texter_poll(after_t)
            after_t = got["after"]
            if [m for m in got["messages"] if m["body"].startswith(f"r|{n}|")]:
                answered = time.perf_counter()
                break
        with lock:
            there.append((arrived - sent) * 1000)
            back.append((answered - replied) * 1000)
        think(pace, rng)


# ---- the baseline ----------------------------------------------------------------------------------

def bare_pubsub(url: str, conversations: int, rounds: int,
                pace: float) -> tuple[list[float], float]:
    """A subscriber per conversation; each publishes its next message once the last arrived
    (at the same pace as the conversations)."""
    latencies: list[float] = []
    lock = threading.Lock()
    before = time.process_time()

    def one(n: int, ready: threading.Barrier) -> None:
        client = redis.Redis.from_url(url)
        sub = client.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(f"bench:text:{n}")
        ready.wait()
        rng = random.Random(n)
        mine = []
        think(pace, rng)
        for k in range(rounds * 2):
            think(pace, rng) if k else None
            sent = time.perf_counter()
            client.publish(f"bench:text:{n}", f"{k}")
            while True:
                message = sub.get_message(timeout=30)
                if message is not None:
                    mine.append((time.perf_counter() - sent) * 1000)
                    break
        with lock:
            latencies.extend(mine)
        sub.close()
        client.close()

    ready = threading.Barrier(conversations)
    threads = [threading.Thread(target=one, args=(n, ready)) for n in range(conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = (time.process_time() - before) / max(1, len(latencies))
    return latencies, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pace", type=float, default=2.0,
                        help="seconds, about, between a message and its answer at a person's "
                             "pace (the flat-out run has none)")
    parser.add_argument("--serve", nargs=2, metavar=("VAR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.redis, int(args.serve[1]))
        return 0

    r = redis.Redis.from_url(args.redis)
    r.flushdb()
    var = tempfile.mkdtemp(prefix="bench-text-")
    port = free_port()
    settings = settings_for(var, args.redis, port)
    db.upgrade(settings)
    env = {**os.environ, "PR_CHAT_SECRET_KEY": secrets.token_urlsafe(32)}
    child = subprocess.Popen([sys.executable, __file__, "--redis", args.redis, "--serve", var,
                              str(port)], env=env, stderr=subprocess.DEVNULL)
    n = args.conversations
    results = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for label, pace in ((f"at a person's pace (~{args.pace:g} s between messages)", args.pace),
                            ("flat out (each answers at once)", 0.0)):
            results.append((label, pace, *measure(args, port, r, n, child.pid, pace)))
    finally:
        child.terminate()
        child.wait(timeout=10)

    print(f"\nText line benchmark: {n} conversations at once, {args.rounds} messages each way per "
          f"conversation, texter page <-> responder page; chat app: Werkzeug threaded WSGI (child "
          f"process), long polls woken by one Redis subscription; baseline: bare Redis PUBLISH -> "
          f"subscriber, a subscriber per conversation, same pace\n")
    print(f"{'measurement':<46} {'samples':>8} {'p50 ms':>9} {'p99 ms':>9} {'CPU µs/msg':>11}  "
          "ratio p50 (CPU) vs baseline")
    for label, pace, there, back, cpu, wall in results:
        base, base_cpu = bare_pubsub(args.redis, n, args.rounds, pace)
        b50, b99 = pct(base)
        print(f"-- {label}: {len(there) + len(back)} messages in {wall:.1f} s")
        print(f"{'  bare Redis PUBLISH -> subscriber':<46} {len(base):>8} {b50:>9.2f} {b99:>9.2f} "
              f"{base_cpu * 1e6:>11.0f}  1.0")
        for name, values in (("  texter page -> responder page", there),
                             ("  responder page -> texter page", back)):
            p50, p99 = pct(values)
            print(f"{name:<46} {len(values):>8} {p50:>9.2f} {p99:>9.2f} {'':>11}  {p50 / b50:.1f}")
        p50, p99 = pct(there + back)
        print(f"{'  both directions':<46} {len(there) + len(back):>8} {p50:>9.2f} {p99:>9.2f} "
              f"{cpu * 1e6:>11.0f}  {p50 / b50:.1f} ({cpu / base_cpu:.1f})")
    r.flushdb()
    r.close()
    print("\nCPU/msg: the chat app's process per message delivered (the sender's request and "
          "the receiver's woken poll); baseline: the publishing and subscribing process.")
    return 0


def measure(args: argparse.Namespace, port: int, r: redis.Redis, n: int, pid: int,
            pace: float) -> tuple[list[float], list[float], float, float]:
    """One run: n fresh conversations, each taken by a responder, then the messages."""
    page = request(port, "GET", "/")[1]
    token = re.search(r'data-token="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    conversations = [Conversation(port, token, i) for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: c.start(), conversations))
    for c in conversations:
        c.call_id = r.get(chat_key(c.key)).decode()  # type: ignore[union-attr]

    async def links() -> list[str]:
        from redis.asyncio import Redis

        store = TextStore(Redis.from_url(args.redis))
        out = []
        for i, c in enumerate(conversations):
            assert await store.offers.ring(c.call_id, f"responder-{c.call_id}-{i}", 1, 0)
            out.append(await store.new_link(c.call_id, f"responder-{c.call_id}-{i}", 3600))
        await store.redis.aclose()
        return out

    tokens = asyncio.run(links())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda ct: ct[0].take(f"/r/{ct[1]}"), zip(conversations, tokens, strict=True)))
    there: list[float] = []
    back: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)
    threads = [threading.Thread(target=run_conversation,
                                args=(c, args.rounds, barrier, there, back, lock, pace), daemon=True)
               for c in conversations]
    for t in threads:
        t.start()
    barrier.wait()
    cpu_before, wall = cpu_s(pid), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    cpu = (cpu_s(pid) - cpu_before) / max(1, len(there) + len(back))
    return there, back, cpu, wall


if __name__ == "__main__":
    sys.exit(main())
