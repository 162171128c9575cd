"""The prompt catalog: what the line says, per language, loaded from catalog.yaml.

The catalog is data. Adding a language is a `languages:` entry plus a text per caller
prompt; nothing here changes. Every load is validated and every error names the prompt
and the language it is about.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from crisisline.config import Settings

# texter: what the text line (chat page, SMS replies) writes; never rendered to audio.
AUDIENCES = ("caller", "responder", "texter")
STATUSES = ("draft", "reviewed")
# The only {placeholders} a text may use ({phone}, {minutes}, {days}: texter texts).
FIELDS = frozenset({"key", "language", "neighborhood", "phone", "minutes", "days"})
RESPONDER_REQUIRED = ("en",)  # responders must at least hear English
# Texters must at least read English: a language without every texter text falls back to
# English for the whole conversation (crisisline.textflow), never a mix of the two.
TEXTER_REQUIRED = ("en",)
LANGUAGE_KEYS = ("name", "native_name", "voice", "menu_word")


class CatalogError(ValueError):
    """The catalog file can't be used; the message says which prompt and language."""


@dataclass(frozen=True)
class LanguageInfo:
    code: str
    name: str  # in English
    native_name: str
    voice: str  # espeak-ng voice
    menu_word: str
    names: dict[str, str] = field(default_factory=dict)  # its name in other languages

    def name_in(self, lang: str) -> str:
        """This language's name as a speaker of ``lang`` would say it."""
        if lang == self.code:
            return self.native_name
        if lang in self.names:
            return self.names[lang]
        return self.name


@dataclass(frozen=True)
class Text:
    text: str
    status: str
    reviewer: str | None


@dataclass(frozen=True)
class Prompt:
    name: str
    audience: str
    description: str
    texts: dict[str, Text]


@dataclass(frozen=True)
class Catalog:
    languages: dict[str, LanguageInfo]
    prompts: dict[str, Prompt]
    source: str = ""

    def prompt_names(self, audience: str | None = None) -> list[str]:
        if audience is not None and audience not in AUDIENCES:
            raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
        return [n for n, p in self.prompts.items() if audience in (None, p.audience)]

    def _entry(self, name: str, lang: str) -> Text:
        prompt = self.prompts.get(name)
        if prompt is None:
            raise KeyError(f"no prompt {name!r} in the catalog")
        entry = prompt.texts.get(lang)
        if entry is None:
            raise KeyError(f"prompt {name!r} has no text in language {lang!r}")
        return entry

    def text(self, name: str, lang: str, **fields: Any) -> str:
        entry = self._entry(name, lang)
        try:
            return entry.text.format_map(fields)
        except KeyError as exc:
            raise KeyError(f"prompt {name!r} ({lang}) needs the field {exc.args[0]!r}") from None

    def status(self, name: str, lang: str) -> str:
        return self._entry(name, lang).status

    def missing(self) -> list[tuple[str, str]]:
        """(prompt, language) pairs without text: callers in every language, responders and
        texters in en."""
        out: list[tuple[str, str]] = []
        for name, prompt in self.prompts.items():
            langs = self.languages if prompt.audience == "caller" else \
                TEXTER_REQUIRED if prompt.audience == "texter" else RESPONDER_REQUIRED
            out.extend((name, lang) for lang in langs if lang not in prompt.texts)
        return out


def normalize(text: str) -> str:
    """A text as the line says it: runs of spaces and line breaks become one space."""
    return " ".join(text.split())


def placeholders(text: str) -> set[str]:
    """The {fields} a text uses (raises ValueError on unbalanced braces)."""
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def text_problem(text: str, needs: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Why ``text`` can't be a prompt's text, or None. ``needs``: placeholders it must keep
    (a menu line without {key} would never say which key to press)."""
    if not isinstance(text, str) or not text.strip():
        return "missing text"
    try:
        used = placeholders(text)
    except ValueError as exc:
        return f"bad braces in text: {exc}"
    bad = sorted(used - FIELDS)
    if bad:
        return (f"unknown placeholder {{{bad[0]}}} "
                f"(allowed: {', '.join('{' + f + '}' for f in sorted(FIELDS))})")
    absent = sorted(set(needs) - used)
    if absent:
        return f"the text must keep {{{absent[0]}}}, where the line fills it in"
    return None


def prompt_file(settings: Settings, lang: str, name: str) -> str:
    """The name Asterisk plays (STREAM FILE / Playback): no extension."""
    return f"{settings.asterisk_prompts_path}/{lang}/{name}"


def load_catalog(path: str | Path | None = None) -> Catalog:
    if path is None:
        ref = resources.files("crisisline.prompts") / "catalog.yaml"
        raw, source = ref.read_text(encoding="utf-8"), "crisisline/prompts/catalog.yaml"
    else:
        try:
            raw, source = Path(path).read_text(encoding="utf-8"), str(path)
        except FileNotFoundError:
            raise CatalogError(f"prompt catalog {path} does not exist") from None
    try:
        # libyaml's loader when PyYAML has it: 9x faster, which every classic-AGI process
        # (one per call) pays at start; same safe subset of YAML.
        data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise CatalogError(f"prompt catalog {source}: not valid YAML: {exc}") from None
    return _parse(data, source)


def _parse(data: Any, source: str) -> Catalog:
    def fail(msg: str) -> CatalogError:
        return CatalogError(f"prompt catalog {source}: {msg}")

    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict) \
            or not isinstance(data.get("prompts"), dict):
        raise fail("needs a `languages:` map and a `prompts:` map")
    languages: dict[str, LanguageInfo] = {}
    for code, info in data["languages"].items():
        if not isinstance(info, dict):
            raise fail(f"language {code!r} must be a map")
        absent = [k for k in LANGUAGE_KEYS if not isinstance(info.get(k), str) or not info[k]]
        if absent:
            raise fail(f"language {code!r} lacks {', '.join(absent)}")
        names = info.get("names") or {}
        if not isinstance(names, dict):
            raise fail(f"language {code!r}: names must be a map of language code to name")
        languages[str(code)] = LanguageInfo(
            str(code), info["name"], info["native_name"], info["voice"], info["menu_word"],
            {str(k): str(v) for k, v in names.items()})
    prompts = {str(n): _parse_prompt(str(n), p, languages, fail)
               for n, p in data["prompts"].items()}
    return Catalog(languages, prompts, source)


def _parse_prompt(name: str, data: Any, languages: dict[str, LanguageInfo], fail: Any) -> Prompt:
    if not isinstance(data, dict):
        raise fail(f"prompt {name!r} must be a map")
    audience = data.get("audience")
    if audience not in AUDIENCES:
        raise fail(f"prompt {name!r}: audience must be one of {', '.join(AUDIENCES)}, "
                   f"got {audience!r}")
    texts_raw = data.get("texts")
    if not isinstance(texts_raw, dict) or not texts_raw:
        raise fail(f"prompt {name!r} has no texts")
    texts: dict[str, Text] = {}
    for lang, entry in texts_raw.items():
        where = f"prompt {name!r}, language {lang!r}"
        if lang not in languages:
            raise fail(f"{where}: {lang!r} is not under `languages:`")
        if not isinstance(entry, dict):
            raise fail(f"{where}: expected text, status and reviewer")
        text, status, reviewer = entry.get("text"), entry.get("status"), entry.get("reviewer")
        if not isinstance(text, str) or not text.strip():
            raise fail(f"{where}: missing text")
        if status not in STATUSES:
            raise fail(f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
        if reviewer is not None and not isinstance(reviewer, str):
            raise fail(f"{where}: reviewer must be a name or null")
        if status == "reviewed" and not reviewer:
            raise fail(f"{where}: status reviewed needs the reviewer's name")
        problem = text_problem(text)
        if problem:
            raise fail(f"{where}: {problem}")
        texts[str(lang)] = Text(normalize(text), status, reviewer)
    return Prompt(name, audience, str(data.get("description") or ""), texts)
