"""The panel's view of live calls in Redis (sync client), the event fan-out for the
server-sent event streams, and supervisor commands to the dispatcher.

Key names come from the stores (crisisline.stores), never retyped here. Nothing in this
module reads a caller's number: call hashes are read field by field (HMGET) with a fixed
list that leaves it out, so the live panel can't leak it even by accident.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from crisisline.stores import sync_redis
from crisisline.stores.calls import CLAIMED, EVENTS, PREFIX, QUEUE, call_key

try:  # the offers store defines these now; keep the panel working while it lands
    from crisisline.stores.offers import COMMANDS, offers_key, responder_key
except ImportError:  # pragma: no cover - only before crisisline/stores/offers.py exists
    COMMANDS = PREFIX + "commands"

    def responder_key(rid: str) -> str:
        return f"{PREFIX}responder:{rid}"

    def offers_key(call_id: str) -> str:
        return f"{PREFIX}offers:{call_id}"

log = logging.getLogger(__name__)

# Waiting for a human: in the queue, or taken by a dispatcher that is ringing waves.
WAITING_STATES = frozenset({"waiting", "dispatching"})
# States in which responders may be ringing for a call (offers worth reading).
RINGING_STATES = frozenset({"dispatching", "bridged"})
# A call someone may join (listen or speak).
JOINABLE_STATES = WAITING_STATES | {"bridged"}
CALL_FIELDS = ("id", "source", "language", "priority", "state", "neighborhood", "created_at",
               "queued_at", "accepted_by", "accepted_at", "wave", "waves_used", "ended_at")
# Event fields a panel may see; anything else an event carries (a callback number, a
# note) stays out of the stream.
EVENT_FIELDS = ("type", "call_id", "at", "wave", "responder", "responders", "reason", "label",
                "step", "cycle")
COMMAND_MAXLEN = 10_000


@dataclass
class LiveCall:
    id: str
    source: str = ""
    language: str = ""
    neighborhood: str = ""
    state: str = ""
    priority: int = 9
    created_at: float = 0.0
    queued_at: float = 0.0
    accepted_by: str = ""
    accepted_at: float = 0.0
    wave: int = 0
    ringing: list[str] = field(default_factory=list)

    @property
    def waiting_since(self) -> float:
        return self.queued_at or self.created_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _float(value: str) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _call(values: list[Any], offers: dict[bytes, bytes]) -> LiveCall | None:
    data = dict(zip(CALL_FIELDS, (_text(v) for v in values), strict=True))
    if not data["id"]:
        return None
    ringing = sorted(_text(rid) for rid, status in offers.items()
                     if _text(status).startswith("ringing"))
    try:
        priority = int(data["priority"] or 9)
        wave = int(data["wave"] or 0)
    except ValueError:
        priority, wave = 9, 0
    return LiveCall(id=data["id"], source=data["source"], language=data["language"],
                    neighborhood=data["neighborhood"], state=data["state"], priority=priority,
                    created_at=_float(data["created_at"]), queued_at=_float(data["queued_at"]),
                    accepted_by=data["accepted_by"], accepted_at=_float(data["accepted_at"]),
                    wave=wave, ringing=ringing)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


class Live:
    """Reads for the live queue page and the event stream; writes only commands."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def calls(self, ids: Iterable[str]) -> list[LiveCall]:
        ids = list(ids)
        # Two round trips for any number of calls: the hashes, then the offers of only
        # those a dispatcher is ringing for (in a long queue most are simply waiting).
        with self.redis.pipeline(transaction=False) as pipe:
            for call_id in ids:
                pipe.hmget(call_key(call_id), CALL_FIELDS)
            hashes = pipe.execute()
        state = CALL_FIELDS.index("state")
        ringing = [i for i, h in enumerate(hashes) if _text(h[state]) in RINGING_STATES]
        offers: dict[int, dict[bytes, bytes]] = {}
        if ringing:
            with self.redis.pipeline(transaction=False) as pipe:
                for i in ringing:
                    pipe.hgetall(offers_key(ids[i]))
                offers = dict(zip(ringing, pipe.execute(), strict=True))
        out = [_call(h, offers.get(i, {})) for i, h in enumerate(hashes)]
        return [c for c in out if c is not None]

    def call(self, call_id: str) -> LiveCall | None:
        found = self.calls([call_id])
        return found[0] if found else None

    def waiting(self) -> list[LiveCall]:
        """Calls waiting for a human, most urgent first (the queue's own order)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(QUEUE, 0, -1)
            pipe.zrange(CLAIMED, 0, -1)
            queued, claimed = pipe.execute()
        ids = dict.fromkeys(_text(i) for i in [*claimed, *queued])
        calls = [c for c in self.calls(ids) if c.state in WAITING_STATES]
        return sorted(calls, key=lambda c: (c.priority, c.created_at, c.id))

    def responder_states(self, rids: Iterable[str]) -> dict[str, dict[str, str]]:
        rids = list(rids)
        with self.redis.pipeline(transaction=False) as pipe:
            for rid in rids:
                pipe.hgetall(responder_key(rid))
            rows = pipe.execute()
        return {rid: {_text(k): _text(v) for k, v in row.items()}
                for rid, row in zip(rids, rows, strict=True)}

    def active(self, states: dict[str, dict[str, str]]) -> list[LiveCall]:
        """Calls with a responder on them: found through the responders' on_call_with,
        so no scan of the keyspace is needed."""
        ids = dict.fromkeys(s["on_call_with"] for s in states.values() if s.get("on_call_with"))
        calls = [c for c in self.calls(ids) if c.state == "bridged"]
        return sorted(calls, key=lambda c: c.accepted_at)

    def last_event_id(self) -> str:
        got = self.redis.xrevrange(EVENTS, count=1)
        return _text(got[0][0]) if got else "0-0"

    def payload(self, stream_id: str, fields: dict[Any, Any]) -> dict[str, Any]:
        """What one event becomes for the panels: the event's safe fields plus the call's
        current state and the state of the responders it involves."""
        event = {k: _text(fields.get(k.encode(), fields.get(k))) for k in EVENT_FIELDS}
        event = {k: v for k, v in event.items() if v}
        out: dict[str, Any] = {"id": stream_id, "event": event, "call": None, "responders": {}}
        call = self.call(event["call_id"]) if event.get("call_id") else None
        rids = {event.get("responder", "")}
        if call is not None:
            out["call"] = call.to_json()
            rids |= {call.accepted_by, *call.ringing}
        rids.discard("")
        if rids:
            out["responders"] = self.responder_states(sorted(rids))
        return out

    def since(self, after: str, limit: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """Events after ``after`` (for a reconnecting panel); True when more than ``limit``
        were missed and the panel should reload its picture instead."""
        rows = self.redis.xrange(EVENTS, min=f"({after}", count=limit + 1)
        out = [(_text(i), self.payload(_text(i), f)) for i, f in rows[:limit]]
        return out, len(rows) > limit

    def send_command(self, type_: str, by: str, **fields: str) -> str:
        body = {"type": type_, "by": by, "at": f"{time.time():.3f}", **fields}
        return _text(self.redis.xadd(COMMANDS, body, maxlen=COMMAND_MAXLEN, approximate=True))


class Subscription:
    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=size)
        # Set when this panel fell too far behind: it gets a "resync" instead of a gap.
        self.overflowed = False


class EventHub:
    """One reader of the event stream per process, fanned out to every connected panel.

    Each event is read and looked up once, however many panels are open, so 50 panels
    cost Redis what one does. The reader thread starts with the first subscriber and
    stops after ``idle_s`` with none.
    """

    def __init__(self, url: str, idle_s: float = 30.0, queue_size: int = 2000) -> None:
        self.url = url
        self.idle_s = idle_s
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self) -> Subscription:
        sub = Subscription(self.queue_size)
        with self._lock:
            self._subs.add(sub)
            if self._thread is None or not self._thread.is_alive():
                # The reader starts from the stream's end as of now, read here and not in
                # the thread: a panel catching up to "now" (since()) then misses nothing.
                client = sync_redis(self.url, socket_timeout=10)
                try:
                    start = Live(client).last_event_id()
                finally:
                    client.close()
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, args=(start,),
                                                name="pr-event-hub", daemon=True)
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _publish(self, item: tuple[str, dict[str, Any]]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.queue.put_nowait(item)
            except queue.Full:
                sub.overflowed = True

    def _run(self, start: str) -> None:
        client = sync_redis(self.url, socket_timeout=10)
        live = Live(client)
        last = start
        down = False
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                with self._lock:
                    idle = not self._subs
                    if idle:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since > self.idle_s:
                            self._thread = None
                            return
                    else:
                        idle_since = None
                try:
                    got = client.xread({EVENTS: last}, block=1000, count=500)
                    if down:
                        # Back: reading resumes from the last event seen, so none is lost.
                        down = False
                        self._publish(("", {"id": "", "event": {"type": "redis_up"}}))
                    for _stream, messages in got or []:
                        for raw_id, fields in messages:
                            last = _text(raw_id)
                            self._publish((last, live.payload(last, fields)))
                except redis.RedisError as exc:
                    # Panels keep their last picture and say "reconnecting"; try again.
                    log.warning("event hub: Redis unavailable (%s); retrying", exc)
                    if not down:
                        down = True
                        self._publish(("", {"id": "", "event": {"type": "redis_down"}}))
                    self._stop.wait(1.0)
        finally:
            client.close()


def sse(event: str, data: dict[str, Any], event_id: str = "") -> str:
    """One server-sent event (text/event-stream framing)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
