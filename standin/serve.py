"""``peoples-response standin``: the stand-in PBX with its AMI server, as a process.

Builds the PBX for our real dialplan (dialplan/extensions.conf) with the globals
Asterisk's entrypoint would set, serves AMI on settings.ami_host:ami_port, and runs
until SIGINT/SIGTERM, when every AMI session gets ``Event: Shutdown`` (as 'core stop
now' sends it) and the calls still up are hung up.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crisisline.config import Settings
from crisisline.shutdown import stop_on_signals
from standin.ami import AmiServer
from standin.pbx import StandinPBX

log = logging.getLogger(__name__)

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"
CORE_SOUNDS = Path("/usr/share/asterisk/sounds")
TIME_SCALE_ENV = "PR_STANDIN_TIME_SCALE"

Ready = Callable[[AmiServer], Any] | asyncio.Future[AmiServer] | None


def build_pbx(settings: Settings, time_scale: float | None = None, node: str = "",
              agi_urls: list[str] | None = None) -> StandinPBX:
    """The PBX as `serve` runs it; time_scale defaults to $PR_STANDIN_TIME_SCALE or 1.0.
    ``node``: its name on a line of several (as entrypoint.sh's PR_NODE_NAME); ``agi_urls``:
    the FastAGI servers, tried in order (as PR_AGI_URL), else settings' agi_host:agi_port."""
    if time_scale is None:
        time_scale = float(os.environ.get(TIME_SCALE_ENV) or "1.0")
    prefix = settings.asterisk_prompts_path.strip("/")
    return StandinPBX(
        DIALPLAN,
        globals_overrides={"PR_AGI": "|".join(agi_urls or
                                              [f"agi://{settings.agi_host}:{settings.agi_port}"]),
                           "PR_PROMPTS": prefix, "PR_REASSURE_S": str(settings.reassure_s),
                           "PR_NODE": node},
        sounds_dirs=[CORE_SOUNDS],
        prompts_dir=settings.prompts_path,
        prompts_prefix=prefix,
        time_scale=time_scale,
        system_name=node,
    )


async def serve(settings: Settings, ready: Ready = None, node: str = "",
                agi_urls: list[str] | None = None) -> None:
    """Serve AMI over a fresh stand-in PBX until SIGINT/SIGTERM (or cancellation).
    ``ready`` (a callable or a future) gets the started AmiServer."""
    if not settings.ami_secret:
        # An AMI that anyone on the host can drive rings responders: never without a secret.
        raise SystemExit("stand-in: refusing to serve AMI without a secret (set PR_AMI_SECRET)")
    pbx = build_pbx(settings, node=node, agi_urls=agi_urls)
    server = AmiServer(pbx, username=settings.ami_user, secret=settings.ami_secret,
                       host=settings.ami_host, port=settings.ami_port)
    await server.start()
    log.info("stand-in AMI on %s:%s (time scale %s)", settings.ami_host, server.port,
             pbx.time_scale)
    with stop_on_signals() as stop:
        try:
            if isinstance(ready, asyncio.Future):
                ready.set_result(server)
            elif ready is not None:
                ready(server)
            await stop.wait()
        finally:
            await server.close()
            await pbx.close()
