"""The panel and text conversations: the live queue, the audited Show (live, from Redis; in
history, from SQL), stepping in, desk phones' offers, and the oversight report by channel."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Call, Source
from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallRecord
from crisisline.stores.texts import TextStore, messages_key
from crisisline.users.schema import AuditEntry
from tests.web.conftest import add_record

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)> \u202eevil'


def run(coro):
    return asyncio.run(coro)


def conversation(url: str, call_id: str, channel: str = "chat", language: str = "vi",
                 words: tuple[str, ...] = (PAYLOAD,)) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(url)
        store = TextStore(client)
        try:
            call = Call(id=call_id, source=Source.TEXT, language=language, priority=2,
                        neighborhood="Dorchester", extra={"channel": channel, "stage": "open"},
                        caller_number="+17815550142" if channel == "sms" else None)
            await store.create(call)
            await store.queue(call_id)
            for body in words:
                await store.add(call_id, "texter", body)
        finally:
            await client.aclose()
    run(go())


def audits(app, action: str) -> list[AuditEntry]:
    with Session(app.extensions["peoples_response"].engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_conversation_is_in_the_live_queue_as_a_text(clients: dict[str, FlaskClient],
                                                       redis_url: str) -> None:
    conversation(redis_url, "txt1")
    page = clients["supervisor"].get("/queue/").get_data(as_text=True)
    assert 'id="w-txt1"' in page and "Text (SMS or chat)" in page and "Vietnamese" in page
    assert "alert" not in page  # nothing of what they wrote


def test_reading_a_live_conversation_is_audited_first(app, clients: dict[str, FlaskClient],
                                                     redis_url: str) -> None:
    conversation(redis_url, "txt2")
    sup = clients["supervisor"]
    page = sup.get("/queue/calls/txt2").get_data(as_text=True)
    assert "Show the conversation" in page and "Ring me into the call" not in page
    assert "alert" not in page and audits(app, "view_conversation") == []
    assert sup.get("/queue/calls/txt2/conversation").status_code == 405  # a link shows nothing
    assert clients["oversight"].post("/queue/calls/txt2/conversation",
                                     data={"csrf_token": "token-oversight"}).status_code == 403
    shown = sup.post("/queue/calls/txt2/conversation", data={"csrf_token": "token-supervisor"})
    html = shown.get_data(as_text=True)
    assert shown.status_code == 200 and 'id="revealed-conversation"' in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html and "<script>alert" not in html
    [entry] = audits(app, "view_conversation")
    assert (entry.user_name, entry.call_id) == ("supervisor", "txt2")


def test_a_supervisor_steps_in_by_writing_as_themselves(clients: dict[str, FlaskClient],
                                                        redis_url: str) -> None:
    import redis

    conversation(redis_url, "txt3")
    sup = clients["supervisor"]
    refused = sup.post("/queue/calls/txt3/text", data={"csrf_token": "token-supervisor", "body": " "})
    assert refused.status_code == 422
    sent = sup.post("/queue/calls/txt3/text", data={"csrf_token": "token-supervisor",
                                                     "body": "Hola, soy supervisora."})
    assert sent.status_code == 302
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hget("pr:call:txt3", "accepted_by") == "supervisor:supervisor"
    assert r.hget("pr:call:txt3", "state") == "bridged"
    last = r.xrange(messages_key("txt3"))[-1][1]
    assert (last["sender"], last["author"], last["body"]) == ("supervisor", "supervisor",
                                                              "Hola, soy supervisora.")
    joined = sup.post("/queue/calls/txt3/join", data={"csrf_token": "token-supervisor",
                                                       "phone": "PJSIP/desk", "mode": "speak"})
    assert joined.status_code == 422 and "no room to join" in joined.get_data(as_text=True)


def test_history_shows_a_finished_conversation_only_through_an_audited_show(
        app, clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    add_record(web_settings, "txt4", source="text", transcript=None, caller_number="+17815550142")
    engine = db.engine_for(web_settings)
    with Session(engine) as s, s.begin():
        s.get(CallRecord, "txt4").channel = "sms"
        sql_texts.archive(s, "txt4", [("1-0", {"sender": "texter", "body": PAYLOAD, "at": "1796200000"}),
                                      ("2-0", {"sender": "responder", "author": "rosa-delgado",
                                               "body": "Estoy aquí", "at": "1796200005"})])
    engine.dispose()
    sup = clients["supervisor"]
    page = sup.get("/history/calls/txt4").get_data(as_text=True)
    assert "Text (SMS or chat) (sms)" in page and "Show the conversation" in page
    assert "Estoy aquí" not in page and "Show the transcript" not in page
    assert "Show it" in sup.get("/history/calls/txt4/conversation").get_data(as_text=True)
    shown = sup.post("/history/calls/txt4/conversation", data={"csrf_token": "token-supervisor"})
    html = shown.get_data(as_text=True)
    assert "Estoy aquí" in html and "&lt;script&gt;" in html and "<script>alert" not in html
    assert [e.call_id for e in audits(app, "view_conversation")] == ["txt4"]
    assert "text" in sup.get("/history/?source=text").get_data(as_text=True)
    assert sup.get("/history/?source=text").status_code == 200


def test_desk_phones_take_their_text_offers_from_the_panel(clients: dict[str, FlaskClient],
                                                            redis_url: str,
                                                            web_settings: config.Settings) -> None:
    conversation(redis_url, "txt5", words=("hello",))

    async def offer() -> str:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await TextStore(client).new_link("txt5", "rosa-delgado", 900, desk=True)
        finally:
            await client.aclose()

    token = run(offer())
    page = clients["supervisor"].get("/queue/desk-texts").get_data(as_text=True)
    assert "Rosa Delgado" in page and f"{web_settings.chat_url}/r/{token}" in page
    assert "hello" not in page
    assert clients["admin"].get("/queue/desk-texts").status_code == 403


def test_the_oversight_report_counts_texts_by_channel(clients: dict[str, FlaskClient],
                                                      web_settings: config.Settings) -> None:
    started = datetime.now(UTC) - timedelta(hours=2)
    for n in range(11):
        add_record(web_settings, f"rep{n}", source="text", started=started)
    engine = db.engine_for(web_settings)
    with Session(engine) as s, s.begin():
        for n in range(11):
            s.get(CallRecord, f"rep{n}").channel = "sms" if n < 6 else "chat"
    engine.dispose()
    page = clients["oversight"].get("/oversight/").get_data(as_text=True)
    assert "Text conversations by channel" in page and "Text (SMS or chat)" in page
    csv = clients["oversight"].get("/oversight/report.csv").get_data(as_text=True)
    assert "Text conversations by channel,sms,6" in csv
    assert "Text conversations by channel,chat,5" in csv
    assert "Calls by source,text,11" in csv
    assert "+1781" not in csv and "alert" not in csv
