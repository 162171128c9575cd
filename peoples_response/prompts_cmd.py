"""``peoples-response prompts render|status|export``.

Every one of them works on the catalog the line speaks: the shipped catalog with the
reviewers' texts (SQL) on top. Rendering from the shipped catalog alone would put the
shipped texts back over reviewed ones, so when SQL can't be read, render refuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crisisline.config import Settings
from crisisline.prompts.availability import available_languages
from crisisline.prompts.catalog import Catalog, load_catalog
from crisisline.prompts.files import restore_recordings
from crisisline.prompts.overlay import apply_reviews, conflicts
from crisisline.prompts.render import RenderReport, ToolMissing, audio_status, render_all
from crisisline.prompts.reviews import PromptReview, read_all


def _progress(done: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        print(f"\r  [{done}/{total}] {name:<48}", end="", file=sys.stderr, flush=True)
    elif done == total or done % 25 == 0:
        print(f"  [{done}/{total}] {name}", file=sys.stderr, flush=True)


def _summary(report: RenderReport) -> str:
    return (f"{len(report.rendered)} rendered, {len(report.unchanged)} unchanged, "
            f"{len(report.recorded)} human recordings kept, {len(report.missing_audio)} missing")


def _live(settings: Settings, with_audio: bool = False) -> tuple[Catalog, list[PromptReview]]:
    """(shipped catalog, review rows); raises what SQL raises."""
    return load_catalog(), read_all(settings, with_audio=with_audio)


def _restore(settings: Settings, rows: list[PromptReview]) -> list[str]:
    return restore_recordings(settings, [(r.language, r.prompt, r.recording_sha256, r.recording_wav)
                                         for r in rows if r.has_recording and r.recording_wav])


def render(args: argparse.Namespace, settings: Settings) -> int:
    try:
        catalog, rows = _live(settings, with_audio=True)
    except Exception as exc:  # SQL unreachable, bad URL, ...: say it, render nothing
        print(f"prompts render: can't read the reviewers' texts from SQL ({exc}); nothing was "
              "rendered (the shipped texts would replace reviewed ones)", file=sys.stderr)
        return 2
    restored = _restore(settings, rows)
    try:
        report = render_all(settings, apply_reviews(catalog, rows), languages=args.language,
                            progress=_progress, force=args.force)
    except ToolMissing as exc:
        print(f"prompts render: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"prompts render: {_summary(report)} (in {settings.prompts_path})")
    if restored:
        print(f"  restored {len(restored)} recording(s) made in the panel: {', '.join(restored)}")
    for problem in report.problems:
        print(f"  missing: {problem}")
    return 1 if report.missing_audio else 0


def render_missing(settings: Settings) -> None:
    """For ``up``: render what's missing, quietly unless something is wrong."""
    try:
        catalog, rows = _live(settings, with_audio=True)
    except Exception as exc:
        print(f"peoples-response up: can't read the reviewers' texts from SQL ({exc}); "
              "prompts not rendered", file=sys.stderr)
        return
    restored = _restore(settings, rows)
    if restored:
        print(f"prompts: restored {len(restored)} recording(s) made in the panel", flush=True)
    try:
        report = render_all(settings, apply_reviews(catalog, rows))
    except ToolMissing as exc:
        print(f"peoples-response up: can't render prompts: {exc}", file=sys.stderr)
        return
    if report.rendered:
        print(f"prompts: {_summary(report)}", flush=True)
    for problem in report.problems:
        print(f"prompts: missing {problem}", file=sys.stderr)


def status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        catalog, rows = _live(settings)
    except Exception as exc:
        print(f"prompts status: can't read the reviewers' texts from SQL ({exc})", file=sys.stderr)
        return 2
    live = apply_reviews(catalog, rows)
    clash = conflicts(catalog, rows)
    rows_by_lang = audio_status(settings, live)
    print(f"{'language':<10}{'reviewed':>10}{'draft':>8}{'missing audio':>15}{'recorded':>10}"
          f"{'conflicts':>11}")
    for lang, row in rows_by_lang.items():
        n = sum(c.language == lang for c in clash)
        print(f"{lang:<10}{len(row['reviewed']):>10}{len(row['draft']):>8}"
              f"{len(row['missing_audio']):>15}{len(row['recorded']):>10}{n:>11}")
    offered = available_languages(settings, live)
    print(f"on the language menu: {', '.join(offered) or '(none)'}")
    left_out = [lang for lang in settings.languages if lang not in offered]
    if not offered:
        # A fresh clone: say what to do, not only that every language is off the menu.
        if not any(row["recorded"] or row["reviewed"] or row["draft"]
                   for row in rows_by_lang.values()):
            print(f"nothing is rendered yet in {settings.prompts_path}: run `peoples-response "
                  "prompts render` (espeak-ng voices every language it has; about a minute), or "
                  "start `peoples-response up`, which renders what is missing first")
        else:
            print("no language has audio for every caller prompt: run `peoples-response prompts "
                  "render`; `peoples-response check` lists what is missing")
        texter_status(settings, live)
        return 1
    if left_out:
        # Said here too, so nobody wonders why a configured language is never offered.
        print(f"left off the language menu (a caller prompt has no audio): {', '.join(left_out)}")
    for c in clash:
        print(f"conflict: {c.language}/{c.prompt}: a release changed the text a reviewer worked "
              "on; a reviewer chooses on the review page")
    texter_status(settings, live)
    return 0


def texter_status(settings: Settings, catalog: Catalog) -> None:
    """The text line's words (audience texter: read, never heard) per configured language."""
    from crisisline.textflow import TEXTER_PROMPTS

    names = [n for n in catalog.prompt_names("texter") if n in TEXTER_PROMPTS]
    print(f"text line (chat and SMS replies; read, never heard): {len(names)} texts")
    print(f"{'language':<10}{'reviewed':>10}{'draft':>8}{'missing':>9}  written in")
    for lang in settings.languages:
        texts = [catalog.prompts[n].texts.get(lang) for n in names]
        reviewed = sum(1 for t in texts if t and t.status == "reviewed")
        draft = sum(1 for t in texts if t and t.status == "draft")
        missing = sum(1 for t in texts if t is None)
        written = lang if not missing else f"{settings.default_language} (for all of it)"
        print(f"{lang:<10}{reviewed:>10}{draft:>8}{missing:>9}  {written}")


def export(args: argparse.Namespace, settings: Settings) -> int:
    from crisisline.prompts.export import export as write_export

    try:
        catalog, rows = _live(settings, with_audio=True)
    except Exception as exc:
        print(f"prompts export: can't read the reviewers' texts from SQL ({exc})", file=sys.stderr)
        return 2
    out = Path(args.out)
    report = write_export(catalog, rows, out)
    print(f"prompts export: {report.texts} texts ({report.reviewed} reviewed) to {report.catalog}; "
          f"{len(report.recordings)} recording(s) to {out / 'recordings'}")
    for rel in report.conflicts:
        print(f"  conflict (exported with the reviewer's text): {rel}")
    for rel in report.damaged:
        print(f"  not exported, its stored audio does not match its hash: {rel}", file=sys.stderr)
    return 1 if report.damaged else 0
