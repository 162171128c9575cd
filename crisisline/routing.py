"""Who to ring for a waiting call: a pure function of (call, roster, responder states, now).

Default plan (issue #3):
  wave 1  on-call responders of the caller's neighborhood team who speak the caller's language
  wave 2  the rest of that team on call
  wave 3  on-call responders of adjacent teams (language speakers first)
  wave 4  the citywide backup group on call (language speakers first)
A caller with no known neighborhood routes citywide: wave 1 is every on-call responder who
speaks their language, wave 2 every other, then the backup group.

Skipped: responders on a call, ringing for another call, who passed on this call already,
or whose destination may never be dialled (emergency or police: see destinations.py).
Within a wave, least-recently-offered first; ``max_per_wave`` rings only the first N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from crisisline.roster.model import Responder, RosterSnapshot


@dataclass(frozen=True)
class ResponderState:
    on_call_with: str | None = None     # a call id while bridged
    ringing_for: str | None = None      # a call id while an offer rings
    last_offered_at: float | None = None  # epoch seconds

    def free_for(self, call_id: str) -> bool:
        return self.on_call_with is None and self.ringing_for in (None, call_id)


@dataclass(frozen=True)
class CallToRoute:
    id: str
    language: str
    neighborhood: str | None


@dataclass(frozen=True)
class Wave:
    number: int
    label: str
    responders: tuple[Responder, ...]
    timeout_s: float


FREE = ResponderState()


def plan(call: CallToRoute, roster: RosterSnapshot, states: Mapping[str, ResponderState],
         now: datetime, *, passed: Iterable[str] = (), wave_timeout_s: float = 20.0,
         max_per_wave: int | None = None,
         refuse: Callable[[str], str | None] = lambda _dest: None,
         on_call: list[Responder] | None = None) -> list[Wave]:
    """The waves to ring, in order; empty waves are left out (numbers keep their meaning).

    ``on_call`` may be given when the caller already computed ``roster.on_call(now)``.
    """
    passed = frozenset(passed)
    on_call = roster.on_call(now) if on_call is None else on_call
    used: set[str] = set()

    def eligible(r: Responder) -> bool:
        return (r.id not in used and r.id not in passed
                and states.get(r.id, FREE).free_for(call.id) and refuse(r.phone) is None)

    def speaks(r: Responder) -> bool:
        return call.language in r.languages

    def wave(number: int, label: str, people: Iterable[Responder],
             language_first: bool = False) -> Wave | None:
        chosen = [r for r in people if eligible(r)]
        chosen.sort(key=lambda r: (language_first and not speaks(r),
                                   states.get(r.id, FREE).last_offered_at or 0.0, r.id))
        if max_per_wave is not None:
            chosen = chosen[:max_per_wave]
        used.update(r.id for r in chosen)
        return Wave(number, label, tuple(chosen), wave_timeout_s) if chosen else None

    team = roster.team_for_neighborhood(call.neighborhood) if call.neighborhood else None
    if team is not None:
        members = [r for r in on_call if r.team_id == team.id]
        neighbors = {t.id for t in roster.neighbors(team.id)}
        candidates = [
            wave(1, f"{team.name}, speaks {call.language}", [r for r in members if speaks(r)]),
            wave(2, f"{team.name}, rest of the team", members),
            wave(3, "adjacent teams", [r for r in on_call if r.team_id in neighbors],
                 language_first=True),
        ]
    else:
        candidates = [
            wave(1, f"citywide, speaks {call.language}",
                 [r for r in on_call if speaks(r) and not r.backup]),
            wave(2, "citywide, everyone on call", [r for r in on_call if not r.backup]),
        ]
    candidates.append(wave(4, "citywide backup group", [r for r in on_call if r.backup],
                           language_first=True))
    return [w for w in candidates if w is not None]
