"""The catalog the line speaks: the shipped catalog with reviewers' work laid on top.

Pure: takes the catalog and the review rows (anything with the attributes of
crisisline.prompts.reviews.PromptReview) and returns a new Catalog. A reviewer's text
always wins over the shipped one, so a release can never undo a review; when a release
changes the shipped text of a prompt a reviewer had worked on, the pair is a
:class:`Conflict` (both texts shown, a reviewer decides) instead of a silent overwrite of
either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from crisisline.prompts.catalog import Catalog, Prompt, Text, normalize, placeholders


class ReviewLike(Protocol):
    language: str
    prompt: str
    text: str | None
    status: str
    reviewer: str | None
    base_text: str | None


@dataclass(frozen=True)
class Conflict:
    language: str
    prompt: str
    reviewer_text: str  # what the line says now
    catalog_text: str | None  # what the new release ships (None: it dropped this text)
    base_text: str | None  # what the release shipped when the reviewer worked on it


def _same(a: str | None, b: str | None) -> bool:
    return (normalize(a) if a else None) == (normalize(b) if b else None)


def shipped_text(catalog: Catalog, language: str, prompt: str) -> str | None:
    entry = catalog.prompts[prompt].texts.get(language) if prompt in catalog.prompts else None
    return entry.text if entry else None


def conflict_of(catalog: Catalog, row: ReviewLike) -> Conflict | None:
    """A conflict when the shipped text changed since the reviewer's text was based on it,
    unless the release now ships the reviewer's own text (the site committed an export)."""
    if row.text is None or row.prompt not in catalog.prompts:
        return None
    shipped = shipped_text(catalog, row.language, row.prompt)
    if _same(shipped, row.base_text) or _same(shipped, row.text):
        return None
    return Conflict(row.language, row.prompt, row.text, shipped, row.base_text)


def conflicts(catalog: Catalog, rows: Iterable[ReviewLike]) -> list[Conflict]:
    found = (conflict_of(catalog, row) for row in rows)
    return sorted((c for c in found if c), key=lambda c: (c.language, c.prompt))


def apply_reviews(catalog: Catalog, rows: Iterable[ReviewLike]) -> Catalog:
    """The catalog with every reviewer's text and status in place of the shipped ones.

    Rows for a prompt or language the catalog no longer has are left out (they stay in
    SQL: a release that brings the prompt back finds them again)."""
    texts: dict[str, dict[str, Text]] = {}
    for row in rows:
        if row.text is None or row.prompt not in catalog.prompts \
                or row.language not in catalog.languages:
            continue
        reviewer = row.reviewer if row.status == "reviewed" else None
        texts.setdefault(row.prompt, {})[row.language] = Text(normalize(row.text), row.status,
                                                               reviewer)
    if not texts:
        return catalog
    prompts: dict[str, Prompt] = {}
    for name, prompt in catalog.prompts.items():
        changed = texts.get(name)
        prompts[name] = replace(prompt, texts={**prompt.texts, **changed}) if changed else prompt
    return replace(catalog, prompts=prompts)


def needed_fields(catalog: Catalog, prompt: str) -> frozenset[str]:
    """Placeholders every shipped text of ``prompt`` uses: a reviewer's text must keep them
    ({key} in a menu line, {neighborhood} in the whisper's neighborhood)."""
    sets = [placeholders(t.text) for t in catalog.prompts[prompt].texts.values()]
    return frozenset(set.intersection(*sets)) if sets else frozenset()
