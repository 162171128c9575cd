"""A call the dispatcher takes back while its previous task is still finishing: the new task
waits for the old one (never two working one call), but not forever, and stopping the new
one stops the old one too (no task left ringing after a stop)."""

from __future__ import annotations

import asyncio

import pytest

from workers.dispatcher import dispatcher as dispatcher_module


class OneCall:
    name = "d1"
    _dispatch_after = dispatcher_module.Dispatcher._dispatch_after

    def __init__(self) -> None:
        self.worked: list[str] = []

    async def dispatch(self, call_id: str) -> None:
        self.worked.append(call_id)


async def test_a_stuck_previous_task_is_cancelled_and_the_call_worked(monkeypatch):
    monkeypatch.setattr(dispatcher_module, "PREVIOUS_TASK_S", 0.2)
    d = OneCall()
    stuck = asyncio.create_task(asyncio.sleep(3600))
    await d._dispatch_after(stuck, "c1")
    assert stuck.cancelled() and d.worked == ["c1"]


async def test_the_previous_task_finishing_first_then_the_new_one_works_the_call():
    d = OneCall()
    order: list[str] = []

    async def finishing() -> None:
        await asyncio.sleep(0.05)
        order.append("old done")

    previous = asyncio.create_task(finishing())
    await d._dispatch_after(previous, "c1")
    order.extend(d.worked)
    assert order == ["old done", "c1"]


async def test_stopping_the_new_task_stops_the_old_one():
    d = OneCall()
    previous = asyncio.create_task(asyncio.sleep(3600))
    task = asyncio.create_task(d._dispatch_after(previous, "c1"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert previous.cancelled() and d.worked == []
