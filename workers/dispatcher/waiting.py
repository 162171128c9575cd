"""How a call's task waits: for a wave it rang, and, starving, for a batch to ring for it. A
mixin of the Dispatcher, kept apart so each module stays readable.

Both are woken by the call's own events (Dispatcher.follow_events), never by polling: at
500 callers, a read of every waiting call twice a second was a fifth of the dispatcher's CPU.
What a lost event would have said is read with the lease's renewal (every lease_s / 3, in
the same round trip), a safety net, not the clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from crisisline.routing import Wave
from crisisline.stores.offers import in_whisper, offers_key
from workers.dispatcher.waves import PlanJob, Planned

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

LIVE = {"waiting", "dispatching"}


class CallWaits:
    def _renew_due(self: Dispatcher, call_id: str) -> float:
        """Seconds until the lease is renewed (and the call read again)."""
        return self.renewed.get(call_id, 0.0) + self.lease_s / 3 - time.monotonic()

    async def _renew_and_read(self: Dispatcher, call_id: str, offers: bool
                              ) -> tuple[bool, dict[str, str], dict[str, str]]:
        mine, data, offered = await self.calls.renew_and_read(
            call_id, self.name, self.lease_s, offers_key(call_id) if offers else None)
        if mine:
            self.renewed[call_id] = time.monotonic()
        return mine, data, offered

    async def _wait_for(self: Dispatcher, call_id: str, waiter: asyncio.Event,
                        limit: float) -> None:
        waiter.clear()
        if call_id in self.changed or call_id in self.turns.won:
            return
        try:
            async with asyncio.timeout(max(0.01, limit)):  # (no task per wait, unlike wait_for)
                await waiter.wait()
        except TimeoutError:
            pass

    async def _wait_wave(self: Dispatcher, call_id: str, rung: list[str], seconds: float,
                         attend_at: float) -> tuple[str, float, dict[str, str]]:
        """('accepted' | 'gone' (caller left) | 'passed' (everyone passed) | 'timeout' |
        'lost' (another dispatcher owns the call now: leave its legs alone), next attend,
        the call's hash as last read)."""
        deadline = time.monotonic() + seconds
        waiter = self.waiters.setdefault(call_id, asyncio.Event())
        data: dict[str, str] | None = None
        while True:
            offers: dict[str, str] | None = None
            if data is None or call_id in self.changed:
                waiter.clear()
                self.changed.discard(call_id)
                data, offers = await self._call_and_offers(call_id, bool(rung))
            elif self._renew_due(call_id) <= 0:
                mine, data, offers = await self._renew_and_read(call_id, bool(rung))
                if not mine:
                    return "lost", attend_at, data
            if offers is not None:
                if data.get("accepted_by"):
                    return "accepted", attend_at, data
                if data.get("state") not in LIVE:
                    return "gone", attend_at, data
                if rung and all(offers.get(rid, "").startswith("passed") for rid in rung):
                    return "passed", attend_at, data
            if time.monotonic() >= attend_at:
                attend_at = self.attend_soon(data)
            if time.monotonic() >= deadline:
                return "timeout", attend_at, data
            await self._wait_for(call_id, waiter, min(deadline - time.monotonic(),
                                                      self._renew_due(call_id)))

    async def _starve(self: Dispatcher, call_id: str, score: float, data: dict[str, str],
                      cycle: int, attend_at: float, until: float
                      ) -> tuple[str, float, dict[str, str], Planned | None]:
        """Nobody to ring: parked in the batches (turns.py) until one rings for the call
        ('won'), something happens to it ('event': ``data`` read again), the lease is lost
        ('lost') or ``until`` (epoch s) comes ('timeout'); and the wave a batch rang for it
        meanwhile, if any, whatever the reason it stopped waiting."""
        waiter = self.waiters.setdefault(call_id, asyncio.Event())
        self.turns.park(call_id, score, PlanJob(call_id, data, cycle, 0))
        try:
            while True:
                if call_id in self.turns.won:
                    outcome = "won"
                    break
                if call_id in self.changed:
                    waiter.clear()
                    self.changed.discard(call_id)
                    data = await self._hash(call_id)
                    outcome = "event"
                    break
                if self._renew_due(call_id) <= 0:
                    mine, data, _ = await self._renew_and_read(call_id, False)
                    if not mine:
                        outcome = "lost"
                        break
                    if data.get("accepted_by") or data.get("state") not in LIVE:
                        outcome = "event"
                        break
                    self.turns.park(call_id, score, PlanJob(call_id, data, cycle, 0))
                if time.monotonic() >= attend_at:
                    attend_at = self.attend_soon(data)
                if time.time() >= until:
                    outcome = "timeout"
                    break
                await self._wait_for(call_id, waiter, min(until - time.time(),
                                                          self._renew_due(call_id),
                                                          attend_at - time.monotonic()))
        except BaseException:
            self.turns.parked.pop(call_id, None)  # cancelled: out of the batches at once
            raise
        won = await self.turns.leave(call_id)
        return outcome, attend_at, data, won

    async def end_wave(self: Dispatcher, call_id: str, wave: Wave, cycle: int,
                       source: str | None = None) -> None:
        offers = await self.offers.offers(call_id)
        # Answered and listening to who is waiting (with the caller's message that can
        # outlast a wave): never cut off; the whisper ends the offer itself.
        ringing = [r.id for r in wave.responders if offers.get(r.id, "").startswith("ringing")
                   and not in_whisper(offers[r.id])]
        await self.end_offers(call_id, ringing, "no_answer", source)
        await self.calls.event(call_id, "wave_timeout", wave=wave.number, cycle=cycle)
