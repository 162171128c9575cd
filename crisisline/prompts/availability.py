"""Which configured languages the menu may offer: those with audio for every caller prompt.

A language with any caller prompt that has neither a human recording nor a rendered file
(e.g. Somali: espeak-ng has no voice for it) is left off the menu, so a caller never hears
silence or another language's voice pretending to be theirs. Dropping a recording into the
prompts folder brings it back (the AGI app re-checks periodically).
"""

from __future__ import annotations

from pathlib import Path

from crisisline.config import Settings
from crisisline.prompts.catalog import Catalog

# Formats Asterisk plays by file name without extension (a recording may be any of them).
AUDIO_EXTENSIONS = ("wav", "WAV", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "g722", "g729")


def has_audio(folder: Path, name: str) -> bool:
    return any((folder / f"{name}.{ext}").is_file() for ext in AUDIO_EXTENSIONS)


def missing_caller_audio(settings: Settings, catalog: Catalog, lang: str) -> list[str]:
    """Caller prompts of ``lang`` with no audio file at all (rendered or recorded)."""
    folder = settings.prompts_path / lang
    return [name for name in catalog.prompt_names("caller") if not has_audio(folder, name)]


def available_languages(settings: Settings, catalog: Catalog) -> list[str]:
    """Configured languages, in menu order, whose every caller prompt has audio."""
    return [lang for lang in settings.languages
            if lang in catalog.languages and not missing_caller_audio(settings, catalog, lang)]
