"""Route-by-route authorization: every role (and anonymous) against every route.

Anonymous is sent to the log-in page (the event stream, which can't follow a redirect,
gets 401); a logged-in role the route isn't for gets 403; the roles it is for get
through. A route added without an entry here fails test_every_route_is_in_the_table.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.conftest import ROLES, add_record, new_call

SUP, ADM, OVS, REV = "supervisor", "admin", "oversight", "reviewer"
ALL = (SUP, ADM, OVS, REV)

# (method, rule, concrete path, roles allowed)
TABLE: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("GET", "/", "/", ALL),
    ("POST", "/logout", "/logout", ALL),
    ("GET", "/queue/", "/queue/", (SUP,)),
    ("GET", "/queue/events", "/queue/events", (SUP,)),
    ("GET", "/queue/calls/<call_id>", "/queue/calls/live1", (SUP,)),
    ("POST", "/queue/calls/<call_id>/ring", "/queue/calls/live1/ring", (SUP,)),
    ("POST", "/queue/calls/<call_id>/join", "/queue/calls/live1/join", (SUP,)),
    ("POST", "/queue/calls/<call_id>/conversation", "/queue/calls/live1/conversation", (SUP,)),
    ("POST", "/queue/calls/<call_id>/text", "/queue/calls/live1/text", (SUP,)),
    ("GET", "/queue/desk-texts", "/queue/desk-texts", (SUP,)),
    ("GET", "/queue/callbacks/<call_id>", "/queue/callbacks/done1", (SUP,)),
    ("POST", "/queue/callbacks/<call_id>/number", "/queue/callbacks/done1/number", (SUP,)),
    ("POST", "/queue/callbacks/<call_id>/start", "/queue/callbacks/done1/start", (SUP,)),
    ("POST", "/queue/callbacks/<call_id>/ring", "/queue/callbacks/done1/ring", (SUP,)),
    ("POST", "/queue/callbacks/<call_id>/cancel", "/queue/callbacks/done1/cancel", (SUP,)),
    ("GET", "/roster/", "/roster/", (ADM,)),
    ("GET", "/roster/<kind>/new", "/roster/team/new", (ADM,)),
    ("POST", "/roster/<kind>/new", "/roster/shift/new", (ADM,)),
    ("GET", "/roster/<kind>/edit/<key>", "/roster/responder/edit/rosa-delgado", (ADM,)),
    ("POST", "/roster/<kind>/edit/<key>", "/roster/responder/edit/rosa-delgado", (ADM,)),
    ("POST", "/roster/<kind>/delete/<key>", "/roster/team/delete/central", (ADM,)),
    ("GET", "/roster/week", "/roster/week", (ADM,)),
    ("GET", "/audit", "/audit", (ADM,)),
    ("GET", "/history/", "/history/", (SUP, ADM)),
    ("GET", "/history/calls/<call_id>", "/history/calls/done1", (SUP, ADM)),
    ("GET", "/history/calls/<call_id>/transcript", "/history/calls/done1/transcript", (SUP, ADM)),
    ("POST", "/history/calls/<call_id>/transcript", "/history/calls/done1/transcript", (SUP, ADM)),
    ("GET", "/history/calls/<call_id>/number", "/history/calls/done1/number", (SUP, ADM)),
    ("POST", "/history/calls/<call_id>/number", "/history/calls/done1/number", (SUP, ADM)),
    ("GET", "/history/calls/<call_id>/conversation", "/history/calls/done1/conversation", (SUP, ADM)),
    ("POST", "/history/calls/<call_id>/conversation", "/history/calls/done1/conversation",
     (SUP, ADM)),
    ("GET", "/oversight/", "/oversight/", (OVS,)),
    ("GET", "/oversight/report.csv", "/oversight/report.csv", (OVS,)),
    ("GET", "/oversight/prompts", "/oversight/prompts", (OVS, ADM)),
    # The reviewer account reviews ht and kea (another language: tests/web/test_review.py).
    ("GET", "/review/", "/review/", (REV, ADM)),
    ("GET", "/review/<lang>", "/review/ht", (REV, ADM)),
    ("GET", "/review/<lang>/audio/<stem>", "/review/kea/audio/promise", (REV, ADM)),
    ("POST", "/review/<lang>/<prompt>/text", "/review/ht/promise/text", (REV, ADM)),
    ("POST", "/review/<lang>/<prompt>/reviewed", "/review/ht/promise/reviewed", (REV, ADM)),
    ("POST", "/review/<lang>/<prompt>/recording", "/review/ht/promise/recording", (REV, ADM)),
    ("POST", "/review/<lang>/<prompt>/recording/remove", "/review/ht/promise/recording/remove",
     (REV, ADM)),
    ("POST", "/review/<lang>/<prompt>/conflict", "/review/ht/promise/conflict", (REV, ADM)),
]
PUBLIC = {("GET", "/health"), ("GET", "/login"), ("POST", "/login"),
          ("GET", "/static/<path:filename>")}


def request(client: FlaskClient, method: str, path: str) -> Any:
    with client.session_transaction() as sess:
        token = sess.get("csrf_token", "")
    if method == "GET":
        return client.get(path)
    # A valid token, so what is tested here is the role check, not CSRF.
    return client.post(path, data={"csrf_token": token})


@pytest.fixture
def data(web_settings: Any, redis_url: str) -> None:
    new_call(redis_url, "live1")
    add_record(web_settings, "done1", outcome="callback", callback=True)


def test_every_route_is_in_the_table(app: Flask) -> None:
    covered = {(m, rule) for m, rule, _, _ in TABLE} | PUBLIC
    registered = {(m, r.rule) for r in app.url_map.iter_rules()
                  for m in r.methods or () if m not in ("HEAD", "OPTIONS")}
    assert registered - covered == set(), "add the new route to TABLE with its roles"
    assert covered - registered == set()


@pytest.mark.parametrize("who", ["anonymous", *ROLES])
@pytest.mark.parametrize(("method", "rule", "path", "allowed"), TABLE,
                         ids=[f"{m} {p}" for m, _, p, _ in TABLE])
def test_route_by_role(clients: dict[str, FlaskClient], data: None, who: str, method: str,
                       rule: str, path: str, allowed: tuple[str, ...]) -> None:
    response = request(clients[who], method, path)
    try:
        if who == "anonymous":
            if path == "/queue/events":
                assert response.status_code == 401
            else:
                assert response.status_code == 302
                assert response.headers["Location"].startswith("/login?next=")
        elif who in allowed:
            assert response.status_code not in (401, 403), response.status_code
            assert not response.headers.get("Location", "").startswith("/login?next=")
        else:
            assert response.status_code == 403
            # A refusal says nothing about the call it was asked about.
            assert b"+1617555" not in response.data and b"I need help" not in response.data
    finally:
        response.close()  # ends the event stream's generator


def test_public_routes(clients: dict[str, FlaskClient]) -> None:
    for client in clients.values():
        assert client.get("/health").status_code == 200
        assert client.get("/static/panel.css").status_code == 200


def test_a_view_without_declared_roles_is_refused_to_everyone(app: Flask) -> None:
    @app.get("/forgot-roles")
    def forgot() -> str:
        return "secret"

    for role in ROLES:
        client = app.test_client()
        from tests.web.conftest import login
        login(client, role)
        assert client.get("/forgot-roles").status_code == 403
