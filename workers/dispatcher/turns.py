"""Whose turn it is when responders are scarce: the most urgent call first.

Every claimed call rings the free responders its plan names, concurrently; while there are
enough responders that is all there is to it. When everyone is busy, calls wait, and the
first responder to come free must go to the call that has waited longest in the queue's
order (priority, then arrival: ``queue_score``), a callback request included, however
long ago its caller hung up. Without this, whichever call happened to look first would
take them.

So calls plan and ring one at a time, in queue order, through a gate (a plan is a few
Redis round trips: a burst of calls claimed together is served in order, not in whichever
order their tasks happen to run). A call that found nobody to ring is *starving*: it waits
for the next tick (every ``tick_s``, or sooner when something frees a responder: an offer
passed, a call ended), together with every other starving call, and they pass the gate in
queue order. A starving call that is busy elsewhere when its
turn comes (writing an event, say) is waited for, briefly (``GRACE_S``), before a call
behind it may go. Within one dispatcher process; with several, each keeps its own order
(docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

GRACE_S = 0.25  # how long a turn waits for a more urgent starving call to come and plan


class Turns:
    def __init__(self, tick_s: float = 0.5) -> None:
        self.tick_s = tick_s
        self.starving: dict[str, float] = {}  # call id -> its queue score
        self.tick = asyncio.Event()
        self._heap: list[tuple[float, int, str, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._held = False
        self._grant_soon = False
        self._waiting_since: float | None = None  # a grant held back for a better call

    def nudge(self) -> None:
        """Something may have freed a responder: starving calls look now, all together."""
        old, self.tick = self.tick, asyncio.Event()
        old.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The ticker: resting ends by the clock, not by an event."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.tick_s)
            except TimeoutError:
                if self.starving:
                    self.nudge()

    @asynccontextmanager
    async def turn(self, call_id: str, score: float) -> AsyncIterator[None]:
        """Plan and ring, one call at a time, in queue order. (Calls claimed in a burst
        would otherwise race each other to the first free responders.)"""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (score, next(self._seq), call_id, fut))
        self._schedule()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted just as we were cancelled: pass it on
            raise
        try:
            yield
        finally:
            self._release()

    def _schedule(self) -> None:
        # Granted on the next loop iteration, once every call woken by the same tick has
        # joined the heap: the order is the queue's, not the order they woke in.
        if not self._held and not self._grant_soon:
            self._grant_soon = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        self._grant_soon = False
        while self._heap and self._heap[0][3].done():
            heapq.heappop(self._heap)  # cancelled while waiting
        if self._held or not self._heap:
            return
        score, _, call_id, fut = self._heap[0]
        loop = asyncio.get_running_loop()
        queued = {entry[2] for entry in self._heap}
        better = any(s < score and c not in queued and c != call_id
                     for c, s in self.starving.items())
        if better:
            now = loop.time()
            self._waiting_since = self._waiting_since or now
            if now - self._waiting_since < GRACE_S:
                self._grant_soon = True
                loop.call_later(0.02, self._grant)
                return
        self._waiting_since = None
        heapq.heappop(self._heap)
        self._held = True
        fut.set_result(None)

    def _release(self) -> None:
        self._held = False
        self._schedule()
