"""Planning and ringing waves for a batch of calls at once, in queue order (turns.py says
why in batches).

One batch costs a few Redis round trips whatever its size: everyone's live state and each
call's offered set are read together; the calls are planned one after another on that
snapshot, each taking its responders out of it for the calls behind (the queue's order);
every offer is then made in one pipeline, each still decided by its own Lua script (never
double-booked, whatever another dispatcher does meanwhile); a call whose picks were all
taken meanwhile plans its next wave in another round, as before; then the rung calls' waves
are written together, and the phones rung.

Planning looks only at who could be free at all (not on a call, not resting, not ringing for
another call): when nearly everyone is busy, as with hundreds of callers, a starving call's
plan costs next to nothing, and none at all once nobody is left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from crisisline import destinations
from crisisline.roster.model import Responder, RosterSnapshot
from crisisline.routing import CallToRoute, ResponderState, Wave, next_wave
from crisisline.stores.calls import EVENTS, call_key
from crisisline.stores.offers import offered_key
from crisisline.stores.scripts import evalsha_many

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher


@dataclass(frozen=True)
class PlanJob:
    call_id: str
    data: dict[str, str]
    cycle: int
    last_wave: int


# (the wave rung, or None when nobody could be rung now; who was rung; its number)
Planned = tuple[Wave | None, list[str], int]
# A responder who could be free: (ringing_for or "", last_offered_at, resting_until)
Live = tuple[str, float | None, float | None]
AHEAD = 16  # calls whose offered sets are read at a time


@dataclass(frozen=True)
class OnCall:
    """Who is on call now, as the planner reads them for every batch (worked out once a
    minute: with thousands on call, sorting them out per batch was most of its CPU)."""

    ringable: list[str]  # the ids of those whose phones can be rung (destinations.refusal)
    groups: list[list[Responder]]  # the ringable, by team, backup group and languages


class WavePlanner:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self._on_call_cache: tuple[object, OnCall] = (None, OnCall([], []))
        self._refusals: dict[str, str | None] = {}

    def on_call(self, roster: RosterSnapshot, now: datetime) -> OnCall:
        """Who is on call, worked out once a minute per roster (shifts are in minutes)."""
        key = (id(roster), now.replace(second=0, microsecond=0))
        if self._on_call_cache[0] != key:
            self._on_call_cache = (key, self._sorted_out(roster.on_call(now)))
        return self._on_call_cache[1]

    def _sorted_out(self, on_call: list[Responder]) -> OnCall:
        """Who of ``on_call`` can be rung at all, and by what a plan tells them apart by
        (team, backup group, languages): each group in id order, the groups in the order
        their first member comes in ``on_call``."""
        ringable = [r for r in on_call if self.refusal(r.phone) is None]
        groups: dict[tuple[str | None, bool, frozenset[str]], list[Responder]] = {}
        for r in ringable:
            groups.setdefault((r.team_id, r.backup, r.languages), []).append(r)
        for group in groups.values():
            group.sort(key=lambda r: r.id)
        return OnCall([r.id for r in ringable], list(groups.values()))

    def refusal(self, phone: str) -> str | None:
        """destinations.refusal, once per number: parsing a number for every plan of every
        call was a real cost with E.164 rosters (the settings don't change while we run)."""
        if phone not in self._refusals:
            if len(self._refusals) > 100_000:
                self._refusals.clear()
            self._refusals[phone] = destinations.refusal(phone, self.d.settings)
        return self._refusals[phone]

    async def _offered(self, jobs: Sequence[PlanJob]) -> list[set[str]]:
        """Who each call was offered to in its cycle (one pipeline)."""
        if not jobs:
            return []
        async with self.d.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.smembers(offered_key(job.call_id, job.cycle))
            got = await pipe.execute()
        return [{m.decode() for m in members} for members in got]

    @staticmethod
    def _groups(on_call: OnCall, live: dict[str, Live]) -> list[list[Responder]]:
        """The groups' members who could be free now, each group in plan()'s order within a
        wave (least recently offered first, then id: the sort is stable, the groups in id
        order already). Per batch, over the whole roster: kept to a filter and a sort."""
        out = []
        for group in on_call.groups:
            here = [r for r in group if r.id in live]
            if here:
                here.sort(key=lambda r: live[r.id][1] or 0.0)
                out.append(here)
        return out

    def _next_wave(self, job: PlanJob, roster: RosterSnapshot, now: datetime,
                   groups: list[list[Responder]], live: dict[str, Live], taken: dict[str, str],
                   passed: set[str], last_wave: int) -> Wave | None:
        """The call's next wave after ``last_wave`` (``taken``: who this batch has rung
        already, for which call). plan() sees only who could be free for this call, and of
        each group only the first few: a wave takes at most max_per_wave people, always a
        group's first ones left (same order), and at most eight waves are worked out, so the
        first 8 x max_per_wave of each group give plan() the same answer as all of them;
        with a roster of thousands, that is the difference between a millisecond and ten
        per call."""
        settings = self.d.settings
        cap = 8 * settings.ring_per_wave if settings.ring_per_wave else None
        people: list[Responder] = []
        states: dict[str, ResponderState] = {}
        for group in groups:
            count = 0
            for r in group:
                ringing, offered, resting = live[r.id]
                ringing = taken.get(r.id) or ringing
                if (ringing and ringing != job.call_id) or r.id in passed:
                    continue
                people.append(r)
                states[r.id] = ResponderState(ringing_for=ringing or None,
                                              last_offered_at=offered, resting_until=resting)
                count += 1
                if count == cap:
                    break
        if not people:
            return None
        data = job.data
        # Speakers get language_wait_s of ringing to themselves, counted from the queue.
        waited = time.time() - float(data.get("queued_at") or data.get("created_at") or time.time())
        return next_wave(CallToRoute(job.call_id, data.get("language", "en"),
                                     data.get("neighborhood") or None, waited),
                         roster, states, now, last_wave, passed=passed, on_call=people,
                         wave_timeout_s=self.d._wave_timeout(data),
                         max_per_wave=settings.ring_per_wave or None,
                         language_wait_s=settings.language_wait_s, refuse=self.refusal,
                         rest_at=time.time())

    async def plan_batch(self, jobs: Sequence[PlanJob]) -> list[Planned]:
        """Each job's next wave with anyone free to ring, rung, in the order given (the
        queue's); (None, [], last wave) for a call nobody can be rung for now."""
        roster = self.d.roster()
        now = self.d._now()
        on_call = self.on_call(roster, now)
        # Who could be free for anyone: not on a call, not resting. (Ringing for some call
        # is judged per call: a plan may name someone ringing for that very call.)
        # The first calls' offered sets in the same wait (the rest when needed).
        live, first = await asyncio.gather(
            # (Rests end by the real clock, whatever PR_CLOCK pins: routing.plan's rest_at.)
            self.d.offers.candidates(on_call.ringable, time.time()),
            self._offered(jobs[:AHEAD]))
        groups = self._groups(on_call, live)
        # Those ringing for nobody: once none is left, the calls behind plan nothing (one
        # ringing for a call can't be offered it again); hundreds of starving calls then
        # cost a loop, not a plan and a read each.
        free = sum(1 for ringing, _, _ in live.values() if not ringing)
        taken: dict[str, str] = {}  # rid -> the call of this batch that rings them
        passed: list[set[str] | None] = [*first, *[None] * (len(jobs) - len(first))]
        results: dict[int, Planned] = {}
        last = [job.last_wave for job in jobs]
        pending = list(range(len(jobs)))
        while pending:  # each round moves every pending call on by a wave: at most 8 rounds
            picks: list[tuple[int, Wave]] = []
            for i in pending:
                job = jobs[i]
                if free <= 0:
                    results[i] = (None, [], last[i])
                    continue
                if passed[i] is None:  # this call's and the next few calls' offered sets
                    ahead = [k for k in range(i, len(jobs)) if passed[k] is None][:max(AHEAD, free)]
                    for k, members in zip(ahead, await self._offered([jobs[k] for k in ahead]),
                                          strict=True):
                        passed[k] = members
                mine = passed[i]
                assert mine is not None
                wave = self._next_wave(job, roster, now, groups, live, taken, mine, last[i])
                if wave is None:
                    results[i] = (None, [], last[i])
                    continue
                last[i] = wave.number
                for r in wave.responders:  # out of reach of the calls behind in the batch
                    if not (taken.get(r.id) or live[r.id][0]):
                        free -= 1
                    taken[r.id] = job.call_id
                picks.append((i, wave))
            # Belt and braces: plan() already refused these destinations.
            asked = [(i, w, [r for r in w.responders if self.refusal(r.phone) is None])
                     for i, w in picks]
            decided = iter(await self.d.offers.ring_many(
                [(jobs[i].call_id, r.id, w.number, jobs[i].cycle) for i, w, who in asked
                 for r in who]))
            pending = []
            rung: list[tuple[PlanJob, Wave, list[Responder]]] = []
            for i, wave, who in asked:
                chosen = []
                for r in who:
                    if next(decided):
                        chosen.append(r)
                    else:  # busy meanwhile (another dispatcher), or offered already
                        passed[i].add(r.id)  # type: ignore[union-attr]
                if chosen:
                    results[i] = (wave, [r.id for r in chosen], wave.number)
                    rung.append((jobs[i], wave, chosen))
                else:
                    pending.append(i)  # its next wave, at once
            await self._rung(rung)
        return [results[i] for i in range(len(jobs))]

    async def _rung(self, rung: list[tuple[PlanJob, Wave, list[Responder]]]) -> None:
        """The phones, then the waves' record (one pipeline for all). The phones first: each
        offer is in Redis already (ring_many), which is all a whisper and the reconciler need;
        the wave's fields are the record's, and a round trip later is no reason to ring later."""
        if not rung:
            return
        started = f"{time.time():.3f}"
        for job, wave, chosen in rung:
            language = job.data.get("language", "en")
            for responder in chosen:
                self.d.ring(job.call_id, responder, job.cycle, wave.number,
                            language in responder.languages, wave.timeout_s,
                            source=job.data.get("source", ""))
        script = self.d.calls.wave_started_script
        await evalsha_many(self.d.redis, [
            (script, [call_key(job.call_id), EVENTS],
             [job.call_id, str(wave.number), str(job.cycle), started, wave.label,
              ",".join(r.id for r in chosen)])
            for job, wave, chosen in rung])
