"""Accounts, log-in, rate limit, CSRF, headers, cookies, and migration 0003."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.users import passwords
from crisisline.users.schema import User
from tests.web.conftest import PASSWORD, csrf, logged_in, login, token_in
from web import create_app
from web.auth import IP_LIMIT, USER_LIMIT
from web.cli import user_add, user_disable, user_set_password


def users(settings: config.Settings) -> dict[str, User]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return {u.name: u for u in s.scalars(sa.select(User))}
    finally:
        engine.dispose()


PG_URL = os.environ.get("PR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite"] + ([] if os.environ.get("PR_TEST_NO_POSTGRES") == "1" else ["postgresql"])


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[config.Settings]:
    if request.param == "sqlite":
        yield config.load(env={}, var_dir=str(tmp_path))
        return
    schema = f"panel_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is unreachable at {PG_URL} ({exc.orig}); start it, or set "
                    "PR_TEST_NO_POSTGRES=1")
    try:
        yield config.load(env={}, var_dir=str(tmp_path),
                          database_url=f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migration_creates_users_and_audit_log(any_db: config.Settings) -> None:
    engine = db.engine_for(any_db)
    try:
        db.upgrade(any_db, engine)
        assert db.current_revision(engine) == db.head_revision(any_db)
        assert {"users", "audit_log"} <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.metadata)
                    if "'users'" in repr(d) or "'audit_log'" in repr(d)
                    or "users." in repr(d) or "audit_log." in repr(d)]
        assert diff == [], "users/audit schema and migrations 0003/0004 disagree"
        # The role is checked by the database too, not only by `user add`.
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (name, role, password_hash, created_at, disabled) "
                                 "VALUES ('x', 'police', 'h', CURRENT_TIMESTAMP, false)"))
    finally:
        engine.dispose()


def test_user_add_hashes_with_scrypt_and_reads_stdin(tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path))
    err = io.StringIO()
    assert user_add(settings, "ana", "admin", io.StringIO("a fine long passphrase\n"), err) == 0
    user = users(settings)["ana"]
    assert user.role == "admin" and not user.disabled
    assert user.password_hash.startswith("scrypt:")
    assert "a fine long passphrase" not in user.password_hash
    assert passwords.verify(user.password_hash, "a fine long passphrase")
    assert not passwords.verify(user.password_hash, "a fine long passphrasE")


def test_user_add_refuses_bad_input(tmp_path: Path) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path))
    err = io.StringIO()
    assert user_add(settings, "bob", "root", io.StringIO("a fine long passphrase\n"), err) == 1
    assert user_add(settings, "bob", "admin", io.StringIO("short\n"), err) == 1
    assert user_add(settings, "bob", "admin", io.StringIO(""), err) == 1  # no default password
    assert user_add(settings, "bad name", "admin", io.StringIO("a fine long passphrase\n"), err) == 1
    assert user_add(settings, "bob", "admin", io.StringIO("a fine long passphrase\n"), err) == 0
    assert user_add(settings, "bob", "oversight", io.StringIO("another long phrase\n"), err) == 1
    assert "already exists" in err.getvalue()
    assert set(users(settings)) == {"bob"}


def test_login_logout_and_next(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/history/?language=es")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/history/?language%3Des"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert '<label for="name">' in page and '<label for="password">' in page
    response = client.post("/login", data={"name": "supervisor", "password": PASSWORD,
                                           "next": "/history/?language=es",
                                           "csrf_token": token_in(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/history/?language=es"
    assert client.get("/history/").status_code == 200
    token = csrf(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/history/").status_code == 302


def test_next_never_leaves_the_site(app: Flask) -> None:
    client = app.test_client()
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = client.post("/login", data={"name": "admin", "password": PASSWORD,
                                               "next": target, "csrf_token": csrf(client)})
        assert response.headers["Location"] == "/roster/"


def test_wrong_password_and_unknown_user_look_the_same(app: Flask) -> None:
    client = app.test_client()
    a = login(client, "admin", "not the password at all")
    b = login(client, "nobody-here", "not the password at all")
    assert a.status_code == b.status_code == 401
    assert a.get_data(as_text=True).count("match an account") == 1
    assert a.data.replace(b"nobody-here", b"admin") == b.data.replace(b"nobody-here", b"admin")


def test_rate_limit_per_user_and_per_address(app: Flask, redis_url: str) -> None:
    client = app.test_client()
    for _ in range(USER_LIMIT):
        assert login(client, "admin", "wrong wrong wrong").status_code == 401
    # Now even the right password is refused for this account...
    assert login(client, "admin").status_code == 429
    # ...but not for another account from the same address (under the address limit).
    assert login(client, "oversight").status_code == 302
    r = redis.Redis.from_url(redis_url)
    assert int(r.get("pr:web:login:user:admin") or 0) == USER_LIMIT
    assert 0 < r.ttl("pr:web:login:user:admin") <= 15 * 60
    # Many accounts from one address: the address limit.
    for i in range(IP_LIMIT):
        login(app.test_client(), f"guess{i}", "wrong wrong wrong")
    assert login(app.test_client(), "supervisor").status_code == 429
    r.close()


def test_disabled_user_and_changed_password_end_sessions(app: Flask, web_settings: config.Settings,
                                                          ) -> None:
    client = logged_in(app, "supervisor")
    assert client.get("/queue/").status_code == 200
    assert user_set_password(web_settings, "supervisor", io.StringIO("a brand new passphrase\n"),
                             io.StringIO()) == 0
    assert client.get("/queue/").status_code == 302  # logged out everywhere
    assert login(app.test_client(), "supervisor", "a brand new passphrase").status_code == 302
    client = logged_in(app, "admin")
    assert user_disable(web_settings, "admin", err=io.StringIO()) == 0
    assert client.get("/roster/").status_code == 302
    assert login(app.test_client(), "admin").status_code == 401


def test_csrf_required_on_every_form(clients: dict[str, FlaskClient]) -> None:
    sup = clients["supervisor"]
    assert sup.post("/logout").status_code == 400
    assert sup.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert sup.get("/queue/").status_code == 200  # still logged in
    anonymous = clients["anonymous"]
    assert anonymous.post("/login", data={"name": "admin", "password": PASSWORD}).status_code == 400


def test_every_form_carries_the_token(clients: dict[str, FlaskClient]) -> None:
    pages = {"supervisor": ["/queue/", "/history/"], "admin": ["/roster/", "/roster/team/new",
                                                                "/roster/responder/new"]}
    for role, paths in pages.items():
        for path in paths:
            html = clients[role].get(path).get_data(as_text=True)
            assert html.count('method="post"') == html.count('name="csrf_token"'), path


def test_security_headers_and_cookie(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/health").headers["X-Content-Type-Options"] == "nosniff"


def test_secure_cookie_over_https(web_settings: config.Settings) -> None:
    app = create_app(web_settings, testing=True, https=True)
    response = app.test_client().get("/login", base_url="https://panel.example")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-") and "Secure" in cookie and "HttpOnly" in cookie
    assert "Strict-Transport-Security" in response.headers


def test_no_inline_script_or_handlers_in_any_page(clients: dict[str, FlaskClient]) -> None:
    import re

    pages = {"supervisor": ["/queue/", "/history/", "/history/calls/x"],
             "admin": ["/roster/", "/roster/week", "/roster/override/new", "/audit"],
             "oversight": ["/oversight/"], "anonymous": ["/login"]}
    for role, paths in pages.items():
        for path in paths:
            html = clients[role].get(path).get_data(as_text=True)
            assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
            assert not re.search(r"\son[a-z]+\s*=", html), path
            assert " style=" not in html, path
            assert "<h1" in html, path


def test_secret_key_missing_is_generated_and_warned(tmp_path: Path, redis_url: str,
                                                    caplog: object) -> None:
    settings = config.load(env={}, var_dir=str(tmp_path), redis_url=redis_url)
    app = create_app(settings)
    assert app.secret_key and len(str(app.secret_key)) > 40
    assert create_app(settings).secret_key != app.secret_key


def test_migration_0004_adds_reviewers_and_prompt_reviews(any_db: config.Settings) -> None:
    """From a database at 0003 with an account in it: the reviewer role and its languages,
    and the prompt_reviews table, exactly as the models say (SQLite and PostgreSQL)."""
    from alembic import command

    from crisisline.prompts.reviews import PromptReview

    engine = db.engine_for(any_db)
    try:
        db.upgrade(any_db, engine, "0003_users_audit")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (name, role, password_hash, created_at, disabled) "
                                 "VALUES ('ana', 'admin', 'h', CURRENT_TIMESTAMP, false)"))
        db.upgrade(any_db, engine)
        assert "prompt_reviews" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.metadata)
                    if "prompt_reviews" in repr(d) or "'users'" in repr(d) or "users." in repr(d)]
        assert diff == [], "prompt_reviews/users schema and migration 0004 disagree"
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (name, role, password_hash, created_at, disabled, "
                                 "languages) VALUES ('rev', 'reviewer', 'h', CURRENT_TIMESTAMP, false, "
                                 "'ht,kea')"))
        with Session(engine) as s:
            assert s.scalar(sa.select(User).where(User.name == "rev")).language_list == ("ht", "kea")
            assert s.scalar(sa.select(User).where(User.name == "ana")).role == "admin"
            s.add(PromptReview(language="ht", prompt="promise", version=1, status="draft",
                               text="x", recording_wav=b"RIFF" * 1000))
            s.commit()
        with pytest.raises(sa.exc.IntegrityError), Session(engine) as s:
            s.add(PromptReview(language="ht", prompt="promise", version=1, status="draft"))
            s.commit()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("UPDATE prompt_reviews SET status = 'approved'"))
        # And back down: reviewers and their table go, everyone else stays.
        command.downgrade(db.alembic_config(any_db, engine), "0003_users_audit")
        assert "prompt_reviews" not in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM users")).scalars().all() == ["ana"]
    finally:
        engine.dispose()
