"""Callback requests in the panel: what supervisors see (place, age, attempts, next try, the
safety answers in words; never the number), the audited number, Start now, Ring a responder,
Cancel, failed requests, the call history, and the oversight report's figures.

Requests are made through the real stores on the test Redis (tests/callback_helpers.py);
the clock that says who is on call is pinned (a Tuesday at 19:00)."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from crisisline import callbacks as cb
from crisisline import config, db
from crisisline.records.schema import CallbackRequest
from crisisline.stores.callbacks import LATER
from crisisline.stores.calls import QUEUE
from crisisline.users.schema import AuditEntry
from tests.callback_helpers import NUMBER, Line, record, run
from tests.web.conftest import add_record
from web.live import COMMANDS

TOKEN = "token-supervisor"
OTHER = "+17815550199"
# Rosa Delgado and Omar Haddad work Tuesdays 15:00-23:00, Keisha Williams 07:00-15:00.
PINNED = "2026-12-01 19:00"


@pytest.fixture
def web_settings(web_settings: config.Settings) -> config.Settings:
    return dataclasses.replace(web_settings, clock=PINNED)


def audit_rows(settings: config.Settings) -> list[tuple[str, str, str | None, str | None]]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return [(a.user_name, a.action, a.call_id, a.detail)
                    for a in s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]
    finally:
        engine.dispose()


def commands(url: str) -> list[dict[str, str]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [fields for _, fields in r.xrange(COMMANDS)]
    finally:
        r.close()


def call_hash(url: str, call_id: str) -> dict[str, str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return r.hgetall(f"pr:call:{call_id}")
    finally:
        r.close()


def row_html(html: str, row_id: str) -> str:
    start = html.index(f'id="{row_id}"')
    return html[start:html.index("</tr>", start)]


def sql_row(settings: config.Settings, call_id: str) -> CallbackRequest:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            found = s.get(CallbackRequest, call_id)
            assert found is not None
            return found
    finally:
        engine.dispose()


def recorded(settings: config.Settings) -> None:
    engine = db.engine_for(settings)
    try:
        run(record(settings.effective_redis_url, engine))
    finally:
        engine.dispose()


@pytest.fixture
def line_up(redis_url: str) -> dict[str, float]:
    """In queue order: a plain call, a pending request (another number, a message allowed),
    a request waiting for its second try, a later call, and a request being dialled."""
    now = time.time()

    async def go() -> dict[str, float]:
        async with Line(redis_url) as line:
            await line.waiting_call("first", now - 500)
            await line.pending("cbp", now - 400, number=OTHER, safe_here=False, message_ok=True,
                               language="vi", neighborhood="Roxbury")
            await line.pending("cbl", now - 300, safe_here=None)
            nxt = await line.attempt_fails("cbl", "rosa-delgado")
            await line.waiting_call("later", now - 200)
            await line.pending("cbc", now - 100, number="+16175550111")
            await line.calling("cbc", "omar-haddad")
            return {"retry_at": nxt.retry_at}

    return run(go())


def test_the_queue_shows_requests_in_place_with_attempts_and_answers_never_the_number(
        clients: dict[str, FlaskClient], web_settings: config.Settings,
        line_up: dict[str, float]) -> None:
    html = clients["supervisor"].get("/queue/").get_data(as_text=True)
    assert "5550142" not in html and "5550199" not in html and "5550111" not in html
    assert 'id="callbacks-count">3<' in html
    pending = row_html(html, "cb-cbp")
    assert '<td class="num cb-place">2</td>' in pending  # behind "first", ahead of the rest
    assert "the caller left: waiting for a responder" in pending
    assert "gave another number; a message may be left" in pending
    assert "Vietnamese" in pending and "Roxbury" in pending
    assert '<td class="num cb-attempts">0</td>' in pending
    later = row_html(html, "cb-cbl")
    assert '<td class="num cb-place">3</td>' in later  # waiting for its try, still in its place
    assert "waiting for the next try (last try: no answer)" in later
    assert '<td class="num cb-attempts">1</td>' in later
    retry = datetime.fromtimestamp(line_up["retry_at"], web_settings.zone).strftime("%H:%M:%S")
    assert f'<td class="cb-next">{retry}</td>' in later
    assert "number withheld; no message" in later
    calling = row_html(html, "cb-cbc")
    assert '<td class="num cb-place">—</td>' in calling
    assert "calling now: Omar Haddad first, then the caller" in calling
    assert html.index('id="cb-cbp"') < html.index('id="cb-cbl"') < html.index('id="cb-cbc"')
    page = clients["supervisor"].get("/queue/callbacks/cbl").get_data(as_text=True)
    assert 'id="cb-place">3 ' in page and "5550142" not in page
    assert "Start now" in page and "Ring this responder now" in page


def test_showing_the_number_is_audited_first(clients: dict[str, FlaskClient],
                                             web_settings: config.Settings,
                                             line_up: dict[str, float]) -> None:
    sup = clients["supervisor"]
    assert sup.post("/queue/callbacks/cbp/number").status_code == 400  # no CSRF token
    assert audit_rows(web_settings) == []
    shown = sup.post("/queue/callbacks/cbp/number", data={"csrf_token": TOKEN})
    assert f'<strong id="callback-number">{OTHER}</strong>' in shown.get_data(as_text=True)
    assert audit_rows(web_settings) == [("supervisor", "view_caller_number", "cbp",
                                         "callback request")]
    assert sup.post("/queue/callbacks/nobody/number", data={"csrf_token": TOKEN}).status_code == 404


def test_start_now_puts_a_request_waiting_for_its_try_back_in_its_place(
        clients: dict[str, FlaskClient], web_settings: config.Settings, redis_url: str,
        line_up: dict[str, float]) -> None:
    sup = clients["supervisor"]
    assert sup.post("/queue/callbacks/cbl/start").status_code == 400
    for call_id in ("cbp", "cbc"):  # already in the queue; being dialled
        refused = sup.post(f"/queue/callbacks/{call_id}/start", data={"csrf_token": TOKEN})
        assert refused.status_code == 409 and b'id="e-start"' in refused.data
    assert sup.post("/queue/callbacks/nobody/start", data={"csrf_token": TOKEN}).status_code == 404
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert r.zscore(LATER, "cbl") is not None and r.zscore(QUEUE, "cbl") is None
        ok = sup.post("/queue/callbacks/cbl/start", data={"csrf_token": TOKEN})
        assert ok.status_code == 302
        assert r.zscore(LATER, "cbl") is None
        assert r.zscore(QUEUE, "cbl") == float(r.hget("pr:call:cbl", "queue_score"))
        assert r.zrange(QUEUE, 0, -1) == ["first", "cbp", "cbl", "later"]
    finally:
        r.close()
    again = sup.post("/queue/callbacks/cbl/start", data={"csrf_token": TOKEN})
    assert again.status_code == 409
    assert [a[1:3] for a in audit_rows(web_settings)] == [("callback_start_now", "cbl")]
    assert commands(redis_url) == []  # done by the store's script, not the dispatcher


def test_ring_a_responder_sends_the_dispatcher_an_on_call_responder(
        clients: dict[str, FlaskClient], web_settings: config.Settings, redis_url: str,
        line_up: dict[str, float]) -> None:
    sup = clients["supervisor"]
    page = sup.get("/queue/callbacks/cbp").get_data(as_text=True)
    assert '<option value="rosa-delgado">' in page and "keisha-williams" not in page
    for rid in ("nobody", "keisha-williams", ""):  # unknown; off shift at 19:00; none
        bad = sup.post("/queue/callbacks/cbp/ring", data={"csrf_token": TOKEN, "responder_id": rid})
        assert bad.status_code == 422 and b'id="e-responder_id"' in bad.data
    busy = sup.post("/queue/callbacks/cbc/ring", data={"csrf_token": TOKEN,
                                                        "responder_id": "rosa-delgado"})
    assert busy.status_code == 409 and b"already calling" in busy.data
    assert sup.post("/queue/callbacks/cbp/ring",
                    data={"responder_id": "rosa-delgado"}).status_code == 400
    assert commands(redis_url) == []
    ok = sup.post("/queue/callbacks/cbl/ring", data={"csrf_token": TOKEN,
                                                      "responder_id": "rosa-delgado"})
    assert ok.status_code == 302
    [command] = commands(redis_url)
    assert (command["type"], command["call_id"], command["responder_id"], command["by"]) == (
        "ring_responder", "cbl", "rosa-delgado", "supervisor")
    assert [a[1:] for a in audit_rows(web_settings)] == [("callback_ring", "cbl", "rosa-delgado")]


def test_cancel_needs_a_short_reason_and_is_refused_while_dialling(
        clients: dict[str, FlaskClient], web_settings: config.Settings, redis_url: str,
        line_up: dict[str, float]) -> None:
    sup = clients["supervisor"]
    recorded(web_settings)
    assert sup.post("/queue/callbacks/cbp/cancel", data={"reason": "ok"}).status_code == 400
    long = sup.post("/queue/callbacks/cbp/cancel", data={"csrf_token": TOKEN, "reason": "x" * 201})
    assert long.status_code == 422 and b'id="e-reason"' in long.data
    empty = sup.post("/queue/callbacks/cbp/cancel", data={"csrf_token": TOKEN, "reason": ""})
    assert empty.status_code == 422
    dialling = sup.post("/queue/callbacks/cbc/cancel", data={"csrf_token": TOKEN,
                                                              "reason": "reached"})
    assert dialling.status_code == 409 and b"dialling the caller right now" in dialling.data
    assert call_hash(redis_url, "cbc")["cb_state"] == "calling"
    assert sup.post("/queue/callbacks/nobody/cancel",
                    data={"csrf_token": TOKEN, "reason": "x"}).status_code == 404
    assert audit_rows(web_settings) == []

    ok = sup.post("/queue/callbacks/cbp/cancel", data={"csrf_token": TOKEN,
                                                        "reason": "  reached from the desk "})
    assert ok.status_code == 302
    data = call_hash(redis_url, "cbp")
    assert (data["cb_state"], data["cb_outcome"], data["state"]) == ("done", "cancelled", "cancelled")
    assert data["cb_cancelled_by"] == "supervisor"
    again = sup.post("/queue/callbacks/cbp/cancel", data={"csrf_token": TOKEN, "reason": "twice"})
    assert again.status_code == 409 and b"already over" in again.data
    assert [a[1:] for a in audit_rows(web_settings)] == [
        ("callback_cancel", "cbp", "reached from the desk")]
    recorded(web_settings)
    cancelled = sql_row(web_settings, "cbp")
    assert (cancelled.status, cancelled.outcome, cancelled.done_by, cancelled.number) == (
        "cancelled", "reached from the desk", "supervisor", None)
    html = sup.get("/queue/").get_data(as_text=True)
    assert 'id="cb-cbp"' not in html and 'id="callbacks-count">2<' in html


def test_failed_requests_are_listed_and_the_history_tells_their_attempts(
        clients: dict[str, FlaskClient], web_settings: config.Settings, redis_url: str) -> None:
    async def go() -> None:
        async with Line(redis_url) as line:
            await line.pending("gone", time.time() - 900, message_ok=True)
            await line.attempt_fails("gone", "rosa-delgado", cb.BUSY, attempts=2)
            assert await line.callbacks.start_now("gone")
            await line.attempt_fails("gone", "rosa-delgado", cb.MESSAGE_LEFT, attempts=2)

    run(go())
    recorded(web_settings)
    sup = clients["supervisor"]
    html = sup.get("/queue/").get_data(as_text=True)
    failed = row_html(html, "failed-gone")
    assert '<td class="num">2</td>' in failed
    assert "a machine answered (the line&#39;s message was left)" in failed
    assert "/history/calls/gone" in failed and 'id="cb-gone"' not in html
    history = sup.get("/history/calls/gone").get_data(as_text=True)
    assert ('id="callback-summary">failed: nobody answered; 2 attempts; the last: a machine '
            "answered (the line&#39;s message was left); the line&#39;s message was left<") in history
    assert NUMBER not in history and NUMBER not in html
    page = sup.get("/queue/callbacks/gone").get_data(as_text=True)
    assert "Cancel this request" not in page and "Show the caller" not in page
    refused = sup.post("/queue/callbacks/gone/cancel", data={"csrf_token": TOKEN, "reason": "x"})
    assert refused.status_code == 409


def test_the_report_counts_callbacks_and_their_time_to_a_person(
        clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    month = datetime.now(UTC).replace(day=1, hour=15, minute=0, second=0, microsecond=0)
    rows = ([("bridged", 60.0 * (i + 1)) for i in range(6)] + [("failed", None)] * 2
            + [("cancelled", None), ("done", None), ("fallback_answered", None), ("open", None)])
    for i, (status, seconds) in enumerate(rows):
        add_record(web_settings, f"k{i}", started=month + timedelta(minutes=i), outcome="callback",
                   callback=True, caller_number=f"+1617555{i:04d}")
        engine = db.engine_for(web_settings)
        with Session(engine) as s, s.begin():
            found = s.get(CallbackRequest, f"k{i}")
            found.status, found.time_to_human_s = status, seconds
        engine.dispose()
    html = clients["oversight"].get("/oversight/").get_data(as_text=True)
    assert 'id="callbacks-requested">12<' in html
    table = html[html.index('id="callback-outcomes"'):]
    table = table[:table.index("</table>")]
    assert '<th scope="row">completed</th><td class="num">6</td>' in table
    assert '<th scope="row">failed</th><td class="num">&lt;5</td>' in table
    assert '<th scope="row">cancelled</th><td class="num">&lt;5</td>' in table  # one + an old "done"
    timing = html[html.index('id="callback-time"'):]
    assert "3 min 30 s" in timing[:timing.index("</table>")]  # the median of 1..6 minutes
    assert "+1617555" not in html
    text = clients["oversight"].get("/oversight/report.csv").get_data(as_text=True)
    got = list(csv.reader(io.StringIO(text)))
    assert ["callback requests", "requested", "12"] in got
    assert ["Callback requests by how they ended", "completed", "6"] in got
    assert ["Callback requests by how they ended", "still open", "<5"] in got
    title = "callbacks: time from the request to a person"
    assert [title, "requests that reached a person", "6"] in got
    assert [title, "median seconds", "210.0"] in got
    assert any(r[:2] == [title, "90th percentile seconds"] and float(r[2]) > 300 for r in got)
    assert "+1617555" not in text
