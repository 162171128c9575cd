"""The roster as plain values, and who is on call at an instant.

Shifts are local wall-clock times in the program's time zone, repeating weekly: a
responder who works "Sunday 01:00-03:00" works from 01:00 to 03:00 on the clock on the
wall, whatever the UTC offset is that night. Overrides are one-off and are stored as
aware datetimes (instants), because "sick from 01:30 on the fall-back night" must name
one of the two 01:30s.

Daylight-saving rules (PEP 495, ``fold=0`` for both ends of every shift):
- spring forward: a wall time in the skipped hour maps to the instant the clocks jump
  at, so a shift 01:00-03:00 lasts one real hour and a shift 02:00-03:00 none; shifts
  that meet on the wall clock still meet in real time, so there is never a gap.
- fall back: the repeated hour counts once per shift boundary (the first 01:xx), so a
  shift 00:00-04:00 across it lasts five real hours; again no gap and no overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

OverrideKind = Literal["sick", "swap", "extra"]
OVERRIDE_KINDS: tuple[str, ...] = ("sick", "swap", "extra")
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIMEZONE = "America/New_York"


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    neighborhoods: frozenset[str]
    # Ids of neighboring teams, as declared; RosterSnapshot.neighbors() makes it mutual.
    adjacent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Responder:
    id: str
    name: str
    # E.164 ("+16175550101") or a SIP endpoint ("PJSIP/alice").
    phone: str
    languages: frozenset[str]
    team_id: str | None
    # Member of the citywide backup group (rung last, for any neighborhood).
    backup: bool = False


@dataclass(frozen=True, order=True)
class Shift:
    responder_id: str
    weekday: int  # 0 = Monday ... 6 = Sunday, the day the shift starts
    start: time
    # end <= start means the shift ends on the next day (22:00-06:00);
    # end == start means a full 24 hours.
    end: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), got {self.weekday}")

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def interval_from(self, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The real (UTC) interval of this shift when it starts on ``day``."""
        start = datetime.combine(day, self.start, tzinfo=zone)
        end_day = day + timedelta(days=1) if self.overnight else day
        end = datetime.combine(end_day, self.end, tzinfo=zone)
        return start.astimezone(UTC), end.astimezone(UTC)

    def covers(self, at: datetime, zone: ZoneInfo) -> bool:
        local = at.astimezone(zone)
        # A shift lasts at most a day on the wall clock, so it started today or yesterday.
        for day in (local.date(), local.date() - timedelta(days=1)):
            if day.weekday() != self.weekday:
                continue
            start, end = self.interval_from(day, zone)
            if start <= at < end:
                return True
        return False


@dataclass(frozen=True)
class Override:
    responder_id: str
    # sick:  responder_id is off (covered_by, if named, is on in their place)
    # swap:  responder_id is off and covered_by is on
    # extra: responder_id is on, outside their usual shifts
    kind: OverrideKind
    start: datetime  # aware; the interval is [start, end)
    end: datetime
    covered_by: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in OVERRIDE_KINDS:
            raise ValueError(f"override kind must be one of {OVERRIDE_KINDS}, got {self.kind!r}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("override start and end must be aware datetimes")
        if self.end <= self.start:
            raise ValueError("override must end after it starts")
        # Kept in UTC: an aware datetime in the repeated fall-back hour never compares
        # equal to one in another zone (PEP 495), which would break snapshot equality.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def sort_key(self) -> tuple[datetime, str, str, datetime, str]:
        return (self.start, self.responder_id, self.kind, self.end, self.covered_by or "")


@dataclass(frozen=True)
class RosterSnapshot:
    """One consistent view of the roster; equal snapshots compare equal in any order."""

    teams: tuple[Team, ...] = ()
    responders: tuple[Responder, ...] = ()
    shifts: tuple[Shift, ...] = ()
    overrides: tuple[Override, ...] = ()
    timezone: str = DEFAULT_TIMEZONE
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Canonical order, so a round trip through SQL or CSV compares equal.
        set_ = object.__setattr__
        set_(self, "teams", tuple(sorted(self.teams, key=lambda t: t.id)))
        set_(self, "responders", tuple(sorted(self.responders, key=lambda r: r.id)))
        set_(self, "shifts", tuple(sorted(self.shifts)))
        set_(self, "overrides", tuple(sorted(self.overrides, key=Override.sort_key)))
        set_(self, "_zone", ZoneInfo(self.timezone))

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def empty(self) -> bool:
        return not (self.teams or self.responders or self.shifts or self.overrides)

    def team(self, team_id: str) -> Team | None:
        return next((t for t in self.teams if t.id == team_id), None)

    def responder(self, responder_id: str) -> Responder | None:
        return next((r for r in self.responders if r.id == responder_id), None)

    def team_for_neighborhood(self, name: str) -> Team | None:
        wanted = name.strip().casefold()
        for team in self.teams:
            if any(n.casefold() == wanted for n in team.neighborhoods):
                return team
        return None

    def neighbors(self, team_id: str) -> list[Team]:
        """Teams next to this one, whichever of the two declared it."""
        return [t for t in self.teams if t.id != team_id and (
            team_id in t.adjacent or t.id in (self.team(team_id) or _NO_TEAM).adjacent)]

    def members(self, team_id: str) -> list[Responder]:
        return [r for r in self.responders if r.team_id == team_id]

    def on_call(self, at: datetime) -> list[Responder]:
        """Everyone on call at this instant (team members and backups), by id."""
        if at.tzinfo is None:
            # A naive time would silently mean the server's zone; refuse instead.
            raise ValueError("on_call needs an aware datetime")
        # Whether a shift covers ``at`` depends only on its day and times: worked out once
        # per distinct (weekday, start, end), not once per shift (thousands on a big roster).
        covers: dict[tuple[int, time, time], bool] = {}
        on = set()
        for s in self.shifts:
            key = (s.weekday, s.start, s.end)
            hit = covers.get(key)
            if hit is None:
                hit = covers[key] = s.covers(at, self._zone)
            if hit:
                on.add(s.responder_id)
        off: set[str] = set()
        for o in self.overrides:
            if not o.covers(at):
                continue
            if o.kind == "extra":
                on.add(o.responder_id)
            else:
                off.add(o.responder_id)
                if o.covered_by:
                    on.add(o.covered_by)
        # Off wins: someone out sick is never rung, even if also listed as covering.
        ids = on - off
        return [r for r in self.responders if r.id in ids]

    def on_call_in_team(self, team_id: str, at: datetime) -> list[Responder]:
        return [r for r in self.on_call(at) if r.team_id == team_id]

    def backup_group(self, at: datetime) -> list[Responder]:
        """Citywide backup responders on call at this instant."""
        return [r for r in self.on_call(at) if r.backup]

    def languages(self) -> frozenset[str]:
        return frozenset(lang for r in self.responders for lang in r.languages)


_NO_TEAM = Team(id="", name="", neighborhoods=frozenset())


def hours(start: datetime, count: int) -> Iterable[datetime]:
    """``count`` instants an hour apart in real time (for coverage checks)."""
    start = start.astimezone(UTC)
    return (start + timedelta(hours=i) for i in range(count))
