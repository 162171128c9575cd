"""What the ``peoples-response roster ...`` subcommands do, as plain functions.

Each opens its own engine, brings the schema to head first (so a fresh install works
without a separate migrate step) and disposes the engine when done.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from crisisline import db
from crisisline.config import Settings
from crisisline.roster import csv_format, oncall
from crisisline.roster.csv_format import RowError
from crisisline.roster.model import RosterSnapshot
from crisisline.roster.store import RosterStore


@dataclass(frozen=True)
class ImportResult:
    teams: int
    responders: int
    backups: int
    shifts: int
    overrides: int
    # Hours in the coming week with a team (or the backup group) uncovered: allowed,
    # since a small program may mean to lean on neighbors, but worth saying out loud.
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"imported {self.teams} teams, {self.responders} responders, "
                f"{self.backups} backup responders, {self.shifts} shifts, "
                f"{self.overrides} overrides")


@contextmanager
def _store(settings: Settings) -> Iterator[RosterStore]:
    engine: Engine = db.engine_for(settings)
    try:
        db.upgrade(settings, engine)
        yield RosterStore(engine, settings.timezone)
    finally:
        engine.dispose()


def read_csv(settings: Settings, path: str | Path,
             ) -> tuple[RosterSnapshot | None, list[RowError]]:
    try:
        # utf-8-sig: spreadsheet programs often save a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return csv_format.read(handle, settings)
    except FileNotFoundError:
        return None, [RowError(0, "", f"{path}: no such file")]
    except UnicodeDecodeError as exc:
        return None, [RowError(0, "", f"{path} is not UTF-8 text ({exc.reason})")]


def import_csv(settings: Settings, path: str | Path) -> ImportResult | list[RowError]:
    """Replace the whole roster with the file's, or write nothing and return every error."""
    snapshot, errors = read_csv(settings, path)
    if errors or snapshot is None:
        return errors
    with _store(settings) as store:
        store.replace_all(snapshot)
    return _result(snapshot)


def _result(snapshot: RosterSnapshot) -> ImportResult:
    gaps = oncall.coverage_gaps(snapshot, datetime.now(UTC).replace(minute=0, second=0,
                                                                    microsecond=0))
    uncovered: dict[str, int] = {}
    for team_id, _ in gaps:
        uncovered[team_id] = uncovered.get(team_id, 0) + 1
    warnings = [f"{'the backup group' if t == 'backup' else 'team ' + repr(t)} has nobody "
                f"on call for {n} of the next 168 hours" for t, n in sorted(uncovered.items())]
    served = {h.casefold() for t in snapshot.teams for h in t.neighborhoods}
    unserved = [n for n in csv_format.known_neighborhoods().values() if n.casefold() not in served]
    if unserved:
        warnings.append(f"no team serves {', '.join(sorted(unserved))}: callers from there "
                        "reach no neighborhood team")
    return ImportResult(
        teams=len(snapshot.teams),
        responders=sum(1 for r in snapshot.responders if not r.backup),
        backups=sum(1 for r in snapshot.responders if r.backup),
        shifts=len(snapshot.shifts), overrides=len(snapshot.overrides), warnings=warnings)


def export_csv(settings: Settings, out: TextIO) -> None:
    with _store(settings) as store:
        csv_format.write(store.snapshot(), out)


def snapshot(settings: Settings) -> RosterSnapshot:
    with _store(settings) as store:
        return store.snapshot()


def oncall_text(settings: Settings, at: datetime | None = None) -> str:
    from crisisline.clock import now

    return oncall.format_on_call(snapshot(settings), at or now(settings.timezone, settings.clock))


def parse_at(text: str, zone: ZoneInfo) -> datetime:
    """``--at``: ISO date-time (offset optional; without one it is local time in
    ``zone``), "YYYY-MM-DD HH:MM", a date alone (its midnight) or a time alone (today)."""
    text = original = text.strip()
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
            value = time.fromisoformat(text.zfill(len(text) + 1) if text[1] == ":" else text)
            text = datetime.combine(datetime.now(zone).date(), value).isoformat()
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            text = datetime.combine(date.fromisoformat(text), time(0)).isoformat()
        # Not strict: on the fall-back night "01:30" means the first one; the output
        # shows the zone abbreviation (EDT/EST), so it is never silently ambiguous.
        return csv_format.parse_datetime(text, zone, strict=False)
    except ValueError as exc:
        raise ValueError(f"--at {original!r}: {exc}; use e.g. 2026-03-08 01:30, "
                         "2026-03-08T01:30-05:00, 2026-03-08 or 01:30") from None


def ensure_loaded(settings: Settings, example_path: str | Path) -> ImportResult | None:
    """Load the example roster into an empty database (first `up`); None when the
    database already holds a roster (never overwrite a real one)."""
    with _store(settings) as store:
        if not store.is_empty():
            return None
        snap, errors = read_csv(settings, example_path)
        if errors or snap is None:
            raise ValueError(f"{example_path} is not a valid roster: "
                             + "; ".join(str(e) for e in errors))
        store.replace_all(snap)
    return _result(snap)
