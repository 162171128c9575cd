"""The language menu's live facts for the IVR: which languages it offers, which can be
chosen by voice, and the recognition of a spoken choice.

Both are worked out off the call path: which languages have all their audio is checked at
start and again every ``REFRESH_S`` in a thread (a recording dropped into the prompts folder
brings its language back without a restart); speech models load in a background thread,
once per process, and until one has loaded its language is keys only. A caller never waits
for either.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from crisisline.config import Settings
from crisisline.prompts.availability import available_languages
from crisisline.prompts.catalog import Catalog, load_catalog

log = logging.getLogger(__name__)
REFRESH_S = 30.0

# Loaded models, shared by every app in the process: a model is hundreds of MB.
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


class MenuLanguages:
    def __init__(self, settings: Settings, catalog: Catalog | None = None,
                 load_speech: bool = True) -> None:
        self.settings = settings
        try:
            self.catalog: Catalog | None = catalog or load_catalog()
        except (OSError, ValueError) as exc:
            # `check` reports it; the line keeps answering with every configured language.
            log.error("prompt catalog unusable (%s); offering every configured language", exc)
            self.catalog = None
        self._offered = self._compute()
        self._checked_at = time.monotonic()
        self._refreshing = False
        self.models: dict[str, Any] = {}
        self.models_loaded = threading.Event()
        if load_speech:
            threading.Thread(target=self._load_models, name="speech-models", daemon=True).start()
        else:
            self.models_loaded.set()

    def _compute(self) -> list[str]:
        if self.catalog is None:
            return list(self.settings.languages)
        return available_languages(self.settings, self.catalog)

    def refresh(self) -> list[str]:
        """Check the prompts folder now (also what the periodic refresh runs)."""
        offered = self._compute()
        left_out = [lang for lang in self.settings.languages if lang not in offered]
        if offered != self._offered and left_out:
            log.warning("languages left off the menu (a caller prompt has no audio): %s",
                        ", ".join(left_out))
        self._offered, self._checked_at = offered, time.monotonic()
        return offered

    def offered(self) -> list[str]:
        """The menu's languages; a stale answer triggers a refresh in a thread, never a wait."""
        if time.monotonic() - self._checked_at > REFRESH_S and not self._refreshing:
            self._refreshing = True

            def run() -> None:
                try:
                    self.refresh()
                except Exception:
                    log.exception("checking the prompts folder failed")
                finally:
                    self._refreshing = False

            threading.Thread(target=run, name="menu-refresh", daemon=True).start()
        return list(self._offered)

    def spoken(self) -> list[str]:
        """Offered languages a caller can name aloud: a model is loaded and has a menu word."""
        return [lang for lang in self._offered if lang in self.models]

    def _load_models(self) -> None:
        from crisisline.speech.models import ModelLoadError, load_model, model_path_for

        try:
            for lang in self.settings.languages:
                if self.catalog is None or lang not in self.catalog.languages:
                    continue
                path = model_path_for(self.settings, lang)
                if path is None:
                    continue  # no model: keys only, and nothing is ever recorded
                key = (lang, str(path))
                try:
                    with _MODELS_LOCK:
                        if key not in _MODELS:
                            _MODELS[key] = load_model(lang, path)
                    self.models[lang] = _MODELS[key]
                    log.info("spoken language choice enabled for %s", lang)
                except ModelLoadError as exc:
                    log.error("%s; %s stays keys only", exc, lang)
        finally:
            self.models_loaded.set()

    async def wait_models(self, timeout: float = 60.0) -> None:
        """For tests and start-up reports: until every model has loaded (or failed)."""
        await asyncio.to_thread(self.models_loaded.wait, timeout)

    async def recognize(self, path: Path, listen: tuple[str, ...]) -> str | None:
        """Which of ``listen`` the caller named in the recording at ``path``, or None."""
        if self.catalog is None:
            return None
        return await asyncio.to_thread(self._recognize, path, listen)

    def competitors(self, lang: str) -> list[str]:
        """Other languages' names in ``lang``: what its recognizer may hear instead.

        A grammar of one word maps any speech at all onto it (an English "hello" would
        choose Korean); with the other names beside it, speech that isn't the word lands
        elsewhere, and the caller gets the default language rather than a wrong one.
        """
        assert self.catalog is not None
        return [info.names[lang] for code, info in self.catalog.languages.items()
                if code != lang and info.names.get(lang)]

    def _recognize(self, path: Path, listen: tuple[str, ...]) -> str | None:
        from crisisline.speech.transcribe import AudioError, recognize_choice

        assert self.catalog is not None
        for lang in listen:
            model = self.models.get(lang)
            if model is None:
                continue
            word = self.catalog.languages[lang].menu_word
            try:
                if recognize_choice(model, path, [word, *self.competitors(lang)]) == word:
                    return lang
            except AudioError as exc:
                log.info("spoken language choice unusable: %s", exc.reason)
                return None
        return None
