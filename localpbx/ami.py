"""A small asyncio AMI connection for the harness: actions answered by ActionID (lists of
events collected up to their ...Complete), every event to the subscribers."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

Message = dict[str, str]
Headers = Iterable[tuple[str, str]] | dict[str, str]


class AmiError(RuntimeError):
    pass


class AmiConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = ""
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._lists: dict[str, list[Message]] = {}
        self.subscribers: list[Callable[[Message], None]] = []
        self._reader_task: asyncio.Task | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, host: str, port: int, user: str, secret: str,
                      events: str = "on", timeout: float = 10) -> AmiConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        conn = cls(reader, writer)
        conn.banner = (await asyncio.wait_for(reader.readline(), timeout)).decode().strip()
        conn._reader_task = asyncio.create_task(conn._read_loop(), name=f"ami {host}:{port}")
        reply = await conn.action({"Action": "Login", "Username": user, "Secret": secret,
                                   "Events": events}, timeout=timeout)
        if reply.get("Response") != "Success":
            await conn.close()
            raise AmiError(f"AMI login to {host}:{port} refused: {reply.get('Message', '')}")
        return conn

    async def _read_loop(self) -> None:
        message: Message = {}
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                if text:
                    key, _, value = text.partition(":")
                    message[key.strip()] = value.lstrip(" ")
                    continue
                if message:
                    self._dispatch(message)
                    message = {}
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(AmiError("AMI connection closed"))

    def _dispatch(self, message: Message) -> None:
        action_id = message.get("ActionID", "")
        if action_id in self._pending:
            future = self._pending[action_id]
            if "Response" in message and action_id not in self._lists:
                if message.get("EventList") == "start":
                    self._lists[action_id] = [message]
                else:
                    self._pending.pop(action_id)
                    if not future.done():
                        future.set_result(message)
                return
            if action_id in self._lists and "Event" in message:
                self._lists[action_id].append(message)
                if message.get("EventList") == "Complete" or message["Event"].endswith("Complete"):
                    self._pending.pop(action_id)
                    items = self._lists.pop(action_id)
                    if not future.done():
                        future.set_result({**items[0], "_items": items[1:]})  # type: ignore[dict-item]
                return
        if "Event" in message:
            for callback in list(self.subscribers):
                try:
                    callback(message)
                except Exception:
                    log.exception("AMI subscriber failed on %s", message.get("Event"))

    def send(self, headers: Headers) -> str:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        action_id = next((v for k, v in pairs if k.lower() == "actionid"), None)
        if action_id is None:
            action_id = f"h-{next(self._ids)}"
            pairs.append(("ActionID", action_id))
        lines = []
        for key, value in pairs:
            values = value if isinstance(value, list) else [value]
            lines += [f"{key}: {v}" for v in values]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    async def action(self, headers: Headers, timeout: float = 10) -> Message:
        """Send one action; its response (for list actions: the first message, with the
        events that followed under ``_items``)."""
        if self.closed.is_set():
            raise AmiError("AMI connection closed")
        action_id = f"h-{next(self._ids)}"
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        self.send([*pairs, ("ActionID", action_id)])
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(action_id, None)
            self._lists.pop(action_id, None)

    async def close(self) -> None:
        try:
            if not self.closed.is_set():
                self.send({"Action": "Logoff"})
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (ConnectionError, RuntimeError, TimeoutError, OSError):
            pass
        if self._reader_task is not None:
            self._reader_task.cancel()
