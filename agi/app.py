"""What every AGI handler needs, built once per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from agi.menu import MenuLanguages
from crisisline.config import Settings
from crisisline.stores import async_redis, sync_redis
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore

log = logging.getLogger(__name__)


@dataclass
class AgiApp:
    settings: Settings
    store: CallStore
    offers: OfferStore
    # Languages the menu offers (all audio present) and those a caller may say aloud.
    menu: MenuLanguages = field(default=None)  # type: ignore[assignment]
    # Work started by a call that must not hold the call up (speaking a note aloud).
    background: set[asyncio.Task] = field(default_factory=set)
    callbacks: CallbackStore = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.menu is None:
            self.menu = MenuLanguages(self.settings)
        if self.callbacks is None:
            self.callbacks = CallbackStore(self.store.redis)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def voice_for(self, language: str) -> str:
        """espeak-ng's voice for a language (English when it has none)."""
        from crisisline.prompts.render import has_voice

        catalog = self.menu.catalog
        info = catalog.languages.get(language) if catalog is not None else None
        voice = info.voice if info is not None else "en-us"
        try:
            return voice if has_voice(voice) else "en-us"
        except Exception:
            return "en-us"

    @classmethod
    def from_settings(cls, settings: Settings, load_speech: bool = True) -> AgiApp:
        """``load_speech=False`` for a process that serves one call (classic AGI): a model
        takes seconds and hundreds of MB to load, and would never be ready in time."""
        redis = async_redis(settings.effective_redis_url)
        return cls(settings, CallStore(redis), OfferStore(redis),
                   MenuLanguages(settings, load_speech=load_speech))

    async def enqueue_transcription(self, call_id: str, wav_path: str, language: str) -> None:
        """Hand the message to an RQ worker; the call never waits for it, nor fails on it."""
        try:
            await asyncio.to_thread(_enqueue, self.settings, call_id, wav_path, language)
        except Exception as exc:
            log.error("call %s: transcription not queued: %s", call_id, exc)
            await self.store.event(call_id, "transcript_failed", reason="not_queued")

    def prompt(self, language: str, name: str) -> str:
        """The name Asterisk plays for one of our prompts (no extension)."""
        return f"{self.settings.asterisk_prompts_path}/{language}/{name}"

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        await self.store.redis.aclose()


@cache
def _sync_redis(url: str):

    return sync_redis(url, socket_timeout=5, socket_connect_timeout=3)


def _enqueue(settings: Settings, call_id: str, wav_path: str, language: str) -> None:
    from workers.enqueue import enqueue_transcription

    enqueue_transcription(_sync_redis(settings.effective_redis_url), call_id, wav_path, language)
