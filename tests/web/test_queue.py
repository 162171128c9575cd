"""The supervisor's live queue: the page, the event stream, actions, callbacks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Source
from crisisline.records.schema import CallbackRequest
from crisisline.users.schema import AuditEntry
from tests.web.conftest import accept, add_record, new_call
from web.live import COMMANDS

TOKEN = "token-supervisor"  # what conftest.logged_in puts in the session


def commands(url: str) -> list[dict[str, str]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [fields for _, fields in r.xrange(COMMANDS)]
    finally:
        r.close()


def test_queue_page_shows_waiting_calls_in_order_without_numbers(
        clients: dict[str, FlaskClient], redis_url: str) -> None:
    new_call(redis_url, "direct1", language="es", neighborhood="Dorchester")
    new_call(redis_url, "nine11", language="en", neighborhood=None, source=Source.NINE_ONE_ONE,
             priority=0)
    html = clients["supervisor"].get("/queue/").get_data(as_text=True)
    assert 'id="w-direct1"' in html and 'id="w-nine11"' in html
    assert html.index('id="w-nine11"') < html.index('id="w-direct1"')  # 911 first
    assert "Spanish" in html and "Dorchester" in html and "911 transfer" in html
    assert 'aria-live="polite"' in html
    assert "+1617555" not in html  # caller numbers never on the live page
    assert "Rosa Delgado" in html  # responders listed with their state
    assert '<th scope="col">Waiting</th>' in html


def test_taken_call_moves_to_active_and_responder_is_on_a_call(
        clients: dict[str, FlaskClient], redis_url: str) -> None:
    new_call(redis_url, "c1")
    accept(redis_url, "c1", "rosa-delgado")
    html = clients["supervisor"].get("/queue/").get_data(as_text=True)
    assert 'id="w-c1"' not in html and 'id="a-c1"' in html
    row = html[html.index('id="r-rosa-delgado"'):]
    assert "on a call" in row[:row.index("</tr>")]


def read_events(response: object, until: str, limit_s: float = 5.0) -> Iterator[dict]:
    deadline = time.monotonic() + limit_s
    buffer = ""
    for chunk in response.response:  # type: ignore[attr-defined]
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line
                         and not line.startswith(":"))
            if lines.get("event") == "call":
                payload = json.loads(lines["data"])
                yield payload
                if payload["event"]["type"] == until:
                    return
        assert time.monotonic() < deadline, "event did not arrive"


def test_event_stream_catches_up_then_follows_live(clients: dict[str, FlaskClient],
                                                   app: Flask, redis_url: str) -> None:
    last = app.extensions["peoples_response"].live.last_event_id()
    new_call(redis_url, "s1", caller_number="+16175550142")
    response = clients["supervisor"].get(f"/queue/events?after={last}")
    try:
        assert response.mimetype == "text/event-stream"
        seen = list(read_events(response, until="queued"))
        assert [p["event"]["type"] for p in seen] == ["call_started", "queued"]
        assert seen[-1]["call"]["state"] == "waiting"
        accept(redis_url, "s1", "tuan-nguyen")  # written after connecting: via the hub
        later = list(read_events(response, until="accepted"))
        assert later[-1]["call"]["state"] == "bridged"
        assert later[-1]["call"]["accepted_by"] == "tuan-nguyen"
        assert later[-1]["responders"]["tuan-nguyen"]["on_call_with"] == "s1"
        assert "5550142" not in json.dumps(seen + later)
    finally:
        response.close()


def test_ring_responder_and_team_write_commands(clients: dict[str, FlaskClient],
                                                redis_url: str) -> None:
    new_call(redis_url, "r1")
    sup = clients["supervisor"]
    ok = sup.post("/queue/calls/r1/ring", data={"csrf_token": TOKEN, "target": "responder",
                                                 "responder_id": "rosa-delgado"})
    assert ok.status_code == 302
    ok = sup.post("/queue/calls/r1/ring", data={"csrf_token": TOKEN, "target": "team",
                                                 "team_id": "central"})
    assert ok.status_code == 302
    got = commands(redis_url)
    assert [(c["type"], c.get("responder_id"), c.get("team_id"), c["by"], c["call_id"])
            for c in got] == [("ring_responder", "rosa-delgado", None, "supervisor", "r1"),
                              ("ring_team", None, "central", "supervisor", "r1")]
    assert all(float(c["at"]) > 0 for c in got)


def test_ring_refuses_unknown_targets_and_calls_no_longer_waiting(
        clients: dict[str, FlaskClient], redis_url: str) -> None:
    new_call(redis_url, "r2")
    sup = clients["supervisor"]
    bad = sup.post("/queue/calls/r2/ring", data={"csrf_token": TOKEN, "target": "responder",
                                                  "responder_id": "nobody"})
    assert bad.status_code == 422
    assert 'id="e-responder_id"' in bad.get_data(as_text=True)
    bad = sup.post("/queue/calls/r2/ring", data={"csrf_token": TOKEN, "target": "team",
                                                  "team_id": "police"})
    assert bad.status_code == 422
    assert sup.post("/queue/calls/gone/ring", data={"csrf_token": TOKEN, "target": "team",
                                                     "team_id": "central"}).status_code == 404
    accept(redis_url, "r2", "rosa-delgado")
    bad = sup.post("/queue/calls/r2/ring", data={"csrf_token": TOKEN, "target": "team",
                                                  "team_id": "central"})
    assert bad.status_code == 422 and b"no longer waiting" in bad.data
    assert commands(redis_url) == []


def test_join_refuses_emergency_and_police_numbers(clients: dict[str, FlaskClient],
                                                   redis_url: str) -> None:
    new_call(redis_url, "j1")
    sup = clients["supervisor"]
    for phone in ("911", "+1 617 343 4500", "12", ""):
        bad = sup.post("/queue/calls/j1/join", data={"csrf_token": TOKEN, "phone": phone,
                                                      "mode": "listen"})
        assert bad.status_code == 422, phone
        assert 'id="e-phone"' in bad.get_data(as_text=True)
    bad = sup.post("/queue/calls/j1/join", data={"csrf_token": TOKEN, "phone": "617-555-0150",
                                                  "mode": "shout"})
    assert bad.status_code == 422 and 'id="e-mode"' in bad.get_data(as_text=True)
    assert commands(redis_url) == []
    ok = sup.post("/queue/calls/j1/join", data={"csrf_token": TOKEN, "phone": "617-555-0150",
                                                 "mode": "speak"})
    assert ok.status_code == 302
    [command] = commands(redis_url)
    assert command["type"] == "join_room" and command["phone"] == "+16175550150"
    assert command["mode"] == "speak" and command["call_id"] == "j1"


def audit_rows(settings: config.Settings) -> list[AuditEntry]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return list(s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))
    finally:
        engine.dispose()


def test_an_old_open_request_is_listed_audited_and_closed_by_cancel_once(
        clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    """A row from before the line worked callbacks itself ("waiting", nothing in Redis): the
    line will not call it, so supervisors see it, may read the number (audited), and close it
    with Cancel and a short reason (what "Mark done" was)."""
    add_record(web_settings, "cb1", outcome="callback", callback=True,
               caller_number="+16175550177")
    sup = clients["supervisor"]
    page = sup.get("/queue/").get_data(as_text=True)
    assert 'id="unheld-cb1"' in page and "5550177" not in page
    assert "5550177" not in sup.get("/queue/callbacks/cb1").get_data(as_text=True)
    assert audit_rows(web_settings) == []
    shown = sup.post("/queue/callbacks/cb1/number", data={"csrf_token": TOKEN})
    assert "+16175550177" in shown.get_data(as_text=True)
    [row] = audit_rows(web_settings)
    assert (row.user_name, row.action, row.call_id) == ("supervisor", "view_caller_number", "cb1")
    empty = sup.post("/queue/callbacks/cb1/cancel", data={"csrf_token": TOKEN, "reason": " "})
    assert empty.status_code == 422 and 'id="e-reason"' in empty.get_data(as_text=True)
    long = sup.post("/queue/callbacks/cb1/cancel", data={"csrf_token": TOKEN, "reason": "x" * 201})
    assert long.status_code == 422 and "200 characters" in long.get_data(as_text=True)
    done = sup.post("/queue/callbacks/cb1/cancel", data={"csrf_token": TOKEN, "reason": "reached"})
    assert done.status_code == 302
    again = sup.post("/queue/callbacks/cb1/cancel", data={"csrf_token": TOKEN, "reason": "twice"})
    assert again.status_code == 409 and b"already over" in again.data
    engine = db.engine_for(web_settings)
    with Session(engine) as s:
        cb = s.get(CallbackRequest, "cb1")
        assert cb is not None
        assert (cb.status, cb.outcome, cb.done_by) == ("cancelled", "reached", "supervisor")
        assert cb.ended_at is not None
    engine.dispose()
    assert [(r.action, r.detail) for r in audit_rows(web_settings)][1:] == [
        ("callback_cancel", "reached")]
    assert 'id="unheld-cb1"' not in sup.get("/queue/").get_data(as_text=True)


def test_queue_page_at_a_thousand_waiting_calls(clients: dict[str, FlaskClient],
                                                redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    from crisisline.call import Call
    from crisisline.stores.calls import QUEUE, call_key, queue_score

    now = time.time()
    with r.pipeline() as pipe:
        for i in range(1000):
            call = Call(id=f"k{i:04d}", source=Source.DIRECT, language="en", priority=2,
                        created_at=now - i, queued_at=now - i)
            call.state = call.state.WAITING
            pipe.hset(call_key(call.id), mapping=call.to_hash())
            pipe.zadd(QUEUE, {call.id: queue_score(2, now - i)})
        pipe.execute()
    r.close()
    html = clients["supervisor"].get("/queue/").get_data(as_text=True)
    assert html.count('<tr id="w-k') == 1000
    assert html.index('id="w-k0999"') < html.index('id="w-k0000"')  # oldest first
