"""The dispatcher: takes waiting calls and rings responders, wave after wave, until one
takes the call, the caller leaves, or the longest wait is reached.

All state lives in Redis (the call hash, offers, leases); this process holds none that
matters. A dispatcher killed at any moment leaves a lease that runs out; any dispatcher
then puts the call back in the queue and, when it takes it again, carries on from the
wave it was in. The offered set per cycle makes sure nobody is rung twice for one wave.

While it works a call it keeps pushing the caller's PR_ATTENDED_UNTIL forward in Asterisk
(AMI Setvar): a caller whose dispatcher died reaches the fallback group through Asterisk
alone (dialplan [pr-waiting]). Connecting a responder needs no dispatcher at all: the
responder's leg moves the caller (dialplan [pr-responder]); this process then hangs up the
other legs, adds an interpreter when needed and records the bridge.

Never police, never 911: every destination passes destinations.refusal, and when no one
answers the caller is offered a callback, then the static fallback ring group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from crisisline import clock, destinations
from crisisline.call import Source
from crisisline.config import Settings
from crisisline.roster.model import Responder, RosterSnapshot
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import CLAIMED, EVENTS, CallStore, call_key
from crisisline.stores.offers import OfferStore, offers_key
from workers.dispatcher.ami import AmiGateway, leg_id
from workers.dispatcher.duty import Duty
from workers.dispatcher.ends import CallEnds
from workers.dispatcher.interpreter import Interpreters
from workers.dispatcher.texts import TextOffers
from workers.dispatcher.turns import Turns
from workers.dispatcher.waiting import LIVE, CallWaits
from workers.dispatcher.watch import CallWatch
from workers.dispatcher.waves import PlanJob, Planned, WavePlanner

log = logging.getLogger(__name__)
LEASE_S = 15.0
BUSY_RETRY_S = 0.5  # how often starving calls look again without a nudge (resting ends)
# Events after which a responder may be free again (starving calls look at once).
PREVIOUS_TASK_S = 5.0  # a call's finishing task, waited for before a new one works it
FREEING = {b"offer_passed", b"caller_hung_up", b"call_ended", b"responder_left", b"fallback",
           b"callback_attempt_failed", b"callback_failed", b"callback_cancelled"}
# Events a call's own task wrote, or that change nothing it looks at: they don't wake it (a
# wave of four phones alone was five needless re-reads of the call per wave).
QUIET = {b"offer_ringing", b"wave_started", b"wave_timeout", b"waves_exhausted", b"claimed"}
CLAIM_BATCH = 20  # calls taken from the queue per round trip
HOUSEKEEPING_S = 0.2  # leases run out and callbacks come due: looked at this often
MIN_CYCLE_S = 5.0  # a cycle of waves (everyone rung once) starts at most this often
EVENTS_GAP_S = 0.02  # the event stream is read at most this often while events come


class Dispatcher(CallEnds, CallWaits):
    def __init__(self, settings: Settings, calls: CallStore, offers: OfferStore, ami: AmiGateway,
                 roster: Callable[[], RosterSnapshot], name: str | None = None,
                 lease_s: float = LEASE_S) -> None:
        self.settings = settings
        self.calls = calls
        self.offers = offers
        self.ami = ami
        self.roster = roster
        self.name = name or f"dispatcher-{os.getpid()}"
        self.lease_s = lease_s
        self.tasks: dict[str, asyncio.Task] = {}
        self.wake = asyncio.Event()
        # Per-call wake-ups from the event stream, so waiting for a wave costs no polling;
        # ``changed``: calls an event came for since their task last read them (a wake-up
        # from a tick alone needs no new read).
        self.waiters: dict[str, asyncio.Event] = {}
        self.changed: set[str] = set()
        self.renewed: dict[str, float] = {}  # call id -> when its lease was last renewed
        self.claimed: dict[str, dict[str, str]] = {}  # call id -> its hash as claimed
        self._background: set[asyncio.Task] = set()
        self.interpreters = Interpreters(self)
        self.watch = CallWatch(self)
        # Every dispatcher hears every node; one per node acts on what it hears (duty.py).
        self.duty = Duty(self.name, calls.redis, ami, self.watch.observe, self.watch.act,
                         wants=self.watch.wants)
        self.texts = TextOffers(self)  # text conversations: offers by link, not phone legs
        self.callbacks = CallbackStore(calls.redis)
        self.waves = WavePlanner(self)
        # Free responders go to the most urgent call first; calls plan in batches.
        self.turns: Turns[PlanJob, Planned] = Turns(BUSY_RETRY_S, self.waves.plan_batch,
                                                    won=lambda planned: planned[0] is not None)
        self.turns.on_won = self._wake

    @property
    def redis(self):
        return self.calls.redis

    # ---- main loop ---------------------------------------------------------------------
    async def follow_events(self, stop: asyncio.Event) -> None:
        """Wake the task of any call something happened to (accepted, passed, hung up...)."""
        last = "$"
        while not stop.is_set():
            try:
                got = await self.redis.xread({EVENTS: last}, count=500, block=500)
            except Exception as exc:
                log.warning("%s: event stream: %s", self.name, exc)
                last = "$"  # a Redis that came back empty has a new stream
                await asyncio.sleep(1)
                continue
            freeing = False
            for _, entries in got or []:
                for eid, body in entries:
                    last = eid
                    kind = body.get(b"type")
                    if kind in (b"queued", b"requeued"):
                        self.wake.set()
                    elif kind in FREEING:
                        freeing = True
                    if kind in QUIET:
                        continue
                    call_id = (body.get(b"call_id") or b"").decode()
                    waiter = self.waiters.get(call_id)
                    if waiter is not None:
                        self.changed.add(call_id)
                        waiter.set()
            if freeing and self.turns.starving:
                self.turns.nudge()  # once per read: a burst of passes is one look, not hundreds
            if got:
                # Let the next events gather: at 500 callers a read came back with one or two
                # events, 5 reads per call, each a round trip of ~0.15 ms CPU (bench_dispatch).
                await asyncio.sleep(EVENTS_GAP_S)

    def _wake(self, call_id: str) -> None:
        """A batch rang for the parked call: its task goes on."""
        waiter = self.waiters.get(call_id)
        if waiter is not None:
            waiter.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Take calls until ``stop`` is set."""
        log.info("%s taking calls", self.name)
        follower = asyncio.create_task(self.follow_events(stop))
        ticker = asyncio.create_task(self.turns.run(stop))
        on_duty = asyncio.create_task(self.duty.run(stop))
        try:
            await self._take_calls(stop)
        finally:
            follower.cancel()
            ticker.cancel()
            on_duty.cancel()

    async def _take_calls(self, stop: asyncio.Event) -> None:
        housekept = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - housekept >= HOUSEKEEPING_S:
                    housekept = time.monotonic()
                    await self.calls.requeue_expired()
                    await self.callbacks.release_due()
                self.wake.clear()
                claimed = await self.calls.claim(self.name, self.lease_s, CLAIM_BATCH)
            except Exception as exc:
                log.warning("%s: Redis unavailable (%s); retrying", self.name, exc)
                await asyncio.sleep(1)
                continue
            if not claimed:
                try:
                    await asyncio.wait_for(self.wake.wait(), HOUSEKEEPING_S)
                except TimeoutError:
                    pass
                continue
            for call_id, data in claimed:
                # A call can come back to us while its previous task is still finishing (it
                # handed the call back, then logs and returns): the new one waits for it, and
                # only a task's own entry is removed when it ends, so stopping cancels every one.
                previous = self.tasks.get(call_id)
                if previous is None:
                    self.claimed[call_id] = data  # read in the claim; one waiting reads again
                task = asyncio.create_task(self._dispatch_after(previous, call_id),
                                           name=f"call {call_id}")
                self.tasks[call_id] = task
                task.add_done_callback(self._forget_task)
            await asyncio.sleep(0)  # the claimed calls' tasks start before the next claim
        for task in list(self.tasks.values()):
            task.cancel()

    def _forget_task(self, task: asyncio.Task) -> None:
        call_id = task.get_name().removeprefix("call ")
        if self.tasks.get(call_id) is task:
            del self.tasks[call_id]

    async def _dispatch_after(self, previous: asyncio.Task | None, call_id: str) -> None:
        if previous is not None and not previous.done():
            # Awaited, not shielded: cancelling this task (a stop) cancels that one too. It
            # had handed the call back, so it is only finishing; one stuck that long (an AMI
            # reply that never came) is cancelled rather than keep the caller waiting on it.
            try:
                await asyncio.wait_for(previous, PREVIOUS_TASK_S)
            except TimeoutError:
                log.warning("%s: call %s: its previous task was stuck; cancelled it", self.name,
                            call_id)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # its failure was its own, logged where it happened
                pass
        await self.dispatch(call_id)

    # ---- one call ------------------------------------------------------------------------
    async def _hash(self, call_id: str) -> dict[str, str]:
        return (await self.calls.read(call_id))[0]

    async def _call_and_offers(self, call_id: str,
                               offers: bool) -> tuple[dict[str, str], dict[str, str]]:
        """The call's hash and (with ``offers``) its offers: one round trip."""
        return await self.calls.read(call_id, offers_key(call_id) if offers else None)

    async def _still_mine(self, call_id: str) -> bool:
        """Renew the lease; False when another dispatcher owns the call now."""
        if not await self.calls.renew_if_owner(call_id, self.name, self.lease_s):
            return False
        self.renewed[call_id] = time.monotonic()
        return True

    async def attend(self, data: dict[str, str]) -> float:
        """Tell Asterisk a dispatcher looks after this caller; returns when to say it again."""
        channel = data.get("channel")
        unattended = float(self.settings.unattended_s)
        if channel:
            until = int(time.time() + unattended)
            await self.ami.setvar(channel, "PR_ATTENDED_UNTIL", str(until))
        return time.monotonic() + unattended / 3

    def attend_soon(self, data: dict[str, str]) -> float:
        """:meth:`attend` in the background: an AMI round trip is no reason to ring later
        (the caller has unattended_s before the dialplan stops waiting for us)."""
        self._spawn(self.attend(data))
        return time.monotonic() + float(self.settings.unattended_s) / 3

    def _first_attend(self, data: dict[str, str]) -> float:
        """When to first tell Asterisk this caller is looked after. The IVR marks them so for
        unattended_s as it queues them: a call taken fresh from the queue needs no word from
        us before a third of that has gone (an AMI round trip fewer per call). Any other - put
        back after a responder left, restored from the PBX, a callback - at once."""
        unattended = float(self.settings.unattended_s)
        queued = float(data.get("queued_at") or 0)
        age = time.time() - queued
        fresh = queued and 0 <= age < unattended / 3 and int(data.get("cycle") or 0) == 0 and \
            not (data.get("restored") or data.get("previous_responder") or data.get("cb_state"))
        if fresh:
            return time.monotonic() + unattended / 3 - age
        return self.attend_soon(data)

    def _now(self) -> datetime:
        return clock.now(self.settings.timezone, self.settings.clock)

    def _wave_timeout(self, data: dict[str, str]) -> float:
        """A text offer is read on a phone's browser: its waves last longer."""
        if data.get("source") == Source.TEXT:
            return self.settings.text_wave_timeout_s
        return self.settings.wave_timeout_s

    async def dispatch(self, call_id: str) -> None:
        try:
            await self._dispatch(call_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dispatching %s failed; putting it back in the queue", call_id)
            await self.redis.hset(call_key(call_id), "owner", "")
            await self.calls.requeue_expired()
        finally:
            self.waiters.pop(call_id, None)
            self.changed.discard(call_id)
            self.renewed.pop(call_id, None)
            self.claimed.pop(call_id, None)
            self.turns.forget(call_id)

    async def _dispatch(self, call_id: str) -> None:
        data = self.claimed.pop(call_id, None) or await self._hash(call_id)
        if data.get("state") not in LIVE:
            await self.redis.zrem(CLAIMED, call_id)
            return
        if data.get("owner") != self.name:
            return  # another dispatcher took it back meanwhile (its lease had run out)
        self.renewed[call_id] = time.monotonic()  # the claim a moment ago set the lease
        cycle = int(data.get("cycle") or 0)
        last_wave = int(data.get("wave") or 0)
        # The longest wait counts from the queue: the search itself is what it bounds. A text
        # conversation's search goes on past max_wait_s: it then counts from there.
        started = float(data.get("search_from") or data.get("queued_at")
                        or data.get("created_at") or time.time())
        if self._may_have_missed_events(data) and not await self._caller_still_waiting(call_id, data):
            return
        attend_at = self._first_attend(data)
        cycle_started, rung_in_cycle = time.time(), 0
        score = float(data.get("queue_score") or time.time() * 1000)
        fresh = True  # ``data`` was just read and the lease just taken: no need to look again
        while True:
            if not fresh:
                if not await self._still_mine(call_id):
                    return
                data = await self._hash(call_id)
            fresh = False
            if data.get("accepted_by"):
                await self.connect(call_id, data)
                return
            if data.get("state") not in LIVE:
                await self.cancel_legs(call_id)
                return
            if time.monotonic() >= attend_at:
                attend_at = self.attend_soon(data)
            if time.time() - started > self.settings.max_wait_s:
                if await self.give_up(call_id, data):
                    return
                started = time.time()
            planned = await self.turns.take(call_id, score, PlanJob(call_id, data, cycle, last_wave))
            if planned[0] is None and not rung_in_cycle and \
                    time.time() - cycle_started < self.settings.wave_timeout_s:
                # Everyone who could take it is on a call, resting or ringing for another
                # caller: starving, it waits for a batch to ring for it (turns.py).
                outcome, attend_at, data, won = await self._starve(
                    call_id, score, data, cycle, attend_at,
                    min(cycle_started + self.settings.wave_timeout_s,
                        started + self.settings.max_wait_s))
                last_wave = 0
                if won is None:
                    if outcome == "lost":
                        return
                    fresh = outcome == "event"  # (read just now)
                    continue
                planned = won
            wave, rung, last_wave = planned
            if wave is None:
                await self.calls.event(call_id, "waves_exhausted", cycle=cycle)
                if not data.get("callback_offered") and data.get("ivr_done") == "1":
                    await self.offer_callback(call_id, data)
                cycle += 1
                last_wave = 0
                previous_start, cycle_started, rung_in_cycle = cycle_started, time.time(), 0
                await self.redis.hset(call_key(call_id), mapping={"cycle": cycle, "wave": 0})
                # The next cycle rings the same people again, but never at once: a phone that
                # answers "busy" straight away was rung again and again, many times a second
                # (bench/soak.py: one call, 450 cycles). Anything that happens to the call
                # meanwhile (taken, gone) is read at the top of the loop.
                gap = min(self.settings.wave_timeout_s, MIN_CYCLE_S)
                if previous_start + gap > time.time():
                    await self._pause(call_id, previous_start + gap)
                    continue
                # Nobody to ring right now: wait a little before planning again.
                outcome, attend_at, data, won = await self._starve(
                    call_id, score, data, cycle, attend_at,
                    min(time.time() + min(self.settings.wave_timeout_s, 5.0),
                        started + self.settings.max_wait_s))
                if won is None:
                    if outcome == "lost":
                        return
                    continue
                wave, rung, last_wave = won
            self.turns.starving.pop(call_id, None)
            rung_in_cycle += len(rung)
            outcome, attend_at, data = await self._wait_wave(call_id, rung, wave.timeout_s,
                                                             attend_at)
            if outcome == "lost":
                return
            if outcome == "accepted":
                await self.connect(call_id, data)
                return
            if outcome == "gone":
                await self.cancel_legs(call_id)
                return
            await self.end_wave(call_id, wave, cycle, data.get("source", ""))

    async def _pause(self, call_id: str, until: float) -> None:
        """Wait until ``until`` (epoch s), unless the call is taken or over meanwhile."""
        waiter = self.waiters.setdefault(call_id, asyncio.Event())
        while time.time() < until:
            await self._wait_for(call_id, waiter, until - time.time())
            if call_id in self.changed:
                self.changed.discard(call_id)
                data = await self._hash(call_id)
                if data.get("accepted_by") or data.get("state") not in LIVE:
                    return

    def ring(self, call_id: str, responder: Responder, cycle: int, wave: int, speaks: bool,
             timeout_s: float, source: str = "") -> None:
        """Originate one responder's leg into [pr-responder] (their whisper). A text
        conversation has no leg: its offer is a one-time link (TextOffers)."""
        if source == Source.TEXT:
            self.texts.offer(call_id, responder, cycle, wave, speaks, timeout_s)
            return
        self.ami.originate(leg_id(call_id, cycle, wave, responder.id),
                           self.dial_string(responder.phone), "pr-responder",
                           {"PR_CALL_ID": call_id, "PR_RESPONDER": responder.id,
                            "PR_SPEAKS": "1" if speaks else "0"}, timeout_s)

    def dial_string(self, phone: str) -> str:
        return destinations.dial_string(phone)
