"""The FastAGI server: many calls at once in one asyncio process, one session per call."""

from __future__ import annotations

import asyncio
import logging

from agi.app import AgiApp
from agi.handlers import Handler, load_all
from agi.protocol import (
    MAX_LINE_BYTES,
    AgiCommandError,
    AgiConnectionClosed,
    AgiProtocolError,
    read_headers,
)
from agi.session import AgiSession, CallerHungUp
from crisisline.call import State

log = logging.getLogger(__name__)
# asyncio's default listen backlog (100) overflowed when 1000 calls connected at once: some
# connects retried past Asterisk's 2 s FastAGI connect timeout and went to the fallback group.
BACKLOG = 4096


class AgiServer:
    def __init__(self, app: AgiApp, handlers: dict[str, Handler] | None = None) -> None:
        self.app = app
        self.handlers = handlers if handlers is not None else load_all()
        self.sessions = 0
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, asyncio.Task] = {}
        self.killed = False
        self.closing = False

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self.handle, host, port,
                                                  limit=MAX_LINE_BYTES, reuse_address=True,
                                                  backlog=BACKLOG)
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop serving. Sessions still open end as a dropped connection would: the
        dialplan goes on to the waiting room (queued) or the fallback group (not queued)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._open.values())
        for writer, task in list(self._open.items()):
            task.cancel()
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def abort(self) -> None:
        """As if the process were killed: stop listening, drop every session's socket, and
        finish nothing (no clean-up, no Redis writes)."""
        self.killed = True
        if self._server is not None:
            self._server.close()
        for writer, task in list(self._open.items()):
            task.cancel()  # a killed process finishes nothing
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            headers = await read_headers(reader, self.app.settings.agi_header_timeout_s)
        except AgiConnectionClosed as exc:
            # A health check (or `up` waiting for the port) connects and leaves: not a call.
            log.info("FastAGI connection from %s closed before its headers: %s", peer, exc)
            writer.close()
            return
        except AgiProtocolError as exc:
            # The dialplan sees no PR_QUEUED and rings the fallback group.
            log.warning("FastAGI connection from %s dropped before its headers: %s", peer, exc)
            writer.close()
            return
        session = AgiSession(reader, writer, headers, self.app.settings.agi_command_timeout_s)
        task = asyncio.current_task()
        if task is not None:
            self._open[writer] = task
        try:
            await self.run(session)
        except asyncio.CancelledError:
            # Ended by close()/abort(): finish quietly (on Python 3.11 a cancelled
            # connection handler is logged as an error by asyncio's streams).
            if not (self.closing or self.killed):
                raise
        finally:
            self._open.pop(writer, None)

    async def run(self, session: AgiSession) -> None:
        """Run one session to its end; never lets an error leave a caller without a path."""
        name = session.headers.script
        handler = self.handlers.get(name)
        self.sessions += 1
        try:
            if handler is None:
                log.error("no AGI handler named %r (agi_network_script=%r)", name,
                          session.headers.get("agi_network_script")[:200])
                await session.fail()
                return
            await handler(session, self.app)
        except CallerHungUp:
            # Gone, unless Asterisk moved the channel on (then whoever moved it owns it now).
            if self.killed:
                return
            if session.call_id and not await session.moved():
                await self._quietly(self.app.store.end(session.call_id, State.ABANDONED, "",
                                                       "caller_hung_up"))
        except (AgiProtocolError, AgiCommandError, OSError, Exception) as exc:
            if self.killed:
                return
            log.exception("AGI %s failed for call %s: %s", name, session.call_id, exc)
            await self._fail_toward_a_human(session, exc)
        finally:
            self.sessions -= 1
            await session.close()

    async def _fail_toward_a_human(self, session: AgiSession, exc: BaseException) -> None:
        """Whatever broke, the dialplan must ring the fallback group, and Redis must agree."""
        if session.call_id:
            await self._quietly(self.app.store.to_fallback(session.call_id, type(exc).__name__))
        await self._quietly(session.set_variable("PR_QUEUED", ""))
        await session.fail()

    @staticmethod
    async def _quietly(coro: object) -> None:
        try:
            await asyncio.wait_for(coro, 2.0)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("while failing over: %s", exc)
