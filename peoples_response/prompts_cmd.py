"""``peoples-response prompts render|status``."""

from __future__ import annotations

import argparse
import sys

from crisisline.config import Settings
from crisisline.prompts.availability import available_languages
from crisisline.prompts.catalog import load_catalog
from crisisline.prompts.render import RenderReport, ToolMissing, audio_status, render_all


def _progress(done: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        print(f"\r  [{done}/{total}] {name:<48}", end="", file=sys.stderr, flush=True)
    elif done == total or done % 25 == 0:
        print(f"  [{done}/{total}] {name}", file=sys.stderr, flush=True)


def _summary(report: RenderReport) -> str:
    return (f"{len(report.rendered)} rendered, {len(report.unchanged)} unchanged, "
            f"{len(report.recorded)} human recordings kept, {len(report.missing_audio)} missing")


def render(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = render_all(settings, load_catalog(), languages=args.language,
                            progress=_progress, force=args.force)
    except ToolMissing as exc:
        print(f"prompts render: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"prompts render: {_summary(report)} (in {settings.prompts_path})")
    for problem in report.problems:
        print(f"  missing: {problem}")
    return 1 if report.missing_audio else 0


def render_missing(settings: Settings) -> None:
    """For ``up``: render what's missing, quietly unless something is wrong."""
    try:
        report = render_all(settings, load_catalog())
    except ToolMissing as exc:
        print(f"peoples-response up: can't render prompts: {exc}", file=sys.stderr)
        return
    if report.rendered:
        print(f"prompts: {_summary(report)}", flush=True)
    for problem in report.problems:
        print(f"prompts: missing {problem}", file=sys.stderr)


def status(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog()
    rows = audio_status(settings, catalog)
    print(f"{'language':<10}{'reviewed':>10}{'draft':>8}{'missing audio':>15}{'recorded':>10}")
    for lang, row in rows.items():
        print(f"{lang:<10}{len(row['reviewed']):>10}{len(row['draft']):>8}"
              f"{len(row['missing_audio']):>15}{len(row['recorded']):>10}")
    offered = available_languages(settings, catalog)
    left_out = [lang for lang in settings.languages if lang not in offered]
    if left_out:
        # Said here too, so nobody wonders why a configured language is never offered.
        print(f"left off the language menu (a caller prompt has no audio): {', '.join(left_out)}")
    return 0
