"""``peoples-response agi``: serve FastAGI until interrupted; and the classic one-shot mode."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from agi.app import AgiApp
from agi.protocol import AgiProtocolError, read_headers
from agi.server import AgiServer
from agi.session import AgiSession
from crisisline.config import Settings
from crisisline.shutdown import stop_on_signals

log = logging.getLogger(__name__)


async def serve(settings: Settings, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    app = AgiApp.from_settings(settings)
    server = AgiServer(app)
    await server.start(host, port)
    log.info("FastAGI listening on %s:%d (handlers: %s)", host, server.port,
             ", ".join(sorted(server.handlers)))
    print(f"peoples-response agi: FastAGI on {host}:{server.port}", flush=True)
    with stop_on_signals() as stop:
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await server.close()
            await app.close()


async def classic(settings: Settings) -> int:
    """Asterisk's ``AGI(script)`` mode: one process per call over stdin/stdout.

    Kept for sites that want no AGI daemon; the IVR is the same code. The handler is named
    by the first argument (``AGI(peoples-response-agi,intake?source=direct)``) or by
    ``agi_network_script`` when present.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(sys.stdout.fileno(), "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    try:
        headers = await read_headers(reader, settings.agi_header_timeout_s)
    except AgiProtocolError as exc:
        log.error("classic AGI: no header block: %s", exc)
        return 1
    if "agi_network_script" not in headers.values and headers.args:
        headers.values["agi_network_script"] = headers.args[0]
    app = AgiApp.from_settings(settings, load_speech=False)  # keys only: see README
    try:
        await AgiServer(app).run(AgiSession(reader, writer, headers,
                                            settings.agi_command_timeout_s))
    finally:
        await app.close()
    return 0
