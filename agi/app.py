"""What every AGI handler needs, built once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from crisisline.config import Settings
from crisisline.stores.calls import CallStore

log = logging.getLogger(__name__)


@dataclass
class AgiApp:
    settings: Settings
    store: CallStore

    @classmethod
    def from_settings(cls, settings: Settings) -> AgiApp:
        redis = Redis.from_url(settings.effective_redis_url, socket_timeout=5,
                               socket_connect_timeout=3, health_check_interval=30)
        return cls(settings, CallStore(redis))

    def prompt(self, language: str, name: str) -> str:
        """The name Asterisk plays for one of our prompts (no extension)."""
        return f"{self.settings.asterisk_prompts_path}/{language}/{name}"

    async def close(self) -> None:
        await self.store.redis.aclose()
