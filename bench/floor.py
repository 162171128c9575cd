"""The floor of bench/bench_dispatch.py, as a process of its own: a bare AMI client that
originates the moment it sees "queued" in the event stream (no policy, no leases), ``phones``
phones per call (the roster's next ones), logged in with events off.

Its own process, as each dispatcher is: run inside the bench's process it shared one event
loop with the stand-in PBX and 500 callers, and was slowed by them as the dispatchers were
not. Events off: a session that never reads its events gets its actions answered only as
fast as the PBX can push events at it (the stand-in, like Asterisk, serves a session's
actions and events in turn).

    python -m bench.floor HOST PORT USER SECRET REDIS_URL PHONES PEOPLE
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

import redis

from crisisline.stores.calls import EVENTS
from crisisline.stores.offers import offers_key
from workers.dispatcher.originate import originate_text


def login(host: str, port: int, user: str, secret: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()  # the banner
    sock.sendall(f"Action: Login\r\nActionID: floor-login\r\nUsername: {user}\r\n"
                 f"Secret: {secret}\r\nEvents: off\r\n\r\n".encode())
    reply = b""
    while not reply.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            raise ConnectionError("AMI closed during login")
        reply += line
    if b"Response: Success" not in reply:
        raise ConnectionError(f"AMI login refused: {reply.decode(errors='replace')}")
    sock.settimeout(None)
    # The Originates' replies are read and dropped, so the PBX never waits on us.
    threading.Thread(target=_drain, args=(sock,), daemon=True).start()
    return sock


def _drain(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def originate(call_id: str, rid: str, n: int) -> bytes:
    """The same Originate a dispatcher writes (workers/dispatcher/originate.py)."""
    return originate_text(f"floor-{n}", [
        ("Channel", f"PJSIP/{rid}"), ("Context", "pr-responder"), ("Exten", "s"),
        ("Priority", "1"), ("Async", "true"), ("ChannelId", f"pr-{call_id}-0-1-{rid}"),
        ("Variable", f"PR_CALL_ID={call_id}"), ("Variable", f"PR_RESPONDER={rid}")])


def main(argv: list[str]) -> None:
    host, port, user, secret, url, phones, people = argv
    r = redis.Redis.from_url(url)
    sock = login(host, int(port), user, secret)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("floor: AMI logged in", flush=True)
    last, n = "$", 0
    while not stop.is_set():
        got = r.xread({EVENTS: last}, count=100, block=200)
        for _, entries in got or []:
            for eid, body in entries:
                last = eid
                if body.get(b"type") != b"queued":
                    continue
                call_id = body[b"call_id"].decode()
                rids = [f"r{(n + i) % int(people):04d}" for i in range(int(phones))]
                # The one piece of state the whisper needs: an open offer to accept.
                r.hset(offers_key(call_id), mapping={rid: "ringing:1" for rid in rids})
                sock.sendall(b"".join(originate(call_id, rid, n + i)
                                      for i, rid in enumerate(rids)))
                n += int(phones)
    sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
