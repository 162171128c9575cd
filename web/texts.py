"""The panel's side of text conversations: reading one (audited, in history.py and
queue.py), a supervisor writing to the texter as themselves (stepping in), and desk phones'
offers. The panel's views are synchronous; the conversation service (textline) is async, so
each action runs it to completion on a short-lived loop and Redis connection (supervisors'
actions are few).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, TypeVar

from crisisline.config import Settings
from crisisline.prompts.catalog import Catalog, load_catalog
from crisisline.stores import async_client
from crisisline.stores.texts import TextStore
from textline.conversation import Conversations
from textline.sms import SmsClient

T = TypeVar("T")


@cache
def _catalog() -> Catalog:
    return load_catalog()


def run(settings: Settings, action: Callable[[Conversations], Awaitable[T]]) -> T:
    async def go() -> T:
        redis = async_client(settings.effective_redis_url, socket_timeout=10)
        try:
            conversations = Conversations(settings, TextStore(redis), _catalog(),
                                          SmsClient.from_settings(settings))
            return await action(conversations)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def live_messages(settings: Settings, call_id: str) -> list[dict[str, Any]]:
    """A live conversation's messages (call only after the audit row is committed)."""
    async def read(c: Conversations) -> list[dict[str, Any]]:
        rows = await c.store.messages(call_id, count=10_000)
        return [{"sender": m.get("sender", ""), "author": m.get("author", ""),
                 "at": float(m.get("at") or 0), "body": m.get("body", "")} for _, m in rows]
    return run(settings, read)


def write_as_supervisor(settings: Settings, call_id: str, supervisor: str, body: str) -> str:
    """Step in: take it if nobody has, then write. Returns what happened, in words."""
    async def go(c: Conversations) -> str:
        if not await c.step_in(call_id, supervisor):
            return "This conversation has ended."
        if not await c.from_staff(call_id, "supervisor", supervisor, body):
            return "This conversation has ended."
        return "Sent to the texter."
    return run(settings, go)


def desk_offers(settings: Settings) -> list[tuple[str, str, str]]:
    """(token, call id, responder id) of open offers to desk phones."""
    async def go(c: Conversations) -> list[tuple[str, str, str]]:
        out = []
        for token, call_id, rid in await c.store.desk_offers():
            info = await c.store.link(token)
            data = await c.store.hash(call_id)
            if info.get("status") == "open" and data.get("state") in ("waiting", "dispatching"):
                out.append((token, call_id, rid))
        return out
    return run(settings, go)
