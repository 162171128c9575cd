"""The line picks reviewers' work up by itself (issue 13): Somali joins the menu by
recordings alone, `prompts status` and `check` say so, a new release's text shows as a
conflict instead of overwriting a reviewer's, and `prompts export` takes it all out as data.

Real parts: the panel (Flask test client), SQLite, espeak-ng and sox, the IVR's own menu
check (agi.menu.MenuLanguages, what the FastAGI server runs every 30 s), our FastAGI server
and the stand-in PBX running our dialplan.
"""

from __future__ import annotations

import dataclasses
import io
from argparse import Namespace
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from flask import Flask

from agi.menu import MenuLanguages
from crisisline import config
from crisisline.prompts import catalog as catalog_module
from crisisline.prompts.catalog import Catalog, Text, load_catalog
from crisisline.prompts.workspace import prompts_for
from peoples_response import prompts_cmd
from peoples_response.check import check_prompts
from tests.review_helpers import heard, ivr_call, sha, speech
from tests.web.conftest import add_reviewer, logged_in
from tests.web.test_review import page, post, rows, upload, version_of

CATALOG = load_catalog()
CALLER = CATALOG.prompt_names("caller")


def status_output(settings: config.Settings) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert prompts_cmd.status(Namespace(), settings) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def somali_takes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One spoken take per caller prompt (espeak-ng has no Somali voice: Swahili's reads
    the Somali text, as a stand-in for a person)."""
    d = tmp_path_factory.mktemp("somali")
    return {name: speech(CATALOG.text(name, "so", key="4"), d / f"{name}.wav", voice="sw")
            for name in CALLER}


async def test_somali_recordings_bring_somali_onto_the_menu(
        review_app: Flask, review_settings: config.Settings,
        somali_takes: dict[str, Path]) -> None:
    add_reviewer(review_settings, "hodan", "so")
    reviewer = logged_in(review_app, "hodan")
    menu = MenuLanguages(review_settings, load_speech=False)  # what the IVR checks every 30 s
    assert menu.offered() == ["en", "es", "ht"]
    assert "left off the language menu (a caller prompt has no audio): so" in \
        status_output(review_settings)
    html = page(reviewer, "so")
    assert "Not on the language menu" in html and "The computer voice does not speak Somali" in html

    for n, name in enumerate(CALLER):
        assert menu.refresh() == ["en", "es", "ht"], f"so on the menu before {name}"
        response = upload(reviewer, "so", name, somali_takes[name], filename=f"{name}.wav")
        assert response.status_code == 302, response.get_data(as_text=True)[-800:]
        assert len([r for r in rows(review_settings).values() if r.has_recording]) == n + 1
    # The last caller prompt recorded: the IVR's next check (within 30 s) offers Somali.
    assert menu.refresh() == ["en", "es", "ht", "so"]
    status = status_output(review_settings)
    assert "on the language menu: en, es, ht, so" in status and "left off" not in status
    so_line = next(line for line in status.splitlines() if line.startswith("so "))
    assert so_line.split()[4] == str(len(CALLER))  # recorded
    assert not [p for p in check_prompts(review_settings) if "'so' is left off" in p]
    assert "On the language menu." in page(reviewer, "so")

    # A caller presses 4 for Somali and hears the reviewer's recordings.
    trace = await ivr_call(review_settings, "4 02121 2")
    stored = rows(review_settings)
    for name in ("promise", "ask_zip", "ask_consent", "waiting"):
        assert sha(heard(review_settings, trace, "so", name)) == \
            stored[("so", name)].recording_sha256
    assert ("peoples-response/so/language_option") in trace.prompts


def release_with(text: str, lang: str = "ht", prompt: str = "promise") -> Catalog:
    """The shipped catalog as a later release might change it (one text differs)."""
    p = CATALOG.prompts[prompt]
    changed = dataclasses.replace(p, texts={**p.texts, lang: Text(text, "draft", None)})
    return dataclasses.replace(CATALOG, prompts={**CATALOG.prompts, prompt: changed})


async def test_a_new_release_never_overwrites_a_reviewed_text(
        review_app: Flask, review_settings: config.Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    reviewer = logged_in(review_app, "reviewer")
    mine = "Ou rive sou liy People's Response. Se vwazen ou ki reponn. Nou pa janm rele lapolis."
    post(reviewer, "/review/ht/promise/text", text=mine, version="0")
    post(reviewer, "/review/ht/promise/reviewed", version="1")
    wav = review_settings.prompts_path / "ht" / "promise.wav"
    mine_audio = sha(wav)

    # A release changes the shipped Haitian promise (e.g. to mention pressing 0).
    release = ("Ou rive sou liy People's Response. Peze 0 pou pale ak yon moun. "
               "Nou pa janm rele lapolis.")
    new = release_with(release)
    monkeypatch.setattr("web.review._catalog", new)
    monkeypatch.setattr(catalog_module, "load_catalog", lambda path=None: new)
    monkeypatch.setattr(prompts_cmd, "load_catalog", lambda path=None: new)

    html = page(reviewer, "ht")
    section = html.split('id="p-promise"', 1)[1].split("</section>", 1)[0]
    assert "Conflict." in section and "1 conflict(s)" in html
    assert "Se vwazen ou ki reponn" in section and "Peze 0 pou pale ak yon moun" in section
    assert "reviewed by reviewer" in section  # the reviewer's text and status still stand
    # `prompts render` renders nothing back; the line still says the reviewer's text.
    assert prompts_cmd.render(Namespace(language=["ht"], force=False), review_settings) == 0
    assert sha(wav) == mine_audio
    assert "conflict: ht/promise" in status_output(review_settings)
    assert any("ht/promise: this release changed the text" in p
               for p in check_prompts(review_settings))
    # Marking it reviewed is refused until a reviewer chooses.
    response = post(reviewer, "/review/ht/promise/reviewed", version=version_of(html, "promise"))
    assert response.status_code == 400

    # The reviewer chooses the release's text: it is used (and rendered) from now on.
    response = post(reviewer, "/review/ht/promise/conflict", choice="catalog",
                    version=version_of(html, "promise"))
    assert response.status_code == 302
    assert sha(wav) != mine_audio
    assert "Conflict." not in page(reviewer, "ht").split('id="p-promise"', 1)[1].split(
        "</section>", 1)[0]
    trace = await ivr_call(review_settings, "3 02121 2")
    assert sha(heard(review_settings, trace, "ht", "promise")) == sha(wav)
    row = rows(review_settings)[("ht", "promise")]
    assert row.text is None and row.status == "draft"
    entry = logged_in(review_app, "admin").get("/audit").get_data(as_text=True)
    assert "took the release’s text" in entry


def test_export_writes_the_catalog_format_and_the_recordings(
        review_app: Flask, review_settings: config.Settings, somali_takes: dict[str, Path],
        tmp_path: Path) -> None:
    reviewer = logged_in(review_app, "reviewer")
    fixed = 'Pou kreyòl ayisyen, peze {key}. "Kreyòl" \\ : # {key}'
    assert post(reviewer, "/review/ht/language_option/text", text=fixed,
                version="0").status_code == 302
    post(reviewer, "/review/ht/language_option/reviewed", version="1")
    add_reviewer(review_settings, "hodan", "so")
    assert upload(logged_in(review_app, "hodan"), "so", "waiting",
                  somali_takes["waiting"]).status_code == 302

    out = tmp_path / "export"
    assert prompts_cmd.export(Namespace(out=str(out)), review_settings) == 0
    exported = load_catalog(out / "catalog.yaml")  # the catalog's own loader reads it
    text = exported.prompts["language_option"].texts["ht"]
    assert (text.text, text.status, text.reviewer) == (fixed, "reviewed", "reviewer")
    assert exported.text("language_option", "ht", key="3").startswith("Pou kreyòl ayisyen, peze 3.")
    # Everything else is the shipped catalog, unchanged.
    for name, prompt in CATALOG.prompts.items():
        for lang, t in prompt.texts.items():
            if (name, lang) != ("language_option", "ht"):
                assert exported.prompts[name].texts[lang] == t, (name, lang)
    assert exported.languages == CATALOG.languages
    recording = out / "recordings" / "so" / "waiting.wav"
    assert sha(recording) == rows(review_settings)[("so", "waiting")].recording_sha256
    assert sorted(p.name for p in (out / "recordings").rglob("*.wav")) == ["waiting.wav"]


def test_a_prompt_a_release_adds_is_written_by_reviewers(
        review_app: Flask, review_settings: config.Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Data-driven over catalog.yaml: a caller prompt a release adds in English only is on
    every language's page to be written; until it is, that language lacks audio for it."""
    p = CATALOG.prompts["connecting"]
    added = dataclasses.replace(p, name="press_zero", description="Says 0 reaches a person.",
                                texts={"en": Text("To talk to a person now, press 0.", "draft",
                                                  None)})
    new = dataclasses.replace(CATALOG, prompts={**CATALOG.prompts, "press_zero": added})
    monkeypatch.setattr("web.review._catalog", new)
    assert "press_zero" in prompts_for(new, "ht") and "press_zero" in prompts_for(new, "so")
    assert "whisper_intro" in prompts_for(new, "es") and "whisper_intro" not in prompts_for(new, "ht")

    menu = MenuLanguages(review_settings, catalog=new, load_speech=False)
    assert "ht" not in menu.refresh()  # no Haitian text, so no audio, for the new prompt
    reviewer = logged_in(review_app, "reviewer")
    section = page(reviewer, "ht").split('id="p-press_zero"', 1)[1].split("</section>", 1)[0]
    assert "(no text yet)" in section and "To talk to a person now, press 0." in section
    assert "nothing: no text yet" in section
    response = post(reviewer, "/review/ht/press_zero/text",
                    text="Pou pale ak yon moun kounye a, peze 0.", version="0")
    assert response.status_code == 302
    assert (review_settings.prompts_path / "ht" / "press_zero.wav").is_file()
    assert "ht" in menu.refresh()
