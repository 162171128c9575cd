"""What a reviewer can do to a prompt, as plain functions: correct its text, mark it
reviewed, record or upload it, take a recording out, decide a conflict with a release.

Each one changes the SQL row and writes the audit entry in one transaction, then updates
the prompts folder (re-render, or put the recording in place) so the line uses the change
at once. The page a reviewer works from carries the row's ``version``; a change made from
a page older than the row is refused (:class:`Stale`), never silently applied over
someone else's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crisisline.config import Settings
from crisisline.prompts import files, reviews
from crisisline.prompts.catalog import RESPONDER_REQUIRED, Catalog, normalize, text_problem
from crisisline.prompts.overlay import apply_reviews, conflict_of, needed_fields, shipped_text
from crisisline.prompts.recording import Prepared
from crisisline.prompts.render import RenderReport, ToolMissing, plan, render_prompt
from crisisline.prompts.reviews import PromptReview
from crisisline.users import audit

MAX_TEXT = 2000


class Refused(ValueError):
    """The change can't be made; the message says why, for the reviewer."""


class Stale(Refused):
    """The page was older than the prompt: someone else changed it meanwhile."""


@dataclass
class Outcome:
    message: str
    problems: list[str] = field(default_factory=list)  # audio could not be made, etc.


def prompts_for(catalog: Catalog, lang: str) -> list[str]:
    """The prompts a reviewer of ``lang`` works on: every caller prompt, and the
    responder prompts that exist in that language (responders need only English)."""
    return [name for name, p in catalog.prompts.items() if p.audience != "texter"
            and (p.audience == "caller" or lang in RESPONDER_REQUIRED or lang in p.texts)]


def recordable(settings: Settings, catalog: Catalog, lang: str, prompt: str) -> bool:
    """One file, one recording. Prompts played as one file per caller language or per
    neighborhood ({language}, {neighborhood}) are rendered from their text only."""
    return files.files_of(settings, catalog, lang, prompt) == [prompt]


def spoken_text(settings: Settings, catalog: Catalog, lang: str, prompt: str) -> str | None:
    """The text of the prompt's (first) file as the line says it, placeholders filled."""
    jobs = [j for j in plan(settings, catalog, [lang]) if j.prompt == prompt]
    return jobs[0].text if jobs else None


def effective(session: Session, catalog: Catalog) -> Catalog:
    return apply_reviews(catalog, reviews.all_reviews(session))


def _now() -> datetime:
    return datetime.now(UTC)


def _row(session: Session, catalog: Catalog, lang: str, prompt: str,
         version: int | None) -> PromptReview:
    if lang not in catalog.languages:
        raise Refused(f"There is no language {lang!r} in the prompt catalog.")
    if prompt not in catalog.prompts or prompt not in prompts_for(catalog, lang):
        raise Refused(f"There is no prompt {prompt!r} for {lang!r}.")
    row = reviews.get(session, lang, prompt, lock=True)
    current = row.version if row else 0
    if version is not None and version != current:
        who = row.text_by or row.recording_by or row.reviewer if row else None
        raise Stale("Someone else changed this prompt while you had the page open"
                    + (f" ({who})" if who else "") + ". Look at it again, then redo your change.")
    if row is None:
        row = PromptReview(language=lang, prompt=prompt, version=0, status="draft")
        session.add(row)
    return row


def _current_text(catalog: Catalog, row: PromptReview) -> str | None:
    return row.text if row.text is not None else shipped_text(catalog, row.language, row.prompt)


def _commit(session: Session) -> None:
    try:
        session.commit()
    except IntegrityError:  # two first saves of one prompt at once: the other one won
        session.rollback()
        raise Stale("Someone else saved this prompt at the same moment. Look at it again, "
                    "then redo your change.") from None


def _render(settings: Settings, session: Session, catalog: Catalog, lang: str,
            prompt: str) -> RenderReport | str:
    try:
        return render_prompt(settings, effective(session, catalog), lang, prompt)
    except ToolMissing as exc:
        return str(exc)


def _render_outcome(message: str, report: RenderReport | str) -> Outcome:
    if isinstance(report, str):
        return Outcome(message, [f"The audio could not be made: {report}"])
    problems = [f"No audio for {p}" for p in report.problems]
    if report.recorded and not report.rendered:
        message += " A human recording of it is still what callers hear."
    elif report.rendered:
        message += " Its audio was made again."
    return Outcome(message, problems)


def save_text(settings: Settings, session: Session, catalog: Catalog, user: str, lang: str,
              prompt: str, text: str, version: int | None) -> Outcome:
    """A corrected text: status back to draft; the rendered audio is made again now."""
    new = normalize(text or "")
    if len(new) > MAX_TEXT:
        raise Refused(f"The text is longer than {MAX_TEXT} characters.")
    problem = text_problem(new, needed_fields(catalog, prompt))
    if problem:
        raise Refused(f"Not saved: {problem}.")
    row = _row(session, catalog, lang, prompt, version)
    old = _current_text(catalog, row)
    if old is not None and normalize(old) == new:
        session.rollback()
        return Outcome("No change: that is already the text.")
    row.text, row.base_text = new, shipped_text(catalog, lang, prompt)
    row.status, row.reviewer, row.reviewed_at = "draft", None, None
    row.text_by, row.text_at, row.version = user, _now(), row.version + 1
    audit.record_prompt(session, user, audit.PROMPT_TEXT, lang, prompt, old, new)
    _commit(session)
    return _render_outcome("Saved as a draft.", _render(settings, session, catalog, lang, prompt))


def mark_reviewed(settings: Settings, session: Session, catalog: Catalog, user: str, lang: str,
                  prompt: str, version: int | None) -> Outcome:
    """The reviewer approves the text as it is now (it is pinned: a release can't change it)."""
    row = _row(session, catalog, lang, prompt, version)
    if conflict_of(catalog, row):
        raise Refused("A new release changed this prompt's text: choose which text to keep "
                      "before marking it reviewed.")
    text = _current_text(catalog, row)
    if text is None:
        raise Refused("There is no text to review yet: write one first.")
    if row.text is None:
        old_status = catalog.prompts[prompt].texts[lang].status
        row.text, row.base_text = text, text
    else:
        old_status = row.status
    row.status, row.reviewer, row.reviewed_at = "reviewed", user, _now()
    row.version += 1
    audit.record_prompt(session, user, audit.PROMPT_REVIEWED, lang, prompt, old_status, "reviewed",
                        text=text)
    _commit(session)
    return Outcome("Marked reviewed.")


def save_recording(settings: Settings, session: Session, catalog: Catalog, user: str, lang: str,
                   prompt: str, audio: Prepared, source: str, version: int | None) -> Outcome:
    """A checked recording becomes what callers hear for this prompt."""
    if source not in reviews.SOURCES:
        raise ValueError(f"source must be one of {reviews.SOURCES}")
    row = _row(session, catalog, lang, prompt, version)
    if not recordable(settings, catalog, lang, prompt):
        raise Refused("This prompt is played as several files (one per language or "
                      "neighborhood); it is made from its text, not recorded.")
    # What the reviewer read: the text with its placeholders filled in ("... press 4."), so a
    # later change of either (a new text, or a new key after PR_LANGUAGES was reordered)
    # shows the recording as out of date.
    text = spoken_text(settings, effective(session, catalog), lang, prompt)
    old_sha = row.recording_sha256
    row.recording_sha256, row.recording_seconds = audio.sha256, audio.seconds
    row.recording_source, row.recording_by, row.recording_at = source, user, _now()
    row.recording_text, row.recording_wav = text, audio.wav
    row.version += 1
    audit.record_prompt(session, user, audit.PROMPT_RECORDING, lang, prompt, old_sha, audio.sha256,
                        source=source, seconds=audio.seconds, text=text)
    _commit(session)
    moved = files.install_recording(settings, lang, prompt, audio.wav)
    note = f" {len(moved)} other file(s) of it were moved aside." if moved else ""
    return Outcome(f"Recording kept ({audio.seconds:.1f} s): callers hear it from now on.{note}")


def remove_recording(settings: Settings, session: Session, catalog: Catalog, user: str,
                     lang: str, prompt: str, version: int | None) -> Outcome:
    """Take the human recording out; the rendered voice (if the language has one) returns."""
    row = _row(session, catalog, lang, prompt, version)
    on_disk = files.is_recording(settings, lang, prompt)
    if not row.has_recording and not on_disk:
        session.rollback()
        return Outcome("There is no recording to take out.")
    old_sha = row.recording_sha256
    row.recording_sha256 = row.recording_seconds = row.recording_source = None
    row.recording_by = row.recording_at = row.recording_text = row.recording_wav = None
    row.version += 1
    audit.record_prompt(session, user, audit.PROMPT_RECORDING_REMOVED, lang, prompt, old_sha, None)
    _commit(session)
    files.take_out_recording(settings, lang, prompt)
    return _render_outcome("Recording taken out (kept aside on the server).",
                           _render(settings, session, catalog, lang, prompt))


def resolve_conflict(settings: Settings, session: Session, catalog: Catalog, user: str, lang: str,
                     prompt: str, choice: str, version: int | None) -> Outcome:
    """``keep``: the reviewer's text stays; ``catalog``: the release's text (and its
    status) is used from now on."""
    row = _row(session, catalog, lang, prompt, version)
    conflict = conflict_of(catalog, row)
    if conflict is None:
        session.rollback()
        return Outcome("There is no conflict on this prompt any more.")
    if choice == "keep":
        row.base_text = conflict.catalog_text
        new = row.text
    elif choice == "catalog":
        if conflict.catalog_text is None:
            raise Refused("The release has no text for this prompt in this language: keep yours.")
        row.text = row.base_text = None
        row.status, row.reviewer, row.reviewed_at = "draft", None, None
        new = conflict.catalog_text
    else:
        raise Refused("Choose to keep your text or to take the release's.")
    row.version += 1
    audit.record_prompt(session, user, audit.PROMPT_CONFLICT, lang, prompt, conflict.reviewer_text,
                        new, choice=choice, catalog_text=conflict.catalog_text)
    _commit(session)
    if choice == "keep":
        return Outcome("Kept your text; the release's text is set aside.")
    return _render_outcome("The release's text is used from now on.",
                           _render(settings, session, catalog, lang, prompt))
