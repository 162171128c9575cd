"""Reviewers' workspace: a page per language where native speakers correct each prompt's
text, mark it reviewed, record it in the browser or upload a recording, and hear what
callers hear now.

Reviewers see only these pages and only for their languages (checked for every route with
a <lang> part by web.auth.guard, before any form or upload is read); admins see every
language. Recordings and rendered audio are served only here, to those same people. The
work itself is done by crisisline.prompts.workspace; this module turns forms into calls and
outcomes into pages.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from crisisline.prompts import files, review_state, reviews, workspace
from crisisline.prompts.catalog import Catalog, load_catalog
from crisisline.prompts.recording import MAX_BYTES, MAX_SECONDS, AudioRefused, prepare
from crisisline.prompts.render import has_voice, plan
from crisisline.prompts.workspace import Refused, Stale
from web import state
from web.auth import current_user, roles
from web.security import upload_limit

bp = Blueprint("review", __name__, url_prefix="/review")
# A little over the file limit: the multipart envelope and the other fields ride along.
BODY_LIMIT = MAX_BYTES + 64 * 1024
_catalog: Catalog | None = None
_catalog_lock = threading.Lock()


def shipped_catalog() -> Catalog:
    """The catalog of this release, parsed once per process (a release restarts the panel)."""
    global _catalog
    with _catalog_lock:
        if _catalog is None:
            _catalog = load_catalog()
        return _catalog


@bp.after_request
def allow_microphone(response: Response) -> Response:
    # Only these pages may ask for the microphone (the rest of the panel forbids it).
    response.headers["Permissions-Policy"] = ("camera=(), microphone=(self), geolocation=(), "
                                              "payment=()")
    return response


def _languages_for_user() -> list[str]:
    user = current_user()
    assert user is not None
    catalog = shipped_catalog()
    s = state.settings()
    order = [c for c in s.languages if c in catalog.languages]
    order += [c for c in catalog.languages if c not in order]
    return [c for c in order if user.may_review(c)]


def _known(lang: str) -> None:
    if lang not in shipped_catalog().languages:
        abort(404)


def _version() -> int | None:
    raw = request.form.get("version", "")
    return int(raw) if raw.isdigit() else None


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@bp.get("/")
@roles("reviewer", "admin")
def index() -> Any:
    langs = _languages_for_user()
    rows = reviews.all_reviews(state.db())
    summaries = review_state.summaries(state.settings(), shipped_catalog(), rows, langs)
    return render_template("review_index.html", summaries=summaries)


def _page(lang: str, errors: dict[str, str] | None = None, drafts: dict[str, str] | None = None,
          status: int = 200) -> Any:
    catalog = shipped_catalog()
    s = state.settings()
    rows = reviews.all_reviews(state.db())
    prompts = review_state.language_state(s, catalog, rows, lang)
    summary = review_state.summaries(s, catalog, rows, [lang])[0]
    info = catalog.languages[lang]
    return render_template("review_language.html", lang=lang, info=info, prompts=prompts,
                           summary=summary, errors=errors or {}, drafts=drafts or {},
                           max_seconds=int(MAX_SECONDS), max_mb=MAX_BYTES // (1024 * 1024),
                           has_voice=has_voice(info.voice)), status


@bp.get("/<lang>")
@roles("reviewer", "admin")
def language(lang: str) -> Any:
    _known(lang)
    return _page(lang)


def _done(lang: str, prompt: str, outcome: workspace.Outcome) -> Any:
    for line in [outcome.message, *outcome.problems]:
        flash(f"{prompt}: {line}")
    return redirect(url_for("review.language", lang=lang) + f"#p-{prompt}")


def _refused(lang: str, prompt: str, exc: Exception, status: int,
             draft: str | None = None) -> Any:
    message = exc.reason if isinstance(exc, AudioRefused) else str(exc)
    if _wants_json():
        return jsonify(error=message), status
    drafts = {prompt: draft} if draft is not None else None
    return _page(lang, errors={prompt: message}, drafts=drafts, status=status)


@bp.post("/<lang>/<prompt>/text")
@roles("reviewer", "admin")
def save_text(lang: str, prompt: str) -> Any:
    _known(lang)
    text = request.form.get("text", "")
    try:
        outcome = workspace.save_text(state.settings(), state.db(), shipped_catalog(),
                                      current_user().name, lang, prompt, text, _version())
    except Stale as exc:
        return _refused(lang, prompt, exc, 409, draft=text)
    except Refused as exc:
        return _refused(lang, prompt, exc, 400, draft=text)
    return _done(lang, prompt, outcome)


@bp.post("/<lang>/<prompt>/reviewed")
@roles("reviewer", "admin")
def mark_reviewed(lang: str, prompt: str) -> Any:
    _known(lang)
    try:
        outcome = workspace.mark_reviewed(state.settings(), state.db(), shipped_catalog(),
                                          current_user().name, lang, prompt, _version())
    except Stale as exc:
        return _refused(lang, prompt, exc, 409)
    except Refused as exc:
        return _refused(lang, prompt, exc, 400)
    return _done(lang, prompt, outcome)


@bp.post("/<lang>/<prompt>/recording")
@roles("reviewer", "admin")
@upload_limit(BODY_LIMIT)
def save_recording(lang: str, prompt: str) -> Any:
    """A file from the upload form, or a take from the in-browser recorder (same checks)."""
    _known(lang)
    upload = request.files.get("audio")
    source = "browser" if request.form.get("source") == "browser" else "upload"
    if upload is None:
        return _refused(lang, prompt, Refused("Choose a file to upload first."), 400)
    catalog = shipped_catalog()
    live = workspace.effective(state.db(), catalog)
    if prompt in catalog.prompts and not workspace.recordable(state.settings(), live, lang, prompt):
        return _refused(lang, prompt, Refused("This prompt is made from its text, not recorded."),
                        400)
    try:
        audio = prepare(upload.stream)  # the file name the browser sent is never used
    except AudioRefused as exc:
        status = 413 if exc.code == "too_big" else 415 if exc.code in ("format", "not_audio") \
            else 503 if exc.code == "no_sox" else 422
        return _refused(lang, prompt, exc, status)
    try:
        outcome = workspace.save_recording(state.settings(), state.db(), catalog,
                                           current_user().name, lang, prompt, audio, source,
                                           _version())
    except Stale as exc:
        return _refused(lang, prompt, exc, 409)
    except Refused as exc:
        return _refused(lang, prompt, exc, 400)
    if _wants_json():
        flash(f"{prompt}: {outcome.message}")
        return jsonify(message=outcome.message, seconds=audio.seconds,
                       page=url_for("review.language", lang=lang) + f"#p-{prompt}")
    return _done(lang, prompt, outcome)


@bp.post("/<lang>/<prompt>/recording/remove")
@roles("reviewer", "admin")
def remove_recording(lang: str, prompt: str) -> Any:
    _known(lang)
    catalog = shipped_catalog()
    voiceless = not has_voice(catalog.languages[lang].voice)
    caller = prompt in catalog.prompts and catalog.prompts[prompt].audience == "caller"
    if voiceless and caller and request.form.get("confirm") != "yes":
        return _refused(lang, prompt, Refused(
            f"Without this recording {catalog.languages[lang].name} has no audio for this prompt "
            "and leaves the language menu. Tick the box to confirm."), 400)
    try:
        outcome = workspace.remove_recording(state.settings(), state.db(), catalog,
                                             current_user().name, lang, prompt, _version())
    except Stale as exc:
        return _refused(lang, prompt, exc, 409)
    except Refused as exc:
        return _refused(lang, prompt, exc, 400)
    return _done(lang, prompt, outcome)


@bp.post("/<lang>/<prompt>/conflict")
@roles("reviewer", "admin")
def resolve_conflict(lang: str, prompt: str) -> Any:
    _known(lang)
    try:
        outcome = workspace.resolve_conflict(state.settings(), state.db(), shipped_catalog(),
                                             current_user().name, lang, prompt,
                                             request.form.get("choice", ""), _version())
    except Stale as exc:
        return _refused(lang, prompt, exc, 409)
    except Refused as exc:
        return _refused(lang, prompt, exc, 400)
    return _done(lang, prompt, outcome)


@bp.get("/<lang>/audio/<stem>")
@roles("reviewer", "admin")
def audio(lang: str, stem: str) -> Any:
    """What callers hear for one file: only stems the catalog plans (never a path from the
    request), only to reviewers of the language and admins, never cached."""
    _known(lang)
    catalog = workspace.effective(state.db(), shipped_catalog())
    mine = set(workspace.prompts_for(catalog, lang))
    planned = {job.file for job in plan(state.settings(), catalog, [lang]) if job.prompt in mine}
    if stem not in planned:
        abort(404)
    path = files.audio_path(state.settings(), lang, stem)
    if path is None:
        abort(404, description="No audio for this prompt yet.")
    if path.suffix != ".wav":
        abort(415, description=f"This recording is a {path.suffix} file placed on the server; "
                               "browsers can't play it.")
    response = send_file(path, mimetype="audio/wav", conditional=False, max_age=0)
    response.headers["Content-Disposition"] = "inline"
    return response
