"""Conversations in Redis (crisisline.stores.texts) and in SQL (crisisline.records.texts, the
recorder's copy, erasure, retention), on a real Redis and on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Call, Source
from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallEvent, CallRecord, TextMessage
from crisisline.stores.texts import TextStore, messages_key
from workers.dispatcher.recorder import Recorder


async def store_for(url: str) -> TextStore:
    return TextStore(aioredis.Redis.from_url(url))


def conversation(call_id: str = "conv1", number: str | None = "+17815550142") -> Call:
    return Call(id=call_id, source=Source.TEXT, language="es", priority=2, caller_number=number,
                extra={"channel": "sms", "stage": "open"})


# ---- Redis ----------------------------------------------------------------------------------

async def test_messages_events_and_erasure(redis_url: str) -> None:
    store = await store_for(redis_url)
    try:
        assert await store.add("nobody", "texter", "hello") is None  # no such conversation
        await store.create(conversation(), number="+17815550142")
        assert await store.by_number("+17815550142") == "conv1"
        first = await store.add("conv1", "texter", "necesito ayuda")
        await store.add("conv1", "responder", "Estoy aquí", author="ana")
        rows = await store.messages("conv1")
        assert [(m["sender"], m["author"], m["body"]) for _, m in rows] == [
            ("texter", "", "necesito ayuda"), ("responder", "ana", "Estoy aquí")]
        assert [m["body"] for _, m in await store.messages("conv1", after=first)] == ["Estoy aquí"]
        events = [e for _, e in await store.redis.xrange("pr:events")]
        words = [e for e in events if b"necesito" in b"".join(e.values())]
        assert not words  # events say who wrote, never what
        assert [e[b"sender"] for e in events if e[b"type"] == b"text_message"] == [b"texter", b"responder"]

        await store.erase("conv1", retention_days=30)
        assert await store.erased("conv1")
        assert not await store.redis.exists(messages_key("conv1"))
        assert await store.by_number("+17815550142") is None
        data = await store.hash("conv1")
        assert "caller_number" not in data and data["language"] == "es"
        assert await store.add("conv1", "texter", "again") is None  # nothing written back
    finally:
        await store.redis.aclose()


async def test_one_time_links_sessions_sids_optouts_and_rates(redis_url: str) -> None:
    store = await store_for(redis_url)
    try:
        await store.create(conversation())
        token = await store.new_link("conv1", "ana", 60)
        other = await store.new_link("conv1", "ben", 60, desk=True)
        assert (await store.link(token))["status"] == "open"
        assert await store.desk_offers() == [(other, "conv1", "ben")]
        assert await store.use_link(token) == ("conv1", "ana")
        assert await store.use_link(token) is None  # works once
        assert (await store.link(token))["status"] == "used"
        assert await store.close_link("conv1", "ben")
        assert (await store.link(other))["status"] == "closed" and await store.desk_offers() == []
        assert await store.use_link(other) is None
        assert await store.use_link("no-such-token") is None and await store.link("x" * 200) == {}

        sid = await store.new_session("conv1", "ana", 60)
        session = await store.session(sid)
        assert session["call_id"] == "conv1" and session["rid"] == "ana" and len(session["csrf"]) > 20
        await store.end_session(sid)
        assert await store.session(sid) == {}

        assert await store.first_time("SM1") and not await store.first_time("SM1")
        await store.opt_out("+17815550142")
        assert await store.opted_out("+17815550142")
        await store.opt_in("+17815550142")
        assert not await store.opted_out("+17815550142")
        assert [await store.limited("sms", "+1", 2) for _ in range(3)] == [False, False, True]
    finally:
        await store.redis.aclose()


# ---- SQL ------------------------------------------------------------------------------------------

def test_migration_matches_the_models(sql_settings: config.Settings) -> None:
    engine = db.engine_for(sql_settings)
    try:
        db.upgrade(sql_settings, engine)
        assert "text_messages" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.metadata) if "text_messages" in str(d)
                    or "'channel'" in str(d)]
        assert diff == []
    finally:
        engine.dispose()


async def test_the_recorder_keeps_a_finished_conversation_and_never_an_erased_one(
        sql_settings: config.Settings) -> None:
    db.upgrade(sql_settings)
    engine = db.engine_for(sql_settings)
    store = await store_for(sql_settings.effective_redis_url)
    recorder = Recorder(store.redis, engine, "rec-test")
    try:
        for cid in ("kept", "gone"):
            await store.create(conversation(cid, number=f"+1781555014{len(cid)}"))
            await store.calls.enqueue(Call.from_hash(await store.hash(cid)))
            await store.add(cid, "texter", f"words of {cid}")
            await store.add(cid, "line", "Estamos buscando a alguien.")
        await store.end("kept", "texter_left")
        await store.end("gone", "texter_left")
        await store.erase("gone", 30)  # DELETE came before the recorder ran

        await recorder.ensure_group()
        entries = (await store.redis.xreadgroup("recorder", "rec-test", {"pr:events": ">"},
                                                 count=1000))[0][1]
        await recorder.handle(entries)
        await recorder.handle(entries)  # replayed: nothing twice
        with Session(engine) as session:
            kept = sql_texts.messages(session, "kept")
            assert [(m.sender, m.body) for m in kept] == [
                ("texter", "words of kept"), ("line", "Estamos buscando a alguien.")]
            record = session.get(CallRecord, "kept")
            assert (record.source, record.channel, record.outcome) == ("text", "sms", "abandoned")
            assert record.caller_number == "+17815550144"
            assert sql_texts.messages(session, "gone") == []
            gone = session.get(CallRecord, "gone")
            assert gone.caller_number is None and gone.outcome == "abandoned"
            assert session.query(CallEvent).filter_by(call_id="gone").count() == 0
        # Its copy in Redis only lasts for the page's last poll.
        assert 0 < await store.redis.ttl(messages_key("kept")) <= 600

        sql_texts.erase(engine, "kept")  # the texter's DELETE after it was recorded
        with Session(engine) as session:
            record = session.get(CallRecord, "kept")
            assert sql_texts.messages(session, "kept") == [] and record.caller_number is None
            assert (record.source, record.language, record.outcome) == ("text", "es", "abandoned")
    finally:
        await store.redis.aclose()
        engine.dispose()


def test_retention_purges_old_conversations(sql_settings: config.Settings) -> None:
    db.upgrade(sql_settings)
    engine = db.engine_for(sql_settings)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session, session.begin():
            for cid, age in (("old", 40), ("new", 1)):
                session.add(CallRecord(id=cid, source="text", channel="chat", language="en",
                                       started_at=now - timedelta(days=age), outcome="bridged",
                                       waves_used=1, consented_to_message=False))
                session.flush()
                sql_texts.archive(session, cid, [("1-0", {"sender": "texter", "body": "hi",
                                                          "at": f"{now.timestamp():.3f}"})])
        with Session(engine) as session, session.begin():
            assert sql_texts.purge_before(session, now - timedelta(days=30)) == 1
        with Session(engine) as session:
            assert [m.call_id for m in session.query(TextMessage)] == ["new"]
    finally:
        engine.dispose()


def test_the_retention_job_purges_conversations_with_transcripts(sql_settings: config.Settings) -> None:
    from workers.retention import purge_records

    db.upgrade(sql_settings)
    engine = db.engine_for(sql_settings)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session, session.begin():
            session.add(CallRecord(id="aged", source="text", channel="sms", language="es",
                                   started_at=now - timedelta(days=45), outcome="bridged",
                                   waves_used=1, consented_to_message=False,
                                   caller_number="+17815550142"))
            session.flush()
            sql_texts.archive(session, "aged", [("1-0", {"sender": "texter", "body": "private",
                                                         "at": f"{now.timestamp():.3f}"})])
        purge_records(sql_settings, (now - timedelta(days=30)).timestamp())
        with Session(engine) as session:
            record = session.get(CallRecord, "aged")
            assert sql_texts.messages(session, "aged") == [] and record.caller_number is None
            assert (record.source, record.channel, record.outcome) == ("text", "sms", "bridged")
    finally:
        engine.dispose()
