"""Whose turn it is when responders are scarce: the most urgent call first.

Every claimed call rings the free responders its plan names, concurrently; while there are
enough responders that is all there is to it. When everyone is busy, calls wait, and the
first responder to come free must go to the call that has waited longest in the queue's
order (priority, then arrival: ``queue_score``), a callback request included, however
long ago its caller hung up. Without this, whichever call happened to look first would
take them.

So calls plan and ring in queue order, through a gate that plans in batches: every call that
asks while a batch is being planned and rung goes in the next one, and a batch is planned in
one go, in queue order (the first call of a batch picks its responders first, the next one
from those left, and so on), with a handful of Redis round trips for the whole batch rather
than a handful per call (workers/dispatcher/waves.py). At 500 callers, one call at a time
through the gate was the queue itself: seconds before the last one's first ring.

A call that found nobody to ring is *starving*: it is *parked* here, and every batch plans
the parked calls too, in queue order with the others, until one of them gets a wave (its task
is then woken with it: ``on_won``). A batch starts whenever a call asks, and for the parked
calls at each tick (every ``tick_s``: resting ends by the clock) or sooner when something may
have freed a responder (an offer passed, a call ended: ``nudge``). Hundreds of starving calls
cost one look at who is free per batch, not a wake-up and a plan each. A starving call that is
busy elsewhere when a batch starts (reading an event of its own, say) is waited for, briefly
(``GRACE_S``), before calls behind it may go. Within one dispatcher process; with several,
each keeps its own order (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

GRACE_S = 0.25  # how long a batch waits for a more urgent starving call to come and plan
NUDGE_S = 0.01  # passes come in bursts: one look for the burst

Job = TypeVar("Job")
Result = TypeVar("Result")


class Turns(Generic[Job, Result]):
    def __init__(self, tick_s: float,
                 run_batch: Callable[[Sequence[Job]], Awaitable[Sequence[Result]]],
                 won: Callable[[Result], bool] = bool) -> None:
        self.tick_s = tick_s
        self.run_batch = run_batch  # the jobs in queue order -> their results, in that order
        self.is_won = won  # a parked call's result worth waking it for (a wave was rung)
        self.starving: dict[str, float] = {}  # call id -> its queue score
        self.parked: dict[str, tuple[float, Job]] = {}  # starving calls the batches plan
        self.won: dict[str, Result] = {}  # parked calls a batch rang for, until they take it
        self.on_won: Callable[[str], None] = lambda _call_id: None
        self._heap: list[tuple[float, int, str, Job, asyncio.Future[Result]]] = []
        self._seq = itertools.count()
        self._running: asyncio.Task | None = None
        self._start_soon = False
        self._look = False  # a batch for the parked calls is due
        self._waiting_since: float | None = None  # a batch held back for a better call
        self._in_flight: set[str] = set()  # parked calls the running batch plans
        self.batches = 0  # how many batches were planned (for tests and benchmarks)

    def nudge(self) -> None:
        """Something may have freed a responder: the parked calls look again, together."""
        if self.parked:
            self._look = True
            self._schedule(NUDGE_S)

    async def run(self, stop: asyncio.Event) -> None:
        """The ticker: resting ends by the clock, not by an event."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.tick_s)
                except TimeoutError:
                    self.nudge()
        finally:
            if self._running is not None:
                self._running.cancel()  # a stop: no batch goes on ringing after it

    async def take(self, call_id: str, score: float, job: Job) -> Result:
        """Plan and ring ``job`` with the batch it falls in, in queue order (or what a batch
        rang for it while it was parked)."""
        if call_id in self.won:
            return self.won.pop(call_id)
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (score, next(self._seq), call_id, job, fut))
        self._schedule()
        return await fut  # cancelled while waiting: the batch leaves it out

    def park(self, call_id: str, score: float, job: Job) -> None:
        """The call is starving: the batches plan ``job`` until one rings for it."""
        self.starving[call_id] = score
        self.parked[call_id] = (score, job)

    async def leave(self, call_id: str) -> Result | None:
        """Its task goes on: out of the batches, once a batch planning it now is done (a
        task must never act on its call while a batch rings for it); what a batch rang for
        it meanwhile, if any."""
        self.parked.pop(call_id, None)
        while self._running is not None and call_id in self._in_flight:
            await asyncio.wait({self._running})  # (not cancelled if we are)
        return self.won.pop(call_id, None)

    def forget(self, call_id: str) -> None:
        """The call's task ended."""
        self.starving.pop(call_id, None)
        self.parked.pop(call_id, None)
        self.won.pop(call_id, None)

    def _schedule(self, delay: float = 0.0) -> None:
        # Started on a later loop iteration, once every call woken by the same event has
        # joined the heap: the order is the queue's, not the order they woke in.
        if self._running is None and not self._start_soon:
            self._start_soon = True
            asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._start_soon = False
        self._heap = [e for e in self._heap if not e[4].done()]  # cancelled while waiting
        heapq.heapify(self._heap)
        if self._running is not None or not (self._heap or (self._look and self.parked)):
            return
        loop = asyncio.get_running_loop()
        # Every batch plans the parked calls too: a responder free now goes to the most
        # urgent of all who wait, not to whoever asked last.
        entries: list = sorted([(score, -1, cid, job, None)
                                for cid, (score, job) in self.parked.items()] + self._heap,
                               key=lambda e: (e[0], e[1]))
        # A starving call more urgent than some of these, not here yet: those behind it wait
        # for it a moment (it may be busy reading an event); the ones before it go now.
        here = {e[2] for e in entries}
        cutoff = min((s for c, s in self.starving.items() if c not in here), default=None)
        if cutoff is None:
            self._waiting_since = None
        else:
            now = loop.time()
            self._waiting_since = self._waiting_since or now
            if now - self._waiting_since < GRACE_S:
                entries = [e for e in entries if e[0] < cutoff]
                if not any(e[4] is not None for e in entries):
                    self._start_soon = True
                    loop.call_later(0.02, self._start)
                    return
            else:
                self._waiting_since = None
        going = {id(e[4]) for e in entries if e[4] is not None}
        self._heap = [e for e in self._heap if id(e[4]) not in going]
        heapq.heapify(self._heap)
        self._look = False
        self._in_flight = {e[2] for e in entries if e[4] is None}
        self.batches += 1
        self._running = asyncio.create_task(self._run(entries), name="plan batch")

    async def _run(self, batch: list) -> None:
        try:
            try:
                results = await self.run_batch([entry[3] for entry in batch])
            except asyncio.CancelledError:
                for *_, fut in batch:
                    if fut is not None:
                        fut.cancel()
                raise
            except Exception as exc:  # each call's task handles it as its own failure
                for *_, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                return
            for (_, _, call_id, _, fut), result in zip(batch, results, strict=True):
                won = self.is_won(result)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(result)
                elif won:  # kept for its task, waiting or leaving (leave() returns it)
                    self.won[call_id] = result
                    self.parked.pop(call_id, None)
                    self.on_won(call_id)
                if won:
                    self.starving.pop(call_id, None)  # no batch waits for it any more
        finally:
            self._running = None
            self._in_flight = set()
            if self._heap or (self._look and self.parked):
                self._schedule()
