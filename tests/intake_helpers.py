"""Shared pieces for tests that run calls through the stand-in and our FastAGI server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from agi.app import AgiApp
from agi.server import AgiServer
from crisisline.config import ROOT, Settings
from crisisline.stores import sync_redis
from crisisline.stores.calls import CLAIMED, EVENTS, QUEUE, call_key
from standin.caller import CallerScript
from standin.channel import CallTrace
from standin.pbx import StandinPBX

CORE_SOUNDS = [Path("/usr/share/asterisk/sounds")]
EXTEN = {"direct": "6175550100", "911": "911000", "988": "988000"}


@asynccontextmanager
async def running_agi(settings: Settings, host: str = "127.0.0.1") -> AsyncIterator[AgiServer]:
    app = AgiApp.from_settings(settings)
    server = AgiServer(app)
    await server.start(host, 0)
    try:
        yield server
    finally:
        await server.close()
        await app.close()


def pbx_for(settings: Settings, agi_port: int, **kw: object) -> StandinPBX:
    return StandinPBX(ROOT / "dialplan" / "extensions.conf",
                      globals_overrides={"PR_AGI": f"agi://127.0.0.1:{agi_port}"},
                      sounds_dirs=CORE_SOUNDS, prompts_dir=settings.prompts_path,
                      prompts_prefix=settings.asterisk_prompts_path, **kw)


async def call(pbx: StandinPBX, source: str, script: CallerScript) -> CallTrace:
    return await pbx.place_call(f"from-{source}", EXTEN[source], script)


class Redis:
    """Synchronous look into the test database."""

    def __init__(self, url: str) -> None:
        self.client = sync_redis(url, decode_responses=True)

    def call(self, call_id: str) -> dict[str, str]:
        return self.client.hgetall(call_key(call_id))

    def waiting(self) -> list[str]:
        return self.client.zrange(QUEUE, 0, -1)

    def claimed(self) -> list[str]:
        return self.client.zrange(CLAIMED, 0, -1)

    def events(self, call_id: str | None = None) -> list[dict[str, str]]:
        return [body for _, body in self.client.xrange(EVENTS)
                if call_id is None or body.get("call_id") == call_id]

    def all_calls(self) -> list[dict[str, str]]:
        return [self.client.hgetall(k) for k in self.client.scan_iter("pr:call:*")]


def with_prompts(settings: Settings, prompts: Path) -> Settings:
    return dataclasses.replace(settings, prompts_dir=str(prompts))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait for something another task does (bounded; never a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()
