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
from collections.abc import Callable
from datetime import datetime

from crisisline import clock, destinations
from crisisline.call import Source
from crisisline.config import Settings
from crisisline.roster.model import Responder, RosterSnapshot
from crisisline.routing import CallToRoute, ResponderState, Wave, plan
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import CLAIMED, EVENTS, CallStore, call_key
from crisisline.stores.offers import OfferStore, in_whisper, offered_key
from workers.dispatcher.ami import AmiGateway, leg_id
from workers.dispatcher.ends import CallEnds
from workers.dispatcher.interpreter import Interpreters
from workers.dispatcher.texts import TextOffers
from workers.dispatcher.turns import Turns
from workers.dispatcher.watch import CallWatch

log = logging.getLogger(__name__)
LEASE_S = 15.0
POLL_S = 0.5
BUSY_RETRY_S = 0.5
LIVE = {"waiting", "dispatching"}
# Events after which a responder may be free again (starving calls look at once).
PREVIOUS_TASK_S = 5.0  # a call's finishing task, waited for before a new one works it
FREEING = {b"offer_passed", b"caller_hung_up", b"call_ended", b"responder_left", b"fallback",
           b"callback_attempt_failed", b"callback_failed", b"callback_cancelled"}


async def _first(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    """Until either event is set, at most ``timeout`` seconds."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Dispatcher(CallEnds):
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
        # Per-call wake-ups from the event stream, so waiting for a wave costs no polling.
        self.waiters: dict[str, asyncio.Event] = {}
        self._on_call_cache: tuple[object, list] = (None, [])
        self.interpreters = Interpreters(self)
        self.watch = CallWatch(self)
        self.texts = TextOffers(self)  # text conversations: offers by link, not phone legs
        self.callbacks = CallbackStore(calls.redis)
        self.turns = Turns(BUSY_RETRY_S)  # free responders go to the most urgent call first

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
            for _, entries in got or []:
                for eid, body in entries:
                    last = eid
                    kind = body.get(b"type")
                    if kind in (b"queued", b"requeued"):
                        self.wake.set()
                    elif kind in FREEING and self.turns.starving:
                        self.turns.nudge()
                    waiter = self.waiters.get((body.get(b"call_id") or b"").decode())
                    if waiter is not None:
                        waiter.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Take calls until ``stop`` is set."""
        log.info("%s taking calls", self.name)
        follower = asyncio.create_task(self.follow_events(stop))
        ticker = asyncio.create_task(self.turns.run(stop))
        try:
            await self._take_calls(stop)
        finally:
            follower.cancel()
            ticker.cancel()

    async def _take_calls(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.calls.requeue_expired()
                await self.callbacks.release_due()
                call_id = await self.calls.claim_next(self.name, self.lease_s)
            except Exception as exc:
                log.warning("%s: Redis unavailable (%s); retrying", self.name, exc)
                await asyncio.sleep(1)
                continue
            if call_id is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.2)
                except TimeoutError:
                    pass
                continue
            # A call can come back to us while its previous task is still finishing (it
            # handed the call back, then logs and returns): the new one waits for it, and only
            # a task's own entry is removed when it ends, so stopping cancels every one.
            previous = self.tasks.get(call_id)
            task = asyncio.create_task(self._dispatch_after(previous, call_id),
                                       name=f"call {call_id}")
            self.tasks[call_id] = task
            task.add_done_callback(self._forget_task)
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
        raw = await self.redis.hgetall(call_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def _still_mine(self, call_id: str) -> bool:
        """Renew the lease; False when another dispatcher owns the call now."""
        owner = await self.calls.field(call_id, "owner")
        if owner != self.name:
            return False
        await self.calls.renew(call_id, self.lease_s)
        return True

    async def attend(self, data: dict[str, str]) -> float:
        """Tell Asterisk a dispatcher looks after this caller; returns when to say it again."""
        channel = data.get("channel")
        unattended = float(self.settings.unattended_s)
        if channel:
            until = int(time.time() + unattended)
            await self.ami.setvar(channel, "PR_ATTENDED_UNTIL", str(until))
        return time.monotonic() + unattended / 3

    def _now(self) -> datetime:
        return clock.now(self.settings.timezone, self.settings.clock)

    def _on_call(self, roster: RosterSnapshot, now: datetime) -> list[Responder]:
        """Who is on call, worked out once a minute per roster (shifts are in minutes)."""
        key = (id(roster), now.replace(second=0, microsecond=0))
        if self._on_call_cache[0] != key:
            self._on_call_cache = (key, roster.on_call(now))
        return self._on_call_cache[1]

    async def _states(self, people: list[Responder]) -> dict[str, ResponderState]:
        raw = await self.offers.states([r.id for r in people])

        def number(value: str | None) -> float | None:
            return float(value) if value else None

        return {rid: ResponderState(on_call_with=row.get("on_call_with") or None,
                                    ringing_for=row.get("ringing_for") or None,
                                    last_offered_at=number(row.get("last_offered_at")),
                                    resting_until=number(row.get("resting_until")))
                for rid, row in raw.items()}

    def _wave_timeout(self, data: dict[str, str]) -> float:
        """A text offer is read on a phone's browser: its waves last longer."""
        if data.get("source") == Source.TEXT:
            return self.settings.text_wave_timeout_s
        return self.settings.wave_timeout_s

    async def next_wave(self, call_id: str, data: dict[str, str], cycle: int,
                        last_wave: int) -> Wave | None:
        roster = self.roster()
        now = self._now()
        on_call = self._on_call(roster, now)
        passed = {m.decode() for m in await self.redis.smembers(offered_key(call_id, cycle))}
        # Speakers get language_wait_s of ringing to themselves, counted from the queue.
        waited = time.time() - float(data.get("queued_at") or data.get("created_at") or time.time())
        waves = plan(CallToRoute(call_id, data.get("language", "en"),
                                 data.get("neighborhood") or None, waited),
                     roster, await self._states(on_call), now, passed=passed, on_call=on_call,
                     wave_timeout_s=self._wave_timeout(data),
                     max_per_wave=self.settings.ring_per_wave or None,
                     language_wait_s=self.settings.language_wait_s,
                     refuse=lambda d: destinations.refusal(d, self.settings))
        return next((w for w in waves if w.number > last_wave), None)

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
            self.turns.starving.pop(call_id, None)

    async def _dispatch(self, call_id: str) -> None:
        data = await self._hash(call_id)
        if data.get("state") not in LIVE:
            await self.redis.zrem(CLAIMED, call_id)
            return
        cycle = int(data.get("cycle") or 0)
        last_wave = int(data.get("wave") or 0)
        # The longest wait counts from the queue: the search itself is what it bounds. A text
        # conversation's search goes on past max_wait_s: it then counts from there.
        started = float(data.get("search_from") or data.get("queued_at")
                        or data.get("created_at") or time.time())
        if self._may_have_missed_events(data) and not await self._caller_still_waiting(call_id, data):
            return
        attend_at = await self.attend(data)
        cycle_started, rung_in_cycle = time.time(), 0
        score = float(data.get("queue_score") or time.time() * 1000)
        while True:
            if not await self._still_mine(call_id):
                return
            data = await self._hash(call_id)
            if data.get("accepted_by"):
                await self.connect(call_id, data)
                return
            if data.get("state") not in LIVE:
                await self.cancel_legs(call_id)
                return
            if time.monotonic() >= attend_at:
                attend_at = await self.attend(data)
            if time.time() - started > self.settings.max_wait_s:
                if await self.give_up(call_id, data):
                    return
                started = time.time()
            async with self.turns.turn(call_id, score):
                wave, rung, last_wave = await self._plan_and_ring(call_id, data, cycle, last_wave)
            if wave is None:
                # Everyone who could take it is on a call, resting or ringing for another
                # caller: starving, it looks again with the others, in queue order (turns.py).
                self.turns.starving[call_id] = score
                if not rung_in_cycle and time.time() - cycle_started < self.settings.wave_timeout_s:
                    outcome, attend_at = await self._wait_wave(call_id, [], BUSY_RETRY_S, attend_at,
                                                               tick=self.turns.tick)
                    if outcome == "lost":
                        return
                    last_wave = 0
                    continue
                await self.calls.event(call_id, "waves_exhausted", cycle=cycle)
                if not data.get("callback_offered") and data.get("ivr_done") == "1":
                    await self.offer_callback(call_id, data)
                cycle += 1
                last_wave = 0
                cycle_started, rung_in_cycle = time.time(), 0
                await self.redis.hset(call_key(call_id), mapping={"cycle": cycle, "wave": 0})
                # Nobody to ring right now: wait a little before planning again.
                outcome, attend_at = await self._wait_wave(
                    call_id, [], min(self.settings.wave_timeout_s, 5.0), attend_at,
                    tick=self.turns.tick)
                if outcome == "lost":
                    return
                continue
            self.turns.starving.pop(call_id, None)
            rung_in_cycle += len(rung)
            outcome, attend_at = await self._wait_wave(call_id, rung, wave.timeout_s, attend_at)
            if outcome == "lost":
                return
            if outcome == "accepted":
                await self.connect(call_id, await self._hash(call_id))
                return
            if outcome == "gone":
                await self.cancel_legs(call_id)
                return
            await self.end_wave(call_id, wave, cycle)

    async def _plan_and_ring(self, call_id: str, data: dict[str, str], cycle: int,
                             last_wave: int) -> tuple[Wave | None, list[str], int]:
        """The next wave with anyone free to ring, rung: (wave, who, its number); (None, [],
        last_wave) when nobody can be rung now. Waves whose people all became busy meanwhile
        are skipped at once."""
        while True:
            wave = await self.next_wave(call_id, data, cycle, last_wave)
            if wave is None:
                return None, [], last_wave
            last_wave = wave.number
            rung = await self.ring_wave(call_id, data, wave, cycle)
            if rung:
                return wave, rung, last_wave

    async def ring_wave(self, call_id: str, data: dict[str, str], wave: Wave,
                        cycle: int) -> list[str]:
        """Ring whoever of the wave is still free; [] when no one is."""
        chosen = []
        for responder in wave.responders:
            if destinations.refusal(responder.phone, self.settings):
                continue  # belt and braces: plan() already refused it
            if await self.offers.ring(call_id, responder.id, wave.number, cycle):
                chosen.append(responder)
        if not chosen:
            return []
        await self.redis.hset(call_key(call_id), mapping={
            "state": "dispatching", "wave": wave.number, "cycle": cycle,
            "wave_started_at": f"{time.time():.3f}",
            "waves_used": max(int(data.get("waves_used") or 0), wave.number)})
        await self.calls.event(call_id, "wave_started", wave=wave.number, cycle=cycle,
                               label=wave.label, responders=",".join(r.id for r in chosen))
        language = data.get("language", "en")
        for responder in chosen:
            self.ring(call_id, responder, cycle, wave.number, language in responder.languages,
                      wave.timeout_s, source=data.get("source", ""))
        return [r.id for r in chosen]

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

    async def _wait_wave(self, call_id: str, rung: list[str], seconds: float,
                         attend_at: float, tick: asyncio.Event | None = None) -> tuple[str, float]:
        """('accepted' | 'gone' (caller left) | 'passed' (everyone passed) | 'timeout' |
        'lost' (another dispatcher owns the call now: leave its legs alone), next attend)."""
        deadline = time.monotonic() + seconds
        renew_at = time.monotonic() + self.lease_s / 3
        waiter = self.waiters.setdefault(call_id, asyncio.Event())
        while time.monotonic() < deadline:
            waiter.clear()
            data = await self._hash(call_id)
            if data.get("accepted_by"):
                return "accepted", attend_at
            if data.get("state") not in LIVE:
                return "gone", attend_at
            if rung:
                offers = await self.offers.offers(call_id)
                if all(offers.get(rid, "").startswith("passed") for rid in rung):
                    return "passed", attend_at
            if time.monotonic() > renew_at:
                if not await self._still_mine(call_id):
                    return "lost", attend_at
                renew_at = time.monotonic() + self.lease_s / 3
            if time.monotonic() >= attend_at:
                attend_at = await self.attend(data)
            if tick is not None and tick.is_set():
                return "timeout", attend_at  # the starving calls' turn to look again
            # Woken by the call's next event; the bounded wait is a safety net, not the clock.
            limit = min(POLL_S, max(0.01, deadline - time.monotonic()),
                        max(0.01, renew_at - time.monotonic()))
            try:
                if tick is None:
                    await asyncio.wait_for(waiter.wait(), limit)
                else:
                    await _first(waiter, tick, limit)
            except TimeoutError:
                pass
        return "timeout", attend_at

    async def end_wave(self, call_id: str, wave: Wave, cycle: int) -> None:
        offers = await self.offers.offers(call_id)
        for responder in wave.responders:
            status = offers.get(responder.id, "")
            if in_whisper(status):
                # Answered and listening to who is waiting (with the caller's message that
                # can outlast a wave): never cut off; the whisper ends the offer itself.
                continue
            if status.startswith("ringing"):
                # The reason first: the whisper sees the hang-up and would call it its own.
                await self.offers.passed(call_id, responder.id, "no_answer")
                await self.hangup_leg(call_id, responder.id)
        await self.calls.event(call_id, "wave_timeout", wave=wave.number, cycle=cycle)
