"""The chat app's machinery: one asyncio loop (in a thread of its own) for every Redis and
SMS call the Flask views make, the hub that wakes waiting pages, and the upkeep of live
conversations.

Flask's views are synchronous (Werkzeug's threaded server, one thread per request); the
stores are async (the same CallStore and OfferStore the dispatcher uses). ``Runtime.run``
hands a coroutine to the loop and waits for it.

**The hub.** A page waiting for new messages (a long poll) waits on a threading event, not
on Redis: one pub/sub subscription per process hears ``pr:text:notify`` (the id of every
conversation something was written to) and wakes that conversation's pages, so 400 open
pages cost Redis one connection.

**Upkeep** (every few seconds, idempotent, safe to run in several processes):
- an SMS texter who never answered the language menu: the default language, and the queue;
- a conversation no dispatcher has taken (or whose dispatcher's hold ran out) for
  ``unattended_s``: the texter gets the phone number at once (the conversation stays in the
  queue and on the supervisors' live queue);
- responders' offers whose link ran out without an answer: passed (they are free again);
- a conversation nobody wrote in for ``text_idle_end_s``: ended, the texter told.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from crisisline import db
from crisisline.config import Settings
from crisisline.prompts.catalog import Catalog, load_catalog
from crisisline.stores import async_redis
from crisisline.stores.calls import CLAIMED
from crisisline.stores.offers import responder_key
from crisisline.stores.texts import LIVE_TEXTS, NOTIFY, TextStore, link_key, links_key
from crisisline.textflow import MENU, MENU_TIMEOUT_S, Reply
from textline.conversation import WAITING, Conversations
from textline.sms import SmsClient

log = logging.getLogger(__name__)
T = TypeVar("T")
UPKEEP_S = 5.0
OFFER_GRACE_S = 30.0


class Hub:
    """Wakes the pages waiting on a conversation when something is written to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}

    def register(self, call_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(call_id, set()).add(event)
        return event

    def unregister(self, call_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._waiting.get(call_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[call_id]

    def wake(self, call_id: str) -> None:
        with self._lock:
            events = list(self._waiting.get(call_id, ()))
        for event in events:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            events = [e for group in self._waiting.values() for e in group]
        for event in events:
            event.set()


class Runtime:
    def __init__(self, settings: Settings, catalog: Catalog | None = None,
                 sms: SmsClient | None = None, engine: Engine | None = None,
                 upkeep: bool = True) -> None:
        self.settings = settings
        self.catalog = catalog or load_catalog()
        self.sms = sms if sms is not None else SmsClient.from_settings(settings)
        self.engine = engine or db.engine_for(settings)
        self.hub = Hub()
        self.secret = ""  # set by the app: signs the chat page's CSRF tokens
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pr-chat-loop",
                                        daemon=True)
        self._thread.start()
        self._stop = asyncio.Event()
        self.redis = self.run(self._connect())
        self.store = TextStore(self.redis)
        self.conversations = Conversations(settings, self.store, self.catalog, self.sms, self.engine)
        self._tasks = [asyncio.run_coroutine_threadsafe(self._listen(), self.loop)]
        if upkeep:
            self._tasks.append(asyncio.run_coroutine_threadsafe(self._upkeep(), self.loop))

    async def _connect(self) -> Any:
        self._stop = asyncio.Event()
        return async_redis(self.settings.effective_redis_url)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.hub.wake_all()

        async def shut() -> None:
            # Finish the loop's own tasks before it stops: a task left suspended would be
            # resumed, with no loop, when it is collected.
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.redis.aclose()

        try:
            self.run(shut(), timeout=5)
        except Exception:  # closing anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.engine.dispose()

    # ---- the hub's subscription ------------------------------------------------------------
    async def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(NOTIFY)
                self.hub.wake_all()  # anything missed while (re)connecting: pages look again
                while not self._stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        self.hub.wake(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("chat: Redis notifications unavailable (%s); retrying", exc)
                await asyncio.sleep(1)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    # ---- upkeep --------------------------------------------------------------------------------
    async def _upkeep(self) -> None:
        while not self._stop.is_set():
            try:
                await self.upkeep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("chat: upkeep of live conversations failed; next time")
            try:
                await asyncio.wait_for(self._stop.wait(), UPKEEP_S)
            except TimeoutError:
                pass

    async def upkeep_once(self, now: float | None = None) -> dict[str, int]:
        """One pass over live conversations; counts of what it did (for logs and tests)."""
        now = time.time() if now is None else now
        s, store, conv = self.settings, self.store, self.conversations
        counts = {"menu_timeout": 0, "unattended": 0, "offers_expired": 0, "idle_ended": 0}
        leases = {m.decode(): score for m, score in await self.redis.zrange(CLAIMED, 0, -1,
                                                                            withscores=True)}
        for call_id in await store.live():
            data = await store.hash(call_id)
            if not data or data.get("state") not in WAITING | {"bridged"}:
                await self.redis.srem(LIVE_TEXTS, call_id)
                continue
            created = float(data.get("created_at") or now)
            last = float(data.get("x_last_message_at") or created)
            if now - last > s.text_idle_end_s:
                if await conv.end(call_id, "idle"):
                    counts["idle_ended"] += 1
                continue
            if data.get("x_stage") == MENU and now - created > MENU_TIMEOUT_S:
                if await conv.menu_timeout(call_id, data):
                    counts["menu_timeout"] += 1
                continue
            if data.get("state") in ("waiting", "dispatching") and not data.get("x_unattended"):
                queued = float(data.get("queued_at") or now)
                held = data.get("state") == "dispatching" and leases.get(call_id, 0) > now
                if not held and now - queued > s.unattended_s and \
                        await self.redis.hsetnx(f"pr:call:{call_id}", "x_unattended", "1"):
                    await store.calls.event(call_id, "unattended")
                    await conv.tell(call_id, data, [Reply("text_unattended")])
                    counts["unattended"] += 1
            counts["offers_expired"] += await self._expire_offers(call_id)
        return counts

    async def _expire_offers(self, call_id: str) -> int:
        """Offers still open whose link has run out: nobody answered; they are free again."""
        n = 0
        offers = await self.store.offers.offers(call_id)
        tokens = {k.decode(): v.decode() for k, v in
                  (await self.redis.hgetall(links_key(call_id))).items()}
        for rid, status in offers.items():
            if not status.startswith("ringing"):
                continue
            token = tokens.get(rid)
            if token and await self.redis.exists(link_key(token)):
                continue
            offered = await self.redis.hget(responder_key(rid), "last_offered_at")
            if time.time() - float(offered or 0) < OFFER_GRACE_S:
                continue  # rung a moment ago: its link is being made
            if await self.store.offers.passed(call_id, rid, "link_expired"):
                await self.store.close_link(call_id, rid)
                n += 1
        return n
