"""Many small Redis requests made at once, sent as one.

At 500 callers the dispatcher hears AMI events by the hundred a second, in bursts (a wave's
four legs come up together, the three legs not taken hang up together), and each handler
used to make its own round trip: most of the dispatcher's CPU went to sending and reading
them one by one. A ``Coalesce`` gathers the requests made during one turn of the event loop
and runs them together (one pipeline), each caller getting its own answer; a request
alone costs what it did before, plus one turn of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_BATCH = 500  # items sent together at most (a pipeline's reply is held in memory whole)


class Coalesce(Generic[Item, Result]):
    """``run`` takes the items gathered (in the order they were asked for) and returns their
    results in that order; a failure fails every request of that batch."""

    def __init__(self, run: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]) -> None:
        self.run = run
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # how many batches were sent (for tests and benchmarks)

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            task = asyncio.ensure_future(self._send(waiting[start:start + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        live = [(item, fut) for item, fut in batch if not fut.done()]  # (cancelled meanwhile)
        if not live:
            return
        self.batches += 1
        try:
            results = await self.run([item for item, _ in live])
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is stopping): so are its requests
            for _, fut in live:
                fut.cancel()
            raise
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)
