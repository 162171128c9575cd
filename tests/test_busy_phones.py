"""Phones that answer "busy" at once don't make the dispatcher ring them again and again: a
new cycle of waves (everyone rung once more) starts at most every MIN_CYCLE_S. bench/soak.py
found one call rung through 450 cycles (111,544 waves_exhausted events in 30 minutes).
Real Redis; the AMI gateway is a stand-in that answers every Originate "busy" at once."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore
from tests.test_dispatch_batches import NOW, NotedAmi, client, roster  # noqa: F401
from workers.dispatcher import dispatcher as dispatcher_module
from workers.dispatcher.dispatcher import Dispatcher


class BusyAmi(NotedAmi):
    """Every phone is busy: Asterisk's OriginateResponse, Reason 5, straight away."""

    def originate(self, channel_id: str, destination: str, *args: object, **kw: object) -> None:
        super().originate(channel_id, destination)
        for callback in self.originate_results:
            asyncio.get_running_loop().call_soon(
                asyncio.ensure_future,
                callback(channel_id, {"Response": "Failure", "Reason": "5"}))


@pytest.mark.parametrize("min_cycle_s", [dispatcher_module.MIN_CYCLE_S, 0.0])
async def test_phones_answering_busy_are_not_rung_again_and_again(settings, client,  # noqa: F811
                                                                  monkeypatch, min_cycle_s):
    monkeypatch.setattr(dispatcher_module, "MIN_CYCLE_S", min_cycle_s)
    settings = dataclasses.replace(settings, wave_timeout_s=4, max_wait_s=600,
                                   unattended_s=600)
    d = Dispatcher(settings, CallStore(client), OfferStore(client), BusyAmi(),
                   lambda: roster(2), name="d1")
    d._now = lambda: NOW  # type: ignore[method-assign]
    now = time.time()
    await client.hset("pr:call:c1", mapping={
        "id": "c1", "state": "waiting", "language": "es", "neighborhood": "Hood0",
        "source": "direct", "queued_at": f"{now:.3f}", "created_at": f"{now:.3f}",
        "channel": "PJSIP/caller-1", "ivr_done": "1", "callback_offered": "1"})
    await client.zadd("pr:queue", {"c1": now * 1000})
    stop = asyncio.Event()
    run = asyncio.create_task(d.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    await asyncio.wait_for(run, 10)
    rung = len(d.ami.originated)
    if min_cycle_s:
        # Two phones, rung once in this cycle; the next cycle is not before wave_timeout_s.
        assert 1 <= rung <= 2, d.ami.originated
    else:
        # (The check of the check: without the pause, the loop the soak found.)
        assert rung > 10, d.ami.originated
