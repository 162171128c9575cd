"""Callback requests in SQL (migration 0007, the recorder's copy of a request's life) and the
number's retention, on a real Redis and on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from crisisline import callbacks as cb
from crisisline import config, db
from crisisline.records.schema import CallbackRequest, CallRecord
from tests.callback_helpers import NUMBER, Line, record, replay, run
from workers import retention, runtime

OTHER = "+17815550199"


@pytest.fixture
def engine(sql_settings: config.Settings) -> Iterator[sa.Engine]:
    db.upgrade(sql_settings)
    engine = db.engine_for(sql_settings)
    yield engine
    engine.dispose()


def row(engine: sa.Engine, call_id: str) -> CallbackRequest:
    with Session(engine) as session:
        found = session.get(CallbackRequest, call_id)
        assert found is not None
        return found


def call_record(engine: sa.Engine, call_id: str) -> CallRecord:
    with Session(engine) as session:
        found = session.get(CallRecord, call_id)
        assert found is not None
        return found


# ---- the migration --------------------------------------------------------------------------

def test_the_migration_matches_the_model_and_keeps_old_rows(sql_settings: config.Settings) -> None:
    engine = db.engine_for(sql_settings)
    try:
        db.upgrade(sql_settings, engine, revision="0006_text_messages")
        with engine.begin() as conn:  # a row as the panel wrote them before
            conn.execute(sa.text(
                "INSERT INTO call_records (id, source, language, started_at, outcome, waves_used,"
                " consented_to_message) VALUES ('old1', 'direct', 'es', :at, 'callback', 1, :f)"),
                {"at": datetime(2026, 11, 2, 15, 0), "f": False})
            conn.execute(sa.text(
                "INSERT INTO callback_requests (call_id, number, language, requested_at, status)"
                " VALUES ('old1', '+16175550100', 'es', :at, 'waiting')"),
                {"at": datetime(2026, 11, 2, 15, 0)})
        db.upgrade(sql_settings, engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.metadata) if "callback_requests" in str(d)]
        assert diff == []
        old = row(engine, "old1")
        assert (old.status, old.attempts, old.message_ok, old.message_left, old.safe_here,
                old.result, old.ended_at) == ("waiting", 0, False, False, None, None, None)
        with Session(engine) as session, session.begin():
            # Today's longest status fits.
            session.get(CallbackRequest, "old1").status = "fallback_answered"
        from alembic import command

        command.downgrade(db.alembic_config(sql_settings, engine), "0006_text_messages")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT status FROM callback_requests")).scalar() == "done"
    finally:
        engine.dispose()


# ---- the recorder ---------------------------------------------------------------------------

def test_a_failed_request_is_kept_true_then_loses_its_number(sql_settings: config.Settings,
                                                              engine: sa.Engine) -> None:
    url = sql_settings.effective_redis_url

    async def go() -> None:
        async with Line(url) as line:
            await line.pending("f1", time.time() - 300, number=OTHER, safe_here=False,
                               message_ok=True)
            await record(url, engine)
            first = row(engine, "f1")
            assert (first.status, first.number, first.safe_here, first.message_ok,
                    first.attempts, first.language, first.neighborhood) == (
                "open", OTHER, False, True, 0, "es", "Dorchester")

            await line.attempt_fails("f1", "ana", cb.NO_ANSWER, attempts=2)
            await record(url, engine)
            after_one = row(engine, "f1")
            assert (after_one.status, after_one.attempts, after_one.result) == (
                "open", 1, cb.NO_ANSWER)
            assert after_one.number == OTHER  # still needed: the line will dial it again

            assert await line.callbacks.start_now("f1")
            await line.attempt_fails("f1", "ana", cb.MESSAGE_LEFT, attempts=2)
            await record(url, engine)
            failed = row(engine, "f1")
            assert (failed.status, failed.attempts, failed.result, failed.message_left) == (
                "failed", 2, cb.MESSAGE_LEFT, True)
            assert failed.ended_at is not None and failed.number is None
            closed = call_record(engine, "f1")
            assert (closed.outcome, closed.end_step) == ("callback", "callback")
            assert closed.ended_at is not None
            # And from the call's hash in Redis, now that nobody will dial it.
            assert "callback_number" not in await line.hash("f1")
            assert (await line.hash("f1"))["cb_attempts"] == "2"

            await replay(url, engine)  # a crash before the acknowledgement: nothing comes back
            again = row(engine, "f1")
            assert (again.number, again.status, again.attempts) == (None, "failed", 2)

    run(go())


def test_a_bridged_callback_keeps_its_number_until_the_call_ends(sql_settings: config.Settings,
                                                                 engine: sa.Engine) -> None:
    url = sql_settings.effective_redis_url

    async def go() -> None:
        async with Line(url) as line:
            await line.pending("b1", time.time() - 300, safe_here=None)
            await line.answered("b1", "ana")
            await record(url, engine)
            bridged = row(engine, "b1")
            assert (bridged.status, bridged.attempts, bridged.result, bridged.safe_here) == (
                "bridged", 1, cb.BRIDGED, None)
            assert bridged.time_to_human_s == pytest.approx(95.5)
            assert bridged.ended_at is not None
            assert bridged.number == NUMBER  # the call goes on
            assert (await line.hash("b1"))["callback_number"] == NUMBER

            from crisisline.call import State
            assert await line.calls.end("b1", State.ENDED, "bridged", "call_ended")
            await record(url, engine)
            assert row(engine, "b1").number is None
            assert call_record(engine, "b1").outcome == "bridged"
            assert "callback_number" not in await line.hash("b1")

    run(go())


def test_a_cancelled_request_ends_its_call_with_the_supervisors_reason(
        sql_settings: config.Settings, engine: sa.Engine) -> None:
    url = sql_settings.effective_redis_url

    async def go() -> None:
        async with Line(url) as line:
            await line.pending("c1", time.time() - 300)
            await line.requested("c2", time.time() - 200, number=OTHER)  # still on the line
            await record(url, engine)
            assert await line.callbacks.cancel("c1", "sam", NUMBER)
            await line.redis.hset("pr:call:c1", "cb_cancel_reason", "reached from the desk")
            assert await line.callbacks.cancel("c2", "sam", OTHER)
            await record(url, engine)
            gone = row(engine, "c1")
            assert (gone.status, gone.done_by, gone.outcome) == (
                "cancelled", "sam", "reached from the desk")
            assert gone.number is None and gone.ended_at is not None
            assert call_record(engine, "c1").outcome == "callback"
            # The caller still on the line keeps their call (and the number, until it ends).
            kept = row(engine, "c2")
            assert (kept.status, kept.outcome, kept.number) == ("cancelled", None, OTHER)
            assert call_record(engine, "c2").outcome == "in_progress"

    run(go())


# ---- retention ------------------------------------------------------------------------------

def test_retention_clears_numbers_of_finished_requests_now_and_every_one_after_the_period(
        sql_settings: config.Settings, engine: sa.Engine) -> None:
    url = sql_settings.effective_redis_url
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        for cid, age_days, status, ended in (("young-open", 1, "open", False),
                                             ("young-done", 1, "failed", True),
                                             ("young-legacy", 1, "done", True),
                                             ("young-bridged-on-call", 1, "bridged", False),
                                             ("old-open", 40, "open", False)):
            started = now - timedelta(days=age_days)
            session.add(CallRecord(id=cid, source="direct", language="en", started_at=started,
                                   ended_at=started + timedelta(minutes=20) if ended else None,
                                   outcome="callback" if ended else "in_progress", waves_used=1,
                                   consented_to_message=False, caller_number=NUMBER))
            session.flush()
            session.add(CallbackRequest(call_id=cid, number=NUMBER, language="en",
                                        requested_at=started, status=status))

    async def redis_side() -> None:
        async with Line(url) as line:
            await line.pending("r-failed", time.time() - 600)
            await line.attempt_fails("r-failed", "ana", attempts=1)
            await line.pending("r-open", time.time() - 300, number=OTHER)
            # The recorder never ran: the retention job catches what it would have done.

    run(redis_side())
    runtime.configure(sql_settings, None)
    try:
        got = retention.purge_expired(time.time())
    finally:
        runtime.reset()
    # Redis: the failed request's number; SQL: young-done and young-legacy (over, call closed).
    assert got["callback_numbers"] == 3
    assert got["records"] == 1  # old-open's call record (its request's number goes with it)
    numbers = {cid: row(engine, cid).number for cid in
               ("young-open", "young-done", "young-legacy", "young-bridged-on-call", "old-open")}
    assert numbers == {"young-open": NUMBER, "young-done": None, "young-legacy": None,
                       "young-bridged-on-call": NUMBER, "old-open": None}
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.hget("pr:call:r-failed", "callback_number") is None
        assert client.hget("pr:call:r-failed", "state") == "callback_failed"
        assert client.hget("pr:call:r-open", "callback_number") == OTHER  # still being worked
    finally:
        client.close()
