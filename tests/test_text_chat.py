"""The public chat app through Flask's test client: the page, its form tokens, its limits,
no staff page, the same headers as the panel, delete and leave; real Redis and SQLite."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from crisisline import config, db
from crisisline.prompts.catalog import load_catalog
from crisisline.stores.texts import messages_key
from textline import create_app
from textline.chat import new_token, token_ok
from textline.runtime import Runtime


@pytest.fixture
def chat_settings(settings: config.Settings) -> config.Settings:
    s = dataclasses.replace(settings, chat_secret_key="test-chat-secret", text_rate_per_conversation=3)
    db.upgrade(s)
    return s


@pytest.fixture
def chat_app(chat_settings: config.Settings) -> Iterator[Flask]:
    runtime = Runtime(chat_settings, upkeep=False)
    app = create_app(chat_settings, runtime=runtime, testing=True)
    yield app
    runtime.close()


@pytest.fixture
def client(chat_app: Flask) -> FlaskClient:
    return chat_app.test_client()


def token(client: FlaskClient) -> str:
    return re.search(r'data-token="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def start(client: FlaskClient, body: str = "I need to talk", language: str = "es", **extra: str):
    return client.post("/chat/start", data={"csrf_token": token(client), "language": language,
                                            "body": body, **extra})


def r(chat_settings: config.Settings) -> redis.Redis:
    return redis.Redis.from_url(chat_settings.effective_redis_url, decode_responses=True)


def test_the_page_offers_every_language_in_its_own_and_keeps_nothing(client: FlaskClient) -> None:
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    assert "<title>Chat</title>" in html  # neutral in a task switcher
    for code, name in (("es", "español"), ("ht", "kreyòl ayisyen"), ("vi", "tiếng Việt"),
                       ("ar", "العربية"), ("am", "አማርኛ")):
        assert re.search(rf'value="{code}" lang="{code}"[^>]*>{re.escape(name)}</button>', html), code
    assert 'value="ar" lang="ar" dir="rtl"' in html
    assert "Leave quickly" in html and "<noscript>" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no third-party assets
    assert 'autocomplete="off"' in html
    headers = response.headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"],
            headers["Referrer-Policy"], headers["Cache-Control"]) == ("DENY", "nosniff",
                                                                      "no-referrer", "no-store")


def test_no_staff_page_is_reachable_from_the_chat_app(chat_app: Flask, client: FlaskClient) -> None:
    for path in ("/login", "/queue/", "/history/", "/roster/", "/oversight/", "/review/", "/audit"):
        assert client.get(path).status_code == 404, path
    rules = {rule.rule for rule in chat_app.url_map.iter_rules()}
    assert not [r for r in rules if r.startswith(("/queue", "/history", "/roster", "/login"))]
    assert "8080" not in client.get("/").get_data(as_text=True)


def test_form_tokens_and_other_sites(client: FlaskClient, chat_settings: config.Settings) -> None:
    data = {"language": "es", "body": "hola"}
    assert client.post("/chat/start", data=data).status_code == 400
    assert client.post("/chat/start", data={**data, "csrf_token": "1.a.b"}).status_code == 400
    old = new_token("test-chat-secret", now=time.time() - 3 * 86400)
    assert not token_ok("test-chat-secret", old)
    assert client.post("/chat/start", data={**data, "csrf_token": old}).status_code == 400
    other = new_token("another-secret")
    assert client.post("/chat/start", data={**data, "csrf_token": other}).status_code == 400
    good = token(client)
    assert client.post("/chat/start", data={**data, "csrf_token": good},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/chat/start", data={**data, "csrf_token": good},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert r(chat_settings).zcard("pr:queue") == 0
    assert client.post("/chat/start", data={**data, "csrf_token": good},
                       headers={"Origin": chat_settings.chat_url}).status_code == 201
    assert client.get("/sms/inbound").status_code == 405
    assert client.post("/chat/send", data={"csrf_token": good, "body": "x" * 70000}).status_code == 413


def test_a_conversation_from_the_page(client: FlaskClient, chat_settings: config.Settings) -> None:
    reply = start(client, "necesito hablar", zip="02121")
    assert reply.status_code == 201
    key = reply.json["key"]
    tok = token(client)
    redis_ = r(chat_settings)
    [call_id] = redis_.zrange("pr:queue", 0, -1)
    data = redis_.hgetall(f"pr:call:{call_id}")
    assert (data["source"], data["x_channel"], data["language"], data["neighborhood"]) == \
        ("text", "chat", "es", "Dorchester")
    assert data["caller_number"] == "" and key not in str(data)
    seen = client.post("/chat/poll", data={"csrf_token": tok, "key": key, "wait": "0"}).json
    assert [(m["sender"], m["body"]) for m in seen["messages"]] == [
        ("texter", "necesito hablar"), ("line", "Estamos buscando a alguien que le escriba ahora.")]
    assert seen["state"] == "waiting"
    assert client.post("/chat/send", data={"csrf_token": tok, "key": key, "body": "x" * 2000}
                       ).status_code == 202
    too_long = client.post("/chat/send", data={"csrf_token": tok, "key": key, "body": "x" * 2001})
    assert too_long.status_code == 413 and "largo" in too_long.json["error"]
    assert client.post("/chat/send", data={"csrf_token": tok, "key": key, "body": "dos"}).status_code == 202
    slow = client.post("/chat/send", data={"csrf_token": tok, "key": key, "body": "tres"})
    assert slow.status_code == 429 and "rápido" in slow.json["error"]  # 3 a minute here
    assert client.post("/chat/send", data={"csrf_token": tok, "key": "not-a-key", "body": "x"}
                       ).status_code == 404
    unknown = client.post("/chat/poll", data={"csrf_token": tok, "key": "nope", "wait": "0"}).json
    assert unknown["state"] == "ended" and unknown["messages"] == []

    assert client.post("/chat/call", data={"csrf_token": tok, "key": key, "phone": "911"}
                       ).status_code == 422
    asked = client.post("/chat/call", data={"csrf_token": tok, "key": key, "phone": "617-555-0177"})
    assert asked.status_code == 202
    assert redis_.hget(f"pr:call:{call_id}", "callback_number") == "+16175550177"

    erased = client.post("/chat/delete", data={"csrf_token": tok, "key": key})
    assert erased.json == {"state": "erased"}
    assert not redis_.exists(messages_key(call_id))
    assert redis_.exists(f"pr:text:erased:{call_id}")
    assert "callback_number" not in redis_.hgetall(f"pr:call:{call_id}")
    assert redis_.zcard("pr:queue") == 0


def test_leave_quickly_ends_it_on_our_side(client: FlaskClient, chat_settings: config.Settings) -> None:
    key = start(client).json["key"]
    [call_id] = r(chat_settings).zrange("pr:queue", 0, -1)
    left = client.post("/chat/leave", data={"csrf_token": token(client), "key": key},
                       headers={"X-Requested-With": "fetch"})
    assert left.status_code == 204
    data = r(chat_settings).hgetall(f"pr:call:{call_id}")
    assert (data["state"], data["end_reason"]) == ("abandoned", "texter_left")
    # Without the page's script: the form goes to the neutral page, whatever it carries.
    plain = client.post("/chat/leave", data={})
    assert plain.status_code == 303 and plain.headers["Location"] == "/today"
    neutral = client.get("/today").get_data(as_text=True)
    assert "<title>Today</title>" in neutral and "People" not in neutral


def test_a_language_missing_a_text_is_shown_wholly_in_the_default_language(
        chat_settings: config.Settings) -> None:
    catalog = load_catalog()
    del catalog.prompts["chat_send"].texts["vi"]
    runtime = Runtime(chat_settings, catalog=catalog, upkeep=False)
    try:
        app = create_app(chat_settings, runtime=runtime, testing=True)
        html = app.test_client().get("/").get_data(as_text=True)
        import html as html_lib
        import json

        languages = json.loads(html_lib.unescape(re.search(r"data-languages='([^']*)'", html).group(1)))
        vi, es = languages["vi"], languages["es"]
        assert vi["name"] == "tiếng Việt" and vi["written"] == "en"
        assert vi["texts"]["chat_send"] == "Send"
        assert vi["texts"]["chat_title"] == "Talk with People's Response"
        assert es["written"] == "es" and es["texts"]["chat_send"] == "Enviar"
    finally:
        runtime.close()


def test_when_the_line_cant_take_it_the_page_gives_the_phone_number(chat_settings) -> None:
    """Redis unreachable: the page still loads, and what it shows then is the phone line."""
    broken = dataclasses.replace(chat_settings, redis_url="redis://127.0.0.1:1/0")
    runtime = Runtime(broken, upkeep=False)
    try:
        app = create_app(broken, runtime=runtime, testing=True)
        html = app.test_client().get("/").get_data(as_text=True)
        assert chat_settings.line_number in html  # in every language's "can't reach" words
        assert "text_unattended" in html
    finally:
        runtime.close()


def test_the_access_log_never_holds_a_one_time_link() -> None:
    from textline.serve import ONE_TIME_LINK

    for line, shown in (('"GET /r/c-Xy_9abc HTTP/1.1"', '"GET /r/… HTTP/1.1"'),
                        ('"POST /r/Q3vB HTTP/1.1"', '"POST /r/… HTTP/1.1"'),
                        ('"POST /r/c/poll HTTP/1.1"', '"POST /r/c/poll HTTP/1.1"'),
                        ('"GET /r/c HTTP/1.1"', '"GET /r/c HTTP/1.1"')):
        assert ONE_TIME_LINK.sub("/r/…", line) == shown
