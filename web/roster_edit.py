"""Roster edits through the CSV validator: a form becomes one CSV row, the row joins the
rest of the roster, and the whole roster goes through ``csv_format.parse``, exactly as an
import would. Errors on the edited row are shown next to the field of their column;
errors the edit causes elsewhere (a team deleted while it still has members) are listed
above the form. Nothing is written unless the whole roster is valid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from crisisline.config import Settings
from crisisline.roster import csv_format
from crisisline.roster.csv_format import COLUMNS, LIST_SEPARATOR
from crisisline.roster.model import RosterSnapshot
from crisisline.roster.store import RosterStore

KINDS = ("team", "responder", "shift", "override")
# Which form field a CSV column's error belongs next to (a backup row is a responder form).
FORM_FIELDS = {
    "team": ("id", "name", "neighborhoods", "adjacent"),
    "responder": ("id", "name", "team", "phone", "languages"),
    "shift": ("responder", "day", "start", "end"),
    "override": ("responder", "type", "start", "end", "covered_by"),
}


def row_kind(row: Mapping[str, str]) -> str:
    return "responder" if row["kind"] == "backup" else row["kind"]


def row_key(row: Mapping[str, str]) -> str:
    """Teams and responders by id; shifts and overrides (which have none) by content."""
    if row["kind"] in ("team", "responder", "backup"):
        return row["id"]
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16]


def version(rows: list[dict[str, str]]) -> str:
    """A fingerprint of the whole roster, carried in every form: an edit made on a
    roster that changed meanwhile is refused instead of silently undoing the change."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:20]


def describe(row: Mapping[str, str]) -> str:
    if row["kind"] in ("team", "responder", "backup"):
        return f"{row['kind']} {row['id']}"
    return f"{row['kind']} of {row['responder']} ({row.get('day') or ''} {row['start']}-{row['end']})"


def form_to_row(kind: str, form: Mapping[str, str], lists: Mapping[str, list[str]],
                fixed_id: str | None = None) -> dict[str, str]:
    """The CSV row a form describes (the id can't change on edit: shifts refer to it)."""
    row = dict.fromkeys(COLUMNS, "")
    row["kind"] = kind
    for name in FORM_FIELDS[kind]:
        if name in ("neighborhoods", "adjacent", "languages"):
            row[name] = (LIST_SEPARATOR + " ").join(v.strip() for v in lists.get(name, []) if v.strip())
        else:
            row[name] = form.get(name, "").strip()[:300]
    if kind == "team" and "neighborhoods_other" in form:
        extra = csv_format.split_list(form.get("neighborhoods_other", ""))
        row["neighborhoods"] = (LIST_SEPARATOR + " ").join(
            [*csv_format.split_list(row["neighborhoods"]), *extra])
    if kind == "responder" and form.get("backup"):
        row["kind"] = "backup"
    if fixed_id is not None:
        row["id"] = fixed_id
    return row


@dataclass
class EditResult:
    ok: bool
    field_errors: dict[str, str] = field(default_factory=dict)
    other_errors: list[str] = field(default_factory=list)
    not_found: bool = False


class RosterEditor:
    def __init__(self, store: RosterStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def rows(self) -> list[dict[str, str]]:
        return list(csv_format.to_rows(self.store.snapshot()))

    def find(self, rows: list[dict[str, str]], kind: str, key: str) -> int | None:
        for i, row in enumerate(rows):
            if row_kind(row) == kind and row_key(row) == key:
                return i
        return None

    def apply(self, kind: str, key: str | None, new_row: dict[str, str] | None,
              expected_version: str) -> EditResult:
        """Replace (key and new_row), add (new_row only) or delete (key only) one row."""
        rows = self.rows()
        if expected_version != version(rows):
            return EditResult(False, other_errors=[
                "Someone changed the roster while you were editing. Check the current "
                "roster below and make your change again."])
        index = self.find(rows, kind, key) if key is not None else None
        if key is not None and index is None:
            return EditResult(False, not_found=True)
        edited: int | None = None
        if new_row is None:
            assert index is not None
            removed = rows.pop(index)
            if kind == "responder":
                # A responder's own shifts and overrides go with them; someone else's
                # override naming them as cover stays, and the validator says so.
                rows = [r for r in rows if not (r["kind"] in ("shift", "override")
                                                and r["responder"] == removed["id"])]
        elif index is not None:
            rows[index] = new_row
            edited = index
        else:
            rows.append(new_row)
            edited = len(rows) - 1
        snapshot, errors = csv_format.parse(rows, self.settings)
        if errors or snapshot is None:
            result = EditResult(False)
            edited_number = None if edited is None else edited + 2  # header is row 1
            for error in errors:
                if error.row == edited_number and error.column in FORM_FIELDS[kind]:
                    result.field_errors.setdefault(error.column, error.message)
                elif error.row == edited_number:
                    result.other_errors.append(error.message)
                else:
                    result.other_errors.append(f"{describe(rows[error.row - 2])}: {error.message}")
            return result
        self.store.replace_all(snapshot)
        return EditResult(True)


# ---- week view -------------------------------------------------------------------------------

@dataclass
class Segment:
    start: datetime  # local
    end: datetime
    names: list[str]


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week_segments(snap: RosterSnapshot, monday: date,
                  ) -> dict[tuple[str, int], list[Segment]]:
    """(team id or "backup", day 0-6) -> who is on call, in spans where nothing changes.

    Exact, not sampled: the spans are cut at every shift and override boundary and at
    each local midnight, and each span is checked once at its middle.
    """
    zone = snap.zone
    days = [monday + timedelta(days=i) for i in range(8)]
    midnights = [datetime.combine(d, time(0), zone).astimezone(UTC) for d in days]
    start, end = midnights[0], midnights[-1]
    points = set(midnights)
    for shift in snap.shifts:
        for day in [monday - timedelta(days=1), *days[:7]]:
            if day.weekday() == shift.weekday:
                points.update(shift.interval_from(day, zone))
    for override in snap.overrides:
        points.update((override.start, override.end))
    cuts = sorted(p for p in points if start <= p <= end)
    out: dict[tuple[str, int], list[Segment]] = {}
    groups = [t.id for t in snap.teams] + ["backup"]
    for a, b in pairwise(cuts):
        if a == b:
            continue
        on = snap.on_call(a + (b - a) / 2)
        day_index = (a.astimezone(zone).date() - monday).days
        for group in groups:
            people = sorted(r.name for r in on if (r.backup if group == "backup" else r.team_id == group))
            spans = out.setdefault((group, day_index), [])
            if spans and spans[-1].names == people:
                spans[-1].end = b.astimezone(zone)
            else:
                spans.append(Segment(a.astimezone(zone), b.astimezone(zone), people))
    return out
