"""Reading and replacing the roster in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crisisline.roster import csv_format
from crisisline.roster.model import (
    DEFAULT_TIMEZONE,
    Override,
    Responder,
    RosterSnapshot,
    Shift,
    Team,
)
from crisisline.roster.schema import (
    OverrideRow,
    ResponderLanguageRow,
    ResponderRow,
    RosterRevisionRow,
    ShiftRow,
    TeamAdjacencyRow,
    TeamNeighborhoodRow,
    TeamRow,
)

# Children first, so foreign keys never point at a deleted row mid-transaction.
_DELETE_ORDER = (OverrideRow, ShiftRow, ResponderLanguageRow, ResponderRow, TeamAdjacencyRow,
                 TeamNeighborhoodRow, TeamRow)


class RosterStore:
    """The roster tables; the schema must be at head (crisisline.db.upgrade)."""

    def __init__(self, engine: Engine, timezone: str = DEFAULT_TIMEZONE) -> None:
        self.engine = engine
        self.timezone = timezone

    def snapshot(self) -> RosterSnapshot:
        # One transaction, so the snapshot is consistent even while an import runs.
        with Session(self.engine) as s, s.begin():
            hoods: dict[str, set[str]] = defaultdict(set)
            for team_id, hood in s.execute(select(TeamNeighborhoodRow.team_id,
                                                  TeamNeighborhoodRow.neighborhood)):
                hoods[team_id].add(hood)
            adjacent: dict[str, set[str]] = defaultdict(set)
            for team_id, other in s.execute(select(TeamAdjacencyRow.team_id,
                                                   TeamAdjacencyRow.adjacent_team_id)):
                adjacent[team_id].add(other)
            langs: dict[str, set[str]] = defaultdict(set)
            for rid, lang in s.execute(select(ResponderLanguageRow.responder_id,
                                              ResponderLanguageRow.language)):
                langs[rid].add(lang)
            # Columns, not ORM objects: the dispatcher reads the roster every 15 s, and a
            # few thousand shifts as objects were half a second of its CPU each time.
            teams = [Team(tid, name, frozenset(hoods[tid]), frozenset(adjacent[tid]))
                     for tid, name in s.execute(select(TeamRow.id, TeamRow.name))]
            responders = [Responder(rid, name, phone, frozenset(langs[rid]), team_id, backup)
                          for rid, name, phone, team_id, backup in s.execute(select(
                              ResponderRow.id, ResponderRow.name, ResponderRow.phone,
                              ResponderRow.team_id, ResponderRow.backup))]
            shifts = [Shift(*row) for row in s.execute(select(
                ShiftRow.responder_id, ShiftRow.weekday, ShiftRow.start_time, ShiftRow.end_time))]
            overrides = [Override(*row) for row in s.execute(select(  # type: ignore[arg-type]
                OverrideRow.responder_id, OverrideRow.kind, OverrideRow.starts_at,
                OverrideRow.ends_at, OverrideRow.covered_by))]
        return RosterSnapshot(tuple(teams), tuple(responders), tuple(shifts), tuple(overrides),
                              timezone=self.timezone)

    def revision(self) -> int:
        """Bumped by every write through :meth:`replace_all`: the same number, the same
        roster (one small read, where :meth:`snapshot` reads every shift)."""
        with Session(self.engine) as s:
            return int(s.scalar(select(RosterRevisionRow.revision)
                                .where(RosterRevisionRow.id == 1)) or 0)

    def is_empty(self) -> bool:
        with Session(self.engine) as s:
            return not any(s.scalar(select(func.count()).select_from(m)) for m in
                           (TeamRow, ResponderRow, ShiftRow, OverrideRow))

    def replace_all(self, snapshot: RosterSnapshot) -> None:
        """Make the stored roster exactly ``snapshot``, all or nothing."""
        with Session(self.engine) as s, s.begin():
            for model in _DELETE_ORDER:
                s.execute(delete(model))
            bumped = s.execute(update(RosterRevisionRow).where(RosterRevisionRow.id == 1)
                               .values(revision=RosterRevisionRow.revision + 1))
            if not bumped.rowcount:  # type: ignore[attr-defined]  # (its row deleted by hand)
                s.add(RosterRevisionRow(id=1, revision=1))
            # Parents are flushed before children so inserts satisfy foreign keys on
            # both databases without relying on the unit of work's ordering.
            s.add_all(TeamRow(id=t.id, name=t.name) for t in snapshot.teams)
            s.flush()
            for t in snapshot.teams:
                s.add_all(TeamNeighborhoodRow(team_id=t.id, neighborhood=n)
                          for n in t.neighborhoods)
                s.add_all(TeamAdjacencyRow(team_id=t.id, adjacent_team_id=a) for a in t.adjacent)
            s.add_all(ResponderRow(id=r.id, name=r.name, phone=r.phone, team_id=r.team_id,
                                   backup=r.backup) for r in snapshot.responders)
            s.flush()
            for r in snapshot.responders:
                s.add_all(ResponderLanguageRow(responder_id=r.id, language=lang)
                          for lang in r.languages)
            s.add_all(ShiftRow(responder_id=x.responder_id, weekday=x.weekday,
                               start_time=x.start, end_time=x.end) for x in snapshot.shifts)
            s.add_all(OverrideRow(responder_id=o.responder_id, kind=o.kind, starts_at=o.start,
                                  ends_at=o.end, covered_by=o.covered_by)
                      for o in snapshot.overrides)

    def export_rows(self) -> list[dict[str, str]]:
        """The stored roster as rows of the documented CSV format."""
        return list(csv_format.to_rows(self.snapshot()))
