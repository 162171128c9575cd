"""A small raw AMI client for the ``simulate`` command (and tests): send an action, read
replies and events by ActionID. The dispatcher uses panoramisk; this exists because the
stand-in's simulation actions (StandinPlaceCall) end with an event, not a reply."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

MAX_LINE_BYTES = 16 * 1024 * 1024


class AmiError(Exception):
    pass


class AmiClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self.banner = ""

    @classmethod
    async def connect(cls, host: str, port: int, user: str, secret: str) -> AmiClient:
        # The stand-in's StandinCallEnded carries the call's whole trace as one JSON line:
        # a long call (a callback, many dialplan steps) is far over asyncio's 64 KiB default.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE_BYTES), 5)
        client = cls(reader, writer)
        client.banner = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        reply = await client.request([("Action", "Login"), ("Username", user), ("Secret", secret)])
        if reply.get("Response") != "Success":
            raise AmiError(f"AMI login refused: {reply.get('Message', '')}")
        return client

    async def read_message(self, timeout: float | None = None) -> dict[str, str]:
        message: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise AmiError("AMI connection closed")
            text = line.decode(errors="replace").rstrip("\r\n")
            if not text:
                if message:
                    return message
                continue
            key, _, value = text.partition(": ")
            message[key] = value

    def send(self, headers: Iterable[tuple[str, str]]) -> str:
        action_id = f"sim-{next(self._ids)}"
        lines = [f"{k}: {v}" for k, v in headers] + [f"ActionID: {action_id}", "", ""]
        self.writer.write("\r\n".join(lines).encode())
        return action_id

    async def request(self, headers: Iterable[tuple[str, str]], timeout: float = 10) -> dict[str, str]:
        action_id = self.send(headers)
        while True:
            message = await self.read_message(timeout)
            if message.get("ActionID") == action_id and "Response" in message:
                return message

    async def wait_event(self, name: str, action_id: str | None = None,
                         timeout: float | None = None) -> dict[str, str]:
        while True:
            message = await self.read_message(timeout)
            if message.get("Event") == name and (action_id is None
                                                 or message.get("ActionID") == action_id):
                return message

    async def close(self) -> None:
        try:
            self.send([("Action", "Logoff")])
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, RuntimeError):
            pass
