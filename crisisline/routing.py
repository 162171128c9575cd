"""Who to ring for a waiting call: a pure function of (call, roster, responder states, now).

Language before neighborhood (issue 10): on a phone call, speaking the caller's language
matters more than living in their neighborhood. Waves, each rung together:

  speakers of the caller's language, on call and free
    wave 1  the caller's neighborhood team
    wave 2  adjacent teams
    wave 3  everyone else citywide (not the backup group)
    wave 4  the citywide backup group
  then everyone else on call, only once no speaker is left to ring, or once the caller has
  waited ``language_wait_s`` (an interpreter line is added when one of them takes the call)
    wave 5  the caller's team          wave 6  adjacent teams
    wave 7  everyone else citywide     wave 8  the backup group
  Once the caller has waited ``language_wait_s``, waves 1-4 are merged into wave 5: every
  speaker not rung yet rings together with the caller's team (speakers first).

A caller with no known neighborhood has no waves 1, 2, 5 or 6: citywide it is. No free
on-call responder is ever left out: waves 7 and 8 reach everyone on call citywide.

Skipped: responders on a call, ringing for another call, resting after one (wrap-up),
who passed on this call already, or whose destination may never be dialled (emergency or
police: see destinations.py). Within a wave, least recently offered first;
``max_per_wave`` rings only the first N (the rest come in the next plan).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from crisisline.roster.model import Responder, RosterSnapshot

SPEAKER_WAVES = (1, 2, 3, 4)
EVERYONE_WAVES = (5, 6, 7, 8)


@dataclass(frozen=True)
class ResponderState:
    on_call_with: str | None = None     # a call id while bridged
    ringing_for: str | None = None      # a call id while an offer rings
    last_offered_at: float | None = None  # epoch seconds
    resting_until: float | None = None  # epoch seconds: wrap-up after their last call

    def free_for(self, call_id: str, at: float | None = None) -> bool:
        if self.on_call_with is not None or self.ringing_for not in (None, call_id):
            return False
        return at is None or self.resting_until is None or self.resting_until <= at


@dataclass(frozen=True)
class CallToRoute:
    id: str
    language: str
    neighborhood: str | None
    waited_s: float = 0.0  # since the call was queued (phones could ring)


@dataclass(frozen=True)
class Wave:
    number: int
    label: str
    responders: tuple[Responder, ...]
    timeout_s: float

    @property
    def speakers_only(self) -> bool:
        return self.number in SPEAKER_WAVES


FREE = ResponderState()


def plan(call: CallToRoute, roster: RosterSnapshot, states: Mapping[str, ResponderState],
         now: datetime, *, passed: Iterable[str] = (), wave_timeout_s: float = 20.0,
         max_per_wave: int | None = None, language_wait_s: float = 30.0,
         refuse: Callable[[str], str | None] = lambda _dest: None,
         on_call: list[Responder] | None = None, rest_at: float | None = None) -> list[Wave]:
    """The waves to ring, in order; empty waves are left out (numbers keep their meaning).

    ``on_call`` may be given when the caller already computed ``roster.on_call(now)``.
    ``rest_at``: the epoch time a rest (``resting_until``, written by the real clock) is
    judged at; ``now``'s by default. They differ when the clock is pinned (PR_CLOCK): ``now``
    says whose shift it is, but a rest ends by the real clock, or a pinned clock earlier
    than the real one would keep everyone who ever rested resting for good.
    """
    return list(waves(call, roster, states, now, passed=passed, wave_timeout_s=wave_timeout_s,
                      max_per_wave=max_per_wave, language_wait_s=language_wait_s,
                      refuse=refuse, on_call=on_call, rest_at=rest_at))


def next_wave(call: CallToRoute, roster: RosterSnapshot, states: Mapping[str, ResponderState],
              now: datetime, after: int, **options: object) -> Wave | None:
    """The first wave :func:`plan` gives numbered above ``after``, or None; the waves after it
    aren't worked out (the dispatcher rings one wave at a time). ``options``: plan's."""
    return next((w for w in waves(call, roster, states, now, **options)  # type: ignore[arg-type]
                 if w.number > after), None)


def waves(call: CallToRoute, roster: RosterSnapshot, states: Mapping[str, ResponderState],
          now: datetime, *, passed: Iterable[str] = (), wave_timeout_s: float = 20.0,
          max_per_wave: int | None = None, language_wait_s: float = 30.0,
          refuse: Callable[[str], str | None] = lambda _dest: None,
          on_call: list[Responder] | None = None, rest_at: float | None = None
          ) -> Iterator[Wave]:
    """:func:`plan`'s waves, one at a time (each is worked out only when asked for)."""
    passed = frozenset(passed)
    on_call = roster.on_call(now) if on_call is None else on_call
    at = now.timestamp() if rest_at is None else rest_at
    used: set[str] = set()

    def eligible(r: Responder) -> bool:
        return (r.id not in used and r.id not in passed
                and states.get(r.id, FREE).free_for(call.id, at) and refuse(r.phone) is None)

    def speaks(r: Responder) -> bool:
        return call.language in r.languages

    def wave(number: int, label: str, people: Iterable[Responder]) -> Wave | None:
        def order(r: Responder) -> tuple[bool, float, str]:
            return not speaks(r), states.get(r.id, FREE).last_offered_at or 0.0, r.id

        eligible_people = [r for r in people if eligible(r)]
        # nsmallest(n) is sorted()[:n], without sorting a whole large roster for four.
        chosen = sorted(eligible_people, key=order) if max_per_wave is None else \
            heapq.nsmallest(max_per_wave, eligible_people, key=order)
        used.update(r.id for r in chosen)
        return Wave(number, label, tuple(chosen), wave_timeout_s) if chosen else None

    team = roster.team_for_neighborhood(call.neighborhood) if call.neighborhood else None
    neighbors = {t.id for t in roster.neighbors(team.id)} if team else set()
    mine = [r for r in on_call if team is not None and r.team_id == team.id]
    adjacent = [r for r in on_call if r.team_id in neighbors]
    citywide = [r for r in on_call if not r.backup]
    backup = [r for r in on_call if r.backup]
    lang = call.language
    name = team.name if team else "no team"

    # Each wave is worked out only once the ones before it are (``used`` carries over).
    steps: list[Callable[[], Wave | None]] = []
    if call.waited_s < language_wait_s:
        steps += [
            lambda: wave(1, f"{name}, speaks {lang}", [r for r in mine if speaks(r)]),
            lambda: wave(2, f"adjacent teams, speak {lang}", [r for r in adjacent if speaks(r)]),
            lambda: wave(3, f"citywide, speaks {lang}", [r for r in citywide if speaks(r)]),
            lambda: wave(4, f"backup group, speaks {lang}", [r for r in backup if speaks(r)]),
        ]
        first = [r for r in mine if not speaks(r)]
    else:
        # The caller has waited long enough: speakers not rung yet ring together with the
        # first non-speakers (speakers first within the wave, when it is capped).
        first = [*(r for r in on_call if speaks(r)), *(r for r in mine if not speaks(r))]
    steps += [
        lambda: wave(5, f"{name}, then anyone on call", first),
        lambda: wave(6, f"adjacent teams, don't speak {lang}",
                     [r for r in adjacent if not speaks(r)]),
        lambda: wave(7, f"citywide, don't speak {lang}", [r for r in citywide if not speaks(r)]),
        lambda: wave(8, f"backup group, don't speak {lang}", [r for r in backup if not speaks(r)]),
    ]
    for step in steps:
        w = step()
        if w is not None:
            yield w
