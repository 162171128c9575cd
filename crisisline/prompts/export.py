"""``prompts export``: the reviewers' work leaves the server as data.

The catalog the line speaks (shipped catalog + reviewed texts and their status) is written
in catalog.yaml's own format, so a site can commit it over crisisline/prompts/catalog.yaml
and another city can start from it; the recordings made in the panel are written beside it
as ``recordings/<lang>/<prompt>.wav`` (8 kHz mono WAV, ready for a prompts folder). A
prompt in conflict is exported with the reviewer's text (what the line says) and the
release's text in a comment above it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crisisline.prompts.catalog import Catalog
from crisisline.prompts.overlay import apply_reviews, conflicts
from crisisline.prompts.reviews import PromptReview

HEADER = """\
# What the People's Response line says, exported by `peoples-response prompts export`
# on {when}: the shipped catalog with every text reviewers corrected or approved in the
# panel. Same format as crisisline/prompts/catalog.yaml (see the comments there):
# status reviewed = a native speaker approved it; reviewer = their panel account.
# Recordings made in the panel are in recordings/<lang>/<prompt>.wav beside this file.
"""


@dataclass
class ExportReport:
    catalog: Path
    texts: int = 0
    reviewed: int = 0
    recordings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def _q(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: every character survives.
    return json.dumps(value, ensure_ascii=False)


def catalog_yaml(catalog: Catalog, rows: Iterable[PromptReview], when: datetime) -> str:
    rows = list(rows)
    live = apply_reviews(catalog, rows)
    clash = {(c.language, c.prompt): c for c in conflicts(catalog, rows)}
    lines = [HEADER.format(when=when.strftime("%Y-%m-%d %H:%M UTC")), "languages:"]
    for code, info in live.languages.items():
        lines += [f"  {code}:", f"    name: {_q(info.name)}", f"    native_name: {_q(info.native_name)}",
                  f"    voice: {_q(info.voice)}", f"    menu_word: {_q(info.menu_word)}"]
        if info.names:
            pairs = ", ".join(f"{k}: {_q(v)}" for k, v in info.names.items())
            lines.append(f"    names: {{{pairs}}}")
    lines += ["", "prompts:"]
    for name, prompt in live.prompts.items():
        lines += [f"  {name}:", f"    audience: {prompt.audience}",
                  f"    description: {_q(prompt.description)}", "    texts:"]
        for lang, text in prompt.texts.items():
            c = clash.get((lang, name))
            if c is not None:
                lines.append(f"      # CONFLICT: the release ships {_q(c.catalog_text or '(no text)')}; "
                             "a reviewer has not chosen yet")
            reviewer = _q(text.reviewer) if text.reviewer else "null"
            lines.append(f"      {lang}: {{text: {_q(text.text)}, status: {text.status}, "
                         f"reviewer: {reviewer}}}")
        lines.append("")
    return "\n".join(lines)


def export(catalog: Catalog, rows: Iterable[PromptReview], out: Path,
           when: datetime | None = None) -> ExportReport:
    """Write ``out/catalog.yaml`` and ``out/recordings/``; rows must have their audio loaded."""
    rows = list(rows)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "catalog.yaml"
    path.write_text(catalog_yaml(catalog, rows, when or datetime.now(UTC)), encoding="utf-8")
    report = ExportReport(path)
    live = apply_reviews(catalog, rows)
    for prompt in live.prompts.values():
        report.texts += len(prompt.texts)
        report.reviewed += sum(t.status == "reviewed" for t in prompt.texts.values())
    report.conflicts = [f"{c.language}/{c.prompt}" for c in conflicts(catalog, rows)]
    for row in rows:
        if not row.has_recording or row.prompt not in catalog.prompts:
            continue
        rel = f"{row.language}/{row.prompt}.wav"
        wav = row.recording_wav or b""
        if hashlib.sha256(wav).hexdigest() != row.recording_sha256:
            report.damaged.append(rel)
            continue
        target = out / "recordings" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav)
        report.recordings.append(rel)
    return report
