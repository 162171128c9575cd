"""Reviewers' workspace (issue 13): a reviewer corrects, reviews and records the prompts of
their languages in the panel, and the line uses the change.

Real parts: the panel (Flask test client), SQLite, espeak-ng and sox rendering and checking
audio, our FastAGI IVR and the stand-in PBX running our dialplan for the calls.
"""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.prompts.catalog import load_catalog
from crisisline.prompts.render import RATE_WPM, _read_manifest
from crisisline.prompts.reviews import PromptReview
from crisisline.users.schema import AuditEntry
from tests.review_helpers import heard, ivr_call, same_audio, sha, sox, speech
from tests.web.conftest import logged_in

CATALOG = load_catalog()
HT_PROMISE = ("Ou rive sou liy People's Response. Moun ki reponn yo se vwazen ou, ki fòme pou "
              "ede. Nou pa janm rele lapolis.")


def rows(settings: config.Settings) -> dict[tuple[str, str], PromptReview]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return {(r.language, r.prompt): r for r in s.scalars(select(PromptReview))}
    finally:
        engine.dispose()


def audit_entries(settings: config.Settings) -> list[AuditEntry]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    finally:
        engine.dispose()


def page(client: FlaskClient, lang: str) -> str:
    response = client.get(f"/review/{lang}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def version_of(html: str, prompt: str) -> str:
    """The version field of the prompt's text form, as the page gives it."""
    section = html.split(f'id="p-{prompt}"', 1)[1]
    return section.split('name="version" value="', 1)[1].split('"', 1)[0]


def post(client: FlaskClient, path: str, **data: object) -> object:
    with client.session_transaction() as sess:
        token = sess["csrf_token"]
    return client.post(path, data={"csrf_token": token, **data})


def upload(client: FlaskClient, lang: str, prompt: str, path: Path, json_reply: bool = False,
           filename: str = "take.wav") -> object:
    html = page(client, lang)
    with client.session_transaction() as sess:
        token = sess["csrf_token"]
    with open(path, "rb") as f:
        return client.post(f"/review/{lang}/{prompt}/recording",
                           data={"csrf_token": token, "version": version_of(html, prompt),
                                 "source": "upload", "audio": (f, filename)},
                           content_type="multipart/form-data",
                           headers={"Accept": "application/json"} if json_reply else {})


def espeak_render(text: str, voice: str, out: Path) -> bytes:
    """What `prompts render` makes of ``text``: to compare with what callers hear."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(RATE_WPM), "-w", str(raw), "--stdin"],
                   input=text.encode(), check=True, capture_output=True)
    sox(str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out))
    return out.read_bytes()


# ---- who sees what ----------------------------------------------------------------------------

def test_a_reviewer_sees_and_changes_only_their_languages(review_app: Flask,
                                                         review_settings: config.Settings) -> None:
    reviewer = logged_in(review_app, "reviewer")  # ht, kea
    index = reviewer.get("/review/").get_data(as_text=True)
    assert "Haitian Creole (ht)" in index and "Cape Verdean Creole (kea)" in index
    assert "Somali" not in index and "Spanish" not in index
    assert reviewer.get("/").headers["Location"] == "/review/"

    so_before = sorted(p.name for p in (review_settings.prompts_path / "es").iterdir())
    for method, path in [("GET", "/review/so"), ("GET", "/review/es/audio/promise"),
                         ("POST", "/review/es/promise/text"), ("POST", "/review/es/promise/reviewed"),
                         ("POST", "/review/so/promise/recording"),
                         ("POST", "/review/es/promise/recording/remove"),
                         ("POST", "/review/es/promise/conflict")]:
        response = reviewer.get(path) if method == "GET" else post(
            reviewer, path, text="Texto cambiado por otra persona.", version="0", choice="keep")
        assert response.status_code == 403, (method, path)
    assert rows(review_settings) == {}
    assert audit_entries(review_settings) == []
    assert sorted(p.name for p in (review_settings.prompts_path / "es").iterdir()) == so_before
    # Nor any other page of the panel.
    for path in ("/queue/", "/roster/", "/history/", "/audit", "/oversight/", "/oversight/prompts"):
        assert reviewer.get(path).status_code == 403, path

    # Their own language: the page, with the English beside it and the audio callers hear.
    html = page(reviewer, "ht")
    assert str(escape(CATALOG.prompts["promise"].texts["en"].text)) in html
    assert "Pou kreyòl ayisyen, peze {key}." in html
    # What to read aloud when recording it: the key filled in (ht is 3 on this menu).
    assert "Pou kreyòl ayisyen, peze 3.</q>" in html.split('id="p-language_option"', 1)[1]
    audio = reviewer.get("/review/ht/audio/promise")
    assert audio.status_code == 200 and audio.mimetype == "audio/wav"
    assert audio.data == (review_settings.prompts_path / "ht" / "promise.wav").read_bytes()
    assert audio.headers["Cache-Control"] == "no-store"
    assert "microphone=(self)" in audio.headers["Permissions-Policy"]
    assert reviewer.get("/review/ht/audio/..%2F..%2Fpeoples-response.db").status_code == 404
    assert reviewer.get("/review/ht/audio/not_a_prompt").status_code == 404
    # Admins review every language; the rest of the panel still forbids the microphone.
    admin = logged_in(review_app, "admin")
    assert admin.get("/review/so").status_code == 200
    assert "microphone=()" in admin.get("/roster/").headers["Permissions-Policy"]


# ---- a corrected text -------------------------------------------------------------------------

async def test_a_corrected_text_is_rendered_again_and_callers_hear_it(
        review_app: Flask, review_settings: config.Settings, tmp_path: Path) -> None:
    reviewer = logged_in(review_app, "reviewer")
    before = review_settings.prompts_path / "ht" / "promise.wav"
    old_bytes = before.read_bytes()
    html = page(reviewer, "ht")
    response = post(reviewer, "/review/ht/promise/text", text=f"  {HT_PROMISE}\n",
                    version=version_of(html, "promise"))
    assert response.status_code == 302 and response.headers["Location"].endswith("#p-promise")

    row = rows(review_settings)[("ht", "promise")]
    assert row.text == HT_PROMISE and row.status == "draft" and row.text_by == "reviewer"
    assert row.base_text == CATALOG.prompts["promise"].texts["ht"].text
    # The rendered file is the new text's audio: what a render of it makes (up to dither).
    expected = espeak_render(HT_PROMISE, "ht", tmp_path / "expected.wav")
    assert same_audio(before.read_bytes(), expected)
    assert not same_audio(old_bytes, expected)
    new_bytes = before.read_bytes()
    html = page(reviewer, "ht")
    assert "Saved as a draft. Its audio was made again." in html
    assert "draft: not yet checked by a native speaker" in html.split('id="p-promise"')[1]

    # A caller who chooses Haitian Creole (key 3) hears the corrected promise.
    trace = await ivr_call(review_settings, "3 02121 2")
    assert heard(review_settings, trace, "ht", "promise").read_bytes() == new_bytes

    # `prompts render` keeps the reviewer's text: nothing is rendered back to the shipped one.
    from argparse import Namespace

    from peoples_response import prompts_cmd

    assert prompts_cmd.render(Namespace(language=["ht"], force=False), review_settings) == 0
    assert before.read_bytes() == new_bytes
    assert prompts_cmd.render(Namespace(language=["ht"], force=True), review_settings) == 0
    assert same_audio(before.read_bytes(), expected)

    # Marked reviewed: by whom, and the status says so.
    response = post(reviewer, "/review/ht/promise/reviewed", version=version_of(html, "promise"))
    assert response.status_code == 302
    row = rows(review_settings)[("ht", "promise")]
    assert row.status == "reviewed" and row.reviewer == "reviewer" and row.reviewed_at
    assert "reviewed by reviewer" in page(reviewer, "ht").split('id="p-promise"')[1]


def test_bad_texts_and_stale_pages_are_refused_and_the_typing_kept(
        review_app: Flask, review_settings: config.Settings) -> None:
    reviewer = logged_in(review_app, "reviewer")
    html = page(reviewer, "ht")
    v = version_of(html, "language_option")
    wav = review_settings.prompts_path / "ht" / "language_option.wav"
    before = wav.read_bytes()
    cases = [("Pou kreyòl ayisyen, peze twa.", "must keep {key}"),
             ("Pou kreyòl, peze {key} oswa {zip}.", "unknown placeholder {zip}"),
             ("Pou kreyòl, peze {key.", "bad braces"),
             ("   ", "missing text")]
    for text, reason in cases:
        response = post(reviewer, "/review/ht/language_option/text", text=text, version=v)
        assert response.status_code == 400
        body = response.get_data(as_text=True)
        assert reason in body and 'aria-invalid="true"' in body
        if text.strip():
            assert f">{escape(text)}</textarea>" in body  # what they typed is still there
    assert wav.read_bytes() == before and rows(review_settings) == {}

    # Two reviewers on one prompt: the second save, from the older page, is refused.
    assert post(reviewer, "/review/ht/language_option/text", text="Pou kreyòl, peze {key}.",
                version=v).status_code == 302
    response = post(reviewer, "/review/ht/language_option/text",
                    text="Kreyòl ayisyen: peze {key}.", version=v)
    assert response.status_code == 409
    assert "Someone else changed this prompt" in response.get_data(as_text=True)
    assert rows(review_settings)[("ht", "language_option")].text == "Pou kreyòl, peze {key}."


# ---- uploads: refused with their reasons, or what callers hear --------------------------------

@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    out = {"speech": speech("This is a test of the prompt recorder.", d / "speech.wav"),
           "clipped": speech("This is a test of the prompt recorder.", d / "clipped.wav",
                             gain_db=24)}
    sox("-n", "-r", "16000", "-b", "16", "-c", "1", str(d / "silent.wav"), "trim", "0", "4")
    out["silent"] = d / "silent.wav"
    sox("-n", "-r", "8000", "-b", "16", "-c", "1", str(d / "long.wav"), "synth", "75", "pinknoise",
        "gain", "-12")
    out["long"] = d / "long.wav"
    sox("-n", "-r", "48000", "-b", "16", "-c", "2", str(d / "huge.wav"), "synth", "70", "pinknoise",
        "gain", "-12")  # 13 MB
    out["huge"] = d / "huge.wav"
    (d / "notes.wav").write_text("Not audio at all, only a name ending in .wav\n")
    out["text"] = d / "notes.wav"
    (d / "song.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4000))
    out["mp3"] = d / "song.mp3"
    sox(str(out["speech"]), str(d / "speech.flac"))
    out["flac"] = d / "speech.flac"
    return out


@pytest.mark.parametrize(("name", "status", "reason"), [
    ("silent", 422, "We heard only silence"),
    ("clipped", 422, "too loud for the microphone and is distorted (clipped"),
    ("huge", 413, "larger than 10 MB"),
    ("text", 415, "not an audio file we can read"),
    ("mp3", 415, "MP3 files can't be read here"),
    ("long", 422, "longer than 60 s"),
])
def test_bad_recordings_are_refused_with_their_reason(review_app: Flask,
                                                      review_settings: config.Settings,
                                                      sounds: dict[str, Path], name: str,
                                                      status: int, reason: str) -> None:
    reviewer = logged_in(review_app, "reviewer")
    before = sha(review_settings.prompts_path / "ht" / "waiting.wav")
    page_reply = upload(reviewer, "ht", "waiting", sounds[name])
    assert page_reply.status_code == status
    assert str(escape(reason)) in page_reply.get_data(as_text=True)
    json_reply = upload(reviewer, "ht", "waiting", sounds[name], json_reply=True)
    assert json_reply.status_code == status and reason in json_reply.get_json()["error"]
    assert sha(review_settings.prompts_path / "ht" / "waiting.wav") == before
    assert rows(review_settings) == {} and audit_entries(review_settings) == []
    assert list((review_settings.prompts_path / "ht").glob("*.tmp")) == []


async def test_an_uploaded_recording_is_what_callers_hear(review_app: Flask,
                                                        review_settings: config.Settings,
                                                        sounds: dict[str, Path]) -> None:
    reviewer = logged_in(review_app, "reviewer")
    response = upload(reviewer, "ht", "promise", sounds["flac"], filename="../../evil name.flac")
    assert response.status_code == 302
    row = rows(review_settings)[("ht", "promise")]
    assert row.recording_source == "upload" and row.recording_by == "reviewer"
    assert 2.0 < row.recording_seconds < 4.0
    path = review_settings.prompts_path / "ht" / "promise.wav"
    assert sha(path) == row.recording_sha256
    with wave.open(str(path)) as w:  # what Asterisk's wav format is: 8 kHz mono 16-bit
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert not list(review_settings.var_path.rglob("evil name*"))
    html = page(reviewer, "ht")
    assert "Recording kept" in html and "Uploaded by reviewer" in html

    trace = await ivr_call(review_settings, "3 02121 2")
    assert sha(heard(review_settings, trace, "ht", "promise")) == row.recording_sha256

    # A corrected text now leaves the recording playing, marked as made of an earlier text.
    post(reviewer, "/review/ht/promise/text", text=HT_PROMISE, version=version_of(html, "promise"))
    assert sha(path) == row.recording_sha256
    assert "The recording was made of an earlier text" in page(reviewer, "ht")
    # Taken out: the rendered voice (of the corrected text) plays again.
    html = page(reviewer, "ht")
    post(reviewer, "/review/ht/promise/recording/remove", version=version_of(html, "promise"))
    assert sha(path) != row.recording_sha256
    assert _read_manifest(review_settings.prompts_path)["ht/promise.wav"]["output"] == sha(path)
    assert rows(review_settings)[("ht", "promise")].recording_sha256 is None


# ---- the audit log and the oversight board ------------------------------------------------------

def test_every_change_is_in_the_audit_log(review_app: Flask, review_settings: config.Settings,
                                          sounds: dict[str, Path]) -> None:
    reviewer = logged_in(review_app, "reviewer")
    old = CATALOG.prompts["waiting"].texts["ht"].text
    post(reviewer, "/review/ht/waiting/text", text="Tanpri rete, n ap chèche yon moun pou ou.",
         version="0")
    post(reviewer, "/review/ht/waiting/reviewed", version="1")
    assert upload(reviewer, "ht", "waiting", sounds["speech"]).status_code == 302
    post(reviewer, "/review/ht/waiting/recording/remove", version="3")

    entries = audit_entries(review_settings)
    assert [e.action for e in entries] == ["prompt_text", "prompt_reviewed", "prompt_recording",
                                           "prompt_recording_removed"]
    assert all(e.user_name == "reviewer" and e.call_id is None for e in entries)
    details = [json.loads(e.detail or "") for e in entries]
    assert details[0] == {"language": "ht", "prompt": "waiting", "old": old,
                          "new": "Tanpri rete, n ap chèche yon moun pou ou."}
    assert (details[1]["old"], details[1]["new"]) == ("draft", "reviewed")
    assert details[2]["new"] == details[3]["old"] and details[2]["source"] == "upload"

    admin = logged_in(review_app, "admin")
    log = admin.get("/audit").get_data(as_text=True)
    assert "ht/waiting:" in log and "Tanpri rete, n &#39;ap" not in log
    assert str(escape("Tanpri rete, n ap chèche yon moun pou ou.")) in log
    assert "recording uploaded" in log and "recording taken out" in log

    board = logged_in(review_app, "oversight").get("/oversight/prompts")
    assert board.status_code == 200
    text = board.get_data(as_text=True)
    assert "Haitian Creole (ht)" in text and "Somali (so)" in text
    assert "marked reviewed" in text
    so_row = text.split("Somali (so)", 1)[1].split("</tr>", 1)[0]
    assert "caller prompt(s) without audio" in so_row


def test_reviewer_accounts_need_known_languages(tmp_path: Path) -> None:
    import io

    from web.cli import user_add

    settings = config.load(env={}, var_dir=str(tmp_path))
    err = io.StringIO()
    password = io.StringIO("a fine long passphrase\n")
    assert user_add(settings, "ana", "reviewer", password, err) == 1
    assert "a reviewer needs --languages" in err.getvalue()
    assert user_add(settings, "ana", "reviewer", io.StringIO("a fine long passphrase\n"), err,
                    languages="ht,xx") == 1
    assert "no language 'xx'" in err.getvalue()
    assert user_add(settings, "bo", "supervisor", io.StringIO("a fine long passphrase\n"), err,
                    languages="ht") == 1
    assert "--languages is only for reviewers" in err.getvalue()
    assert user_add(settings, "ana", "reviewer", io.StringIO("a fine long passphrase\n"), err,
                    languages="ht, kea") == 0
    from peoples_response.cli import build_parser

    args = build_parser().parse_args(["user", "add", "ana", "--role", "reviewer",
                                      "--languages", "ht,kea"])
    assert (args.role, args.languages) == ("reviewer", "ht,kea")


def test_recordings_need_the_forms_csrf_token(review_app: Flask, review_settings: config.Settings,
                                              sounds: dict[str, Path]) -> None:
    reviewer = logged_in(review_app, "reviewer")
    before = sha(review_settings.prompts_path / "ht" / "promise.wav")
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        with open(sounds["speech"], "rb") as f:
            response = reviewer.post("/review/ht/promise/recording", headers=headers,
                                     data={"version": "0", "audio": (f, "take.wav")},
                                     content_type="multipart/form-data")
        assert response.status_code == 400
        assert "expired or came from another site" in response.get_data(as_text=True)
    assert sha(review_settings.prompts_path / "ht" / "promise.wav") == before
    assert rows(review_settings) == {} and audit_entries(review_settings) == []


def test_the_whispers_prompts_are_rendered_again_for_every_file(
        review_app: Flask, review_settings: config.Settings) -> None:
    """The whisper's language line is one file per caller language: a corrected text remakes
    them all (admins review every language, responders' English and Spanish included)."""
    folder = review_settings.prompts_path / "es"
    stems = [f"whisper_language_{c}" for c in review_settings.languages]
    before = {s: (folder / f"{s}.wav").read_bytes() for s in stems}
    admin = logged_in(review_app, "admin")
    html = page(admin, "es")
    assert "Played as 4 files" in html.split('id="p-whisper_language"', 1)[1].split("</section>")[0]
    response = post(admin, "/review/es/whisper_language/text", text="La persona habla {language}.",
                    version="0")
    assert response.status_code == 302
    for s in stems:
        assert (folder / f"{s}.wav").read_bytes() != before[s], s
    # Without {language} the responder would not hear which language: refused.
    response = post(admin, "/review/es/whisper_language/text", text="La persona habla.", version="1")
    assert response.status_code == 400 and "must keep {language}" in response.get_data(as_text=True)
    # Recording one file for all of them is not offered.
    assert upload(admin, "es", "whisper_language", Path(__file__)).status_code == 400


def test_a_recording_moves_a_hand_placed_file_of_another_format_aside(
        review_app: Flask, review_settings: config.Settings, sounds: dict[str, Path]) -> None:
    folder = review_settings.prompts_path / "ht"
    sox(str(folder / "goodbye_callback.wav"), "-r", "8000", "-c", "1", str(folder / "goodbye_callback.gsm"))
    gsm = (folder / "goodbye_callback.gsm").read_bytes()
    reviewer = logged_in(review_app, "reviewer")
    assert upload(reviewer, "ht", "goodbye_callback", sounds["speech"]).status_code == 302
    assert not (folder / "goodbye_callback.gsm").exists()  # Asterisk can't pick the old one
    kept = list((review_settings.var_path / "prompt-reviews" / "replaced" / "ht").iterdir())
    assert [p.read_bytes() for p in kept] == [gsm]


def test_a_menu_recording_is_flagged_when_its_key_moves(review_app: Flask,
                                                        review_settings: config.Settings,
                                                        sounds: dict[str, Path]) -> None:
    """A recorded menu line says its key ("... press 3"): if PR_LANGUAGES is reordered the
    key moves, and `check` and the page say the recording must be made again."""
    import dataclasses

    from peoples_response.check import check_prompts

    reviewer = logged_in(review_app, "reviewer")
    assert upload(reviewer, "ht", "language_option", sounds["speech"]).status_code == 302
    assert rows(review_settings)[("ht", "language_option")].recording_text == \
        "Pou kreyòl ayisyen, peze 3."
    assert not [p for p in check_prompts(review_settings) if "recording ht/" in p]
    assert "made of an earlier text" not in page(reviewer, "ht")

    moved = dataclasses.replace(review_settings, languages=("en", "ht", "es", "so"))  # ht: 2
    assert any(p.startswith("recording ht/language_option reads an earlier text")
               for p in check_prompts(moved))
