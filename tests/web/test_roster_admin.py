"""Roster admin: form edits validated exactly like the CSV import, and the week view."""

from __future__ import annotations

import re
from datetime import date

import pytest
from flask.testing import FlaskClient

from crisisline import config, db
from crisisline.roster.model import RosterSnapshot
from crisisline.roster.store import RosterStore
from web.roster_edit import monday_of

TOKEN = "token-admin"


def version(client: FlaskClient, path: str = "/roster/") -> str:
    found = re.search(r'name="version" value="([0-9a-f]+)"', client.get(path).get_data(as_text=True))
    assert found
    return found.group(1)


def snapshot(settings: config.Settings) -> RosterSnapshot:
    engine = db.engine_for(settings)
    try:
        return RosterStore(engine, settings.timezone).snapshot()
    finally:
        engine.dispose()


def responder_form(client: FlaskClient, **changes: object) -> dict[str, object]:
    form: dict[str, object] = {"csrf_token": TOKEN, "version": version(client), "id": "new-person",
                               "name": "New Person", "team": "central", "phone": "+1 617 555 0190",
                               "languages": ["en", "es"]}
    form.update(changes)
    return form


def field_error(html: str, field: str) -> str:
    found = re.search(rf'id="f-{field}"[^>]*aria-invalid="true".*?<span class="error" id="e-{field}">'
                      rf'(.*?)</span>', html, re.S)
    assert found, f"no error next to {field}"
    return found.group(1)


@pytest.mark.parametrize(("phone", "words"), [("911", "emergency"), ("112", "emergency"),
                                              ("+1 (617) 343-4500", "police"),
                                              ("555", "not a valid phone number")])
def test_responder_with_a_refused_number_is_not_saved(
        clients: dict[str, FlaskClient], web_settings: config.Settings, phone: str,
        words: str) -> None:
    admin = clients["admin"]
    before = snapshot(web_settings)
    response = admin.post("/roster/responder/new", data=responder_form(admin, phone=phone))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert words in field_error(html, "phone")
    assert 'value="New Person"' in html  # what was typed is kept
    assert snapshot(web_settings) == before


def test_unknown_language_is_refused_next_to_the_languages(clients: dict[str, FlaskClient]) -> None:
    admin = clients["admin"]
    response = admin.post("/roster/responder/new", data=responder_form(admin, languages=["xx"]))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="e-languages"' in html and "unknown language" in html


def test_add_edit_and_delete_a_responder(clients: dict[str, FlaskClient],
                                         web_settings: config.Settings) -> None:
    admin = clients["admin"]
    assert admin.post("/roster/responder/new", data=responder_form(admin)).status_code == 302
    person = snapshot(web_settings).responder("new-person")
    assert person and person.phone == "+16175550190" and person.languages == {"en", "es"}
    # The id can't change on edit, even if a form says otherwise.
    edit = responder_form(admin, id="renamed", phone="PJSIP/new-person", languages=["vi"])
    assert admin.post("/roster/responder/edit/new-person", data=edit).status_code == 302
    snap = snapshot(web_settings)
    assert snap.responder("renamed") is None
    person = snap.responder("new-person")
    assert person and person.phone == "PJSIP/new-person" and person.languages == {"vi"}
    shift = {"csrf_token": TOKEN, "version": version(admin), "responder": "new-person",
             "day": "tue", "start": "09:00", "end": "17:00"}
    assert admin.post("/roster/shift/new", data=shift).status_code == 302
    assert any(s.responder_id == "new-person" for s in snapshot(web_settings).shifts)
    deleted = admin.post("/roster/responder/delete/new-person",
                         data={"csrf_token": TOKEN, "version": version(admin)})
    assert deleted.status_code == 302
    snap = snapshot(web_settings)
    assert snap.responder("new-person") is None  # and their shift went with them
    assert not any(s.responder_id == "new-person" for s in snap.shifts)


def test_team_with_members_is_not_deleted(clients: dict[str, FlaskClient],
                                          web_settings: config.Settings) -> None:
    admin = clients["admin"]
    response = admin.post("/roster/team/delete/central",
                          data={"csrf_token": TOKEN, "version": version(admin)}, follow_redirects=True)
    assert "Not deleted" in response.get_data(as_text=True)
    assert snapshot(web_settings).team("central") is not None


def test_shift_and_override_times_are_checked(clients: dict[str, FlaskClient]) -> None:
    admin = clients["admin"]
    bad = admin.post("/roster/shift/new", data={
        "csrf_token": TOKEN, "version": version(admin), "responder": "rosa-delgado", "day": "mon",
        "start": "25:00", "end": "17:00"})
    assert bad.status_code == 422 and "not a time" in field_error(bad.get_data(as_text=True), "start")
    bad = admin.post("/roster/override/new", data={
        "csrf_token": TOKEN, "version": version(admin), "responder": "rosa-delgado",
        "type": "sick", "start": "2026-11-01 01:30", "end": "2026-11-01 05:00"})
    assert bad.status_code == 422 and "happens twice" in field_error(bad.get_data(as_text=True), "start")
    ok = admin.post("/roster/override/new", data={
        "csrf_token": TOKEN, "version": version(admin), "responder": "rosa-delgado",
        "type": "swap", "start": "2026-11-02 08:00", "end": "2026-11-02 16:00",
        "covered_by": "tuan-nguyen"})
    assert ok.status_code == 302


def test_edit_on_a_stale_roster_is_refused(clients: dict[str, FlaskClient],
                                           web_settings: config.Settings) -> None:
    admin = clients["admin"]
    stale = version(admin)
    assert admin.post("/roster/responder/new", data=responder_form(admin)).status_code == 302
    again = admin.post("/roster/responder/new",
                       data=responder_form(admin, id="other-person", version=stale))
    assert again.status_code == 422 and b"changed the roster" in again.data
    assert snapshot(web_settings).responder("other-person") is None


def test_week_view(clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    admin = clients["admin"]
    html = admin.get("/roster/week?start=2026-11-25").get_data(as_text=True)
    assert "week of Monday November 23, 2026" in html
    assert '<th scope="row">Dorchester &amp; Mattapan</th>' in html
    assert '<th scope="col">Sun Nov 29</th>' in html
    snap = snapshot(web_settings)
    some = next(s for s in snap.shifts if s.weekday == 0)
    assert snap.responder(some.responder_id).name in html  # type: ignore[union-attr]
    assert monday_of(date(2026, 11, 29)) == date(2026, 11, 23)
    # A week across the fall-back night still renders (one 25-hour Sunday).
    assert admin.get("/roster/week?start=2026-11-01").status_code == 200
