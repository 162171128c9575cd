"""Where review stands: per prompt (the review page) and per language (the review index,
the oversight board's summary, ``prompts status``).

Audio is judged by the prompts folder, as the IVR finds it: a recording (from the panel,
or placed on the server by hand), our rendered voice (current, or made from an older text
when rendering failed), or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from crisisline.config import Settings
from crisisline.prompts import files
from crisisline.prompts.availability import available_languages
from crisisline.prompts.catalog import Catalog
from crisisline.prompts.overlay import Conflict, apply_reviews, conflict_of
from crisisline.prompts.render import _read_manifest, has_voice, plan
from crisisline.prompts.reviews import PromptReview
from crisisline.prompts.workspace import prompts_for

# What plays for a prompt now (its first file, for prompts with several).
RECORDING, HAND_RECORDING, RENDERED, OUTDATED, MISSING = (
    "recording", "recording placed on the server", "rendered voice",
    "rendered from an earlier text", "missing")


@dataclass
class PromptState:
    name: str
    audience: str
    description: str
    english: str | None
    text: str | None  # what the line says now in this language (None: no text yet)
    status: str | None  # draft / reviewed (None: no text)
    reviewer: str | None
    reviewed_at: datetime | None
    edited_by: str | None
    edited_at: datetime | None
    version: int
    conflict: Conflict | None
    stems: list[str]
    recordable: bool
    audio: str  # one of RECORDING, HAND_RECORDING, RENDERED, OUTDATED, MISSING
    missing_why: str | None = None
    recording: PromptReview | None = None  # the row, when the panel made the recording
    recording_outdated: bool = False  # recorded from a text that has changed since
    spoken: str | None = None  # the text as said, placeholders filled ("... press 4.")


@dataclass
class LanguageSummary:
    code: str
    name: str
    prompts: int = 0
    reviewed: int = 0
    draft: int = 0
    no_text: int = 0
    recorded: int = 0
    missing_audio: int = 0
    conflicts: int = 0
    outdated_recordings: int = 0
    on_menu: bool = False
    configured: bool = False
    missing: list[str] = field(default_factory=list)  # caller prompts without audio


def _audio(settings: Settings, catalog: Catalog, lang: str, stem: str, source_hash: str | None,
           row: PromptReview | None, manifest: dict[str, dict[str, str]]) -> str:
    path = files.audio_path(settings, lang, stem)
    if path is None:
        return MISSING
    entry = manifest.get(f"{lang}/{stem}.wav")
    if path.suffix == ".wav" and entry and files.sha256_of(path) == entry.get("output"):
        return RENDERED if entry.get("source") == source_hash else OUTDATED
    if row is not None and row.has_recording and path.suffix == ".wav" \
            and files.sha256_of(path) == row.recording_sha256:
        return RECORDING
    return HAND_RECORDING


def language_state(settings: Settings, catalog: Catalog, rows: Iterable[PromptReview],
                   lang: str) -> list[PromptState]:
    """Every prompt a reviewer of ``lang`` works on, with what callers hear now.
    ``catalog`` is the shipped one; ``rows`` every review row (of any language)."""
    rows = list(rows)
    mine = {r.prompt: r for r in rows if r.language == lang}
    live = apply_reviews(catalog, rows)
    manifest = _read_manifest(settings.prompts_path)
    jobs: dict[str, list] = {}
    for job in plan(settings, live, [lang]):
        jobs.setdefault(job.prompt, []).append(job)
    voice = catalog.languages[lang].voice
    out = []
    for name in prompts_for(catalog, lang):
        prompt, row = live.prompts[name], mine.get(name)
        entry, en = prompt.texts.get(lang), prompt.texts.get("en")
        first = jobs.get(name, [None])[0]
        stems = [j.file for j in jobs.get(name, [])]
        audio = _audio(settings, live, lang, first.file, first.source_hash if first.text else None,
                       row, manifest) if first else MISSING
        why = None
        if audio == MISSING:
            why = ("no text yet" if entry is None else
                   f"espeak-ng has no voice for {catalog.languages[lang].name}: only a recording "
                   "gives callers this prompt" if not has_voice(voice) else
                   "not rendered yet (peoples-response prompts render)")
        out.append(PromptState(
            name=name, audience=prompt.audience, description=prompt.description,
            english=en.text if en else None, text=entry.text if entry else None,
            status=entry.status if entry else None,
            reviewer=(row.reviewer if row and row.text is not None else
                      entry.reviewer if entry else None),
            reviewed_at=row.reviewed_at if row and row.text is not None else None,
            edited_by=row.text_by if row else None, edited_at=row.text_at if row else None,
            version=row.version if row else 0,
            conflict=conflict_of(catalog, row) if row else None, stems=stems,
            recordable=stems == [name], audio=audio, missing_why=why,
            spoken=first.text if first else None,
            recording=row if row and row.has_recording else None,
            recording_outdated=bool(row and row.has_recording and first
                                    and row.recording_text != first.text)))
    return out


def summaries(settings: Settings, catalog: Catalog, rows: Iterable[PromptReview],
              languages: Iterable[str] | None = None) -> list[LanguageSummary]:
    """Per language (configured ones first, in menu order): counts of prompts by state."""
    rows = list(rows)
    live = apply_reviews(catalog, rows)
    offered = set(available_languages(settings, live))
    order = [c for c in settings.languages if c in catalog.languages]
    order += [c for c in catalog.languages if c not in order]
    wanted = set(order if languages is None else languages)
    out = []
    for lang in (c for c in order if c in wanted):
        s = LanguageSummary(lang, catalog.languages[lang].name, on_menu=lang in offered,
                            configured=lang in settings.languages)
        for p in language_state(settings, catalog, rows, lang):
            s.prompts += 1
            if p.text is None:
                s.no_text += 1
            elif p.status == "reviewed":
                s.reviewed += 1
            else:
                s.draft += 1
            if p.audio in (RECORDING, HAND_RECORDING):
                s.recorded += 1
            if p.audio == MISSING:
                s.missing_audio += 1
                if p.audience == "caller":
                    s.missing.append(p.name)
            s.conflicts += p.conflict is not None
            s.outdated_recordings += p.recording_outdated
        out.append(s)
    return out


def outdated_recordings(settings: Settings, catalog: Catalog,
                        rows: Iterable[PromptReview]) -> list[tuple[str, str]]:
    """(language, prompt) of panel recordings that read a text the line no longer says
    (the text was corrected, or a menu key moved when PR_LANGUAGES was reordered)."""
    rows = list(rows)
    live = apply_reviews(catalog, rows)
    out = []
    for row in rows:
        if not row.has_recording or row.prompt not in live.prompts \
                or row.language not in live.languages:
            continue
        jobs = [j for j in plan(settings, live, [row.language]) if j.prompt == row.prompt]
        if jobs and row.recording_text != jobs[0].text:
            out.append((row.language, row.prompt))
    return out
