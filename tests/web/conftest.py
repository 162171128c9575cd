"""Panel fixtures: settings on a fresh SQLite file and the test Redis, the example roster,
one account per role, and helpers to put live calls in Redis (through the real stores)
and finished calls in SQL."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.call import Call, Source
from crisisline.records.schema import CallbackRequest, CallEvent, CallRecord
from crisisline.roster import commands
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore
from crisisline.users.schema import User
from web import create_app
from web.auth import _fingerprint
from web.cli import user_add

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROSTER = ROOT / "examples" / "roster.csv"
PASSWORD = "a long test passphrase 42"
ROLES = ("supervisor", "admin", "oversight", "reviewer")
REVIEWER_LANGUAGES = "ht,kea"  # the "reviewer" account's languages


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated, with the example roster and one account per role: built once, copied
    per test (scrypt hashing and migrations per test would make the suite crawl)."""
    var = tmp_path_factory.mktemp("panel-template")
    settings = config.load(env={}, var_dir=str(var))
    db.upgrade(settings)
    assert commands.ensure_loaded(settings, EXAMPLE_ROSTER) is not None
    for role in ROLES:
        languages = REVIEWER_LANGUAGES if role == "reviewer" else None
        assert user_add(settings, role, role, io.StringIO(PASSWORD + "\n"), err=io.StringIO(),
                        languages=languages) == 0
    return var / "peoples-response.db"


@pytest.fixture
def web_settings(tmp_path: Path, redis_url: str, template_db: Path) -> config.Settings:
    var = tmp_path / "var"
    var.mkdir()
    shutil.copy(template_db, var / "peoples-response.db")
    return config.load(env={}, var_dir=str(var), redis_url=redis_url,
                       web_secret_key="test-only-secret-key-for-the-panel")


@pytest.fixture
def app(web_settings: config.Settings) -> Iterator[Flask]:
    app = create_app(web_settings, testing=True)
    yield app
    app.extensions["peoples_response"].hub.stop()
    app.extensions["peoples_response"].engine.dispose()


def csrf(client: FlaskClient) -> str:
    client.get("/login")  # any page puts a token in the session
    with client.session_transaction() as sess:
        return str(sess["csrf_token"])


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    """Through the log-in form (as a person does)."""
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": csrf(client)})


def logged_in(app: Flask, name: str) -> FlaskClient:
    """A client with a logged-in session, made directly (what login() would leave behind),
    for tests about what comes after logging in."""
    client = app.test_client()
    with app.app_context():
        engine = app.extensions["peoples_response"].engine
        with Session(engine) as s:
            user = s.scalar(select(User).where(User.name == name))
            assert user is not None
            with client.session_transaction() as sess:
                sess["user_id"] = user.id
                sess["fp"] = _fingerprint(user.password_hash)
                sess["csrf_token"] = f"token-{name}"
    return client


@pytest.fixture
def clients(app: Flask) -> dict[str, FlaskClient]:
    out = {"anonymous": app.test_client()}
    out.update({role: logged_in(app, role) for role in ROLES})
    return out


def token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


# ---- live calls (Redis, through the real stores) ----------------------------------------

def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_stores(url: str, fn: Any) -> Any:
    client = aioredis.Redis.from_url(url)
    try:
        return await fn(CallStore(client), OfferStore(client))
    finally:
        await client.aclose()


def new_call(url: str, call_id: str, language: str = "es", neighborhood: str | None = "Dorchester",
             source: Source = Source.DIRECT, priority: int = 2,
             caller_number: str | None = "+16175550199") -> Call:
    call = Call(id=call_id, source=source, language=language, priority=priority,
                neighborhood=neighborhood, caller_number=caller_number)

    async def go(calls: CallStore, _offers: OfferStore) -> None:
        await calls.create(call)
        await calls.enqueue(call)

    run(_with_stores(url, go))
    return call


def accept(url: str, call_id: str, responder_id: str) -> None:
    """A responder takes the call the way the dispatcher's whisper does: ring, then accept."""
    async def go(calls: CallStore, offers: OfferStore) -> None:
        await calls.redis.hset(f"pr:call:{call_id}", "state", "dispatching")
        assert await offers.ring(call_id, responder_id, 1, 0)
        assert await offers.accept(call_id, responder_id)

    run(_with_stores(url, go))


# ---- finished calls (SQL) --------------------------------------------------------------------

def add_record(settings: config.Settings, call_id: str, *, started: datetime | None = None,
               source: str = "direct", language: str = "es", neighborhood: str | None = "Dorchester",
               outcome: str = "bridged", time_to_human_s: float | None = 30.0,
               caller_number: str | None = "+16175550123", transcript: str | None = "I need help",
               end_step: str | None = None, callback: bool = False) -> None:
    started = started or datetime.now(UTC) - timedelta(hours=1)
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s, s.begin():
            s.add(CallRecord(id=call_id, source=source, language=language, neighborhood=neighborhood,
                             started_at=started, queued_at=started + timedelta(seconds=20),
                             answered_at=started + timedelta(seconds=time_to_human_s or 0)
                             if time_to_human_s is not None else None,
                             ended_at=started + timedelta(minutes=10),
                             time_to_human_s=time_to_human_s, waves_used=1,
                             answered_by="rosa-delgado" if outcome == "bridged" else None,
                             outcome=outcome, end_step=end_step, consented_to_message=True,
                             caller_number=caller_number, transcript=transcript,
                             transcript_status="done" if transcript else None))
            s.flush()
            s.add_all([CallEvent(call_id=call_id, at=started, type="call_started",
                                 detail={"source": source, "caller_number": caller_number}),
                       CallEvent(call_id=call_id, at=started + timedelta(seconds=20),
                                 type="queued", detail={"language": language})])
            if callback:
                s.add(CallbackRequest(call_id=call_id, number=caller_number, language=language,
                                      neighborhood=neighborhood, requested_at=started,
                                      status="waiting"))
    finally:
        engine.dispose()


# ---- prompt review ------------------------------------------------------------------------

REVIEW_LANGUAGES = ("en", "es", "ht", "so")  # menu keys 1-4; so: no espeak-ng voice


@pytest.fixture(scope="session")
def review_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real catalog rendered once for REVIEW_LANGUAGES (so: nothing, it has no voice)."""
    from crisisline.prompts.catalog import load_catalog
    from crisisline.prompts.render import render_all

    var = tmp_path_factory.mktemp("review-prompts")
    s = config.load(env={}, var_dir=str(var), languages=REVIEW_LANGUAGES)
    report = render_all(s, load_catalog())
    assert {rel.split("/")[0] for rel in report.missing_audio} == {"so"}, report.problems
    return s.prompts_path


@pytest.fixture
def review_settings(web_settings: config.Settings, review_prompts: Path) -> config.Settings:
    """The panel's settings with REVIEW_LANGUAGES and a prompts folder of the test's own."""
    import dataclasses

    prompts = web_settings.var_path / "prompts"
    shutil.copytree(review_prompts, prompts)
    return dataclasses.replace(web_settings, languages=REVIEW_LANGUAGES, prompts_dir=str(prompts))


@pytest.fixture
def review_app(review_settings: config.Settings) -> Iterator[Flask]:
    app = create_app(review_settings, testing=True)
    yield app
    app.extensions["peoples_response"].hub.stop()
    app.extensions["peoples_response"].engine.dispose()


def add_reviewer(settings: config.Settings, name: str, languages: str) -> None:
    assert user_add(settings, name, "reviewer", io.StringIO(PASSWORD + "\n"), err=io.StringIO(),
                    languages=languages) == 0
