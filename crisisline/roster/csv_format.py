"""The roster CSV: one file, one row per team / responder / backup / shift / override.

The format is documented in docs/roster-csv.md. :func:`parse` checks every row and
returns every problem at once (row and column named, as a spreadsheet shows them), so a
coordinator can fix the whole file in one go; the caller writes nothing unless the list
of errors is empty.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TextIO
from zoneinfo import ZoneInfo

from crisisline import destinations
from crisisline.config import Settings
from crisisline.roster.model import (
    OVERRIDE_KINDS,
    WEEKDAYS,
    Override,
    Responder,
    RosterSnapshot,
    Shift,
    Team,
)

COLUMNS: tuple[str, ...] = ("kind", "id", "name", "team", "phone", "languages",
                            "neighborhoods", "adjacent", "responder", "day", "start", "end",
                            "type", "covered_by")
# Which columns each kind of row may fill (the rest must be empty: a value in the wrong
# column is usually a shifted row, and silently ignoring it would hide the mistake).
REQUIRED = {
    "team": ("id", "name", "neighborhoods"),
    "responder": ("id", "name", "team", "phone", "languages"),
    "backup": ("id", "name", "phone", "languages"),
    "shift": ("responder", "day", "start", "end"),
    "override": ("responder", "type", "start", "end"),
}
OPTIONAL = {"team": ("adjacent",), "responder": (), "backup": ("team",), "shift": (),
            "override": ("covered_by",)}

# Languages a responder may list: what Boston's residents speak (the program can add to
# this; the IVR only offers languages that also have prompts).
KNOWN_LANGUAGES: dict[str, str] = {
    "en": "English", "es": "Spanish", "ht": "Haitian Creole", "kea": "Cape Verdean Creole",
    "pt": "Portuguese", "yue": "Cantonese", "cmn": "Mandarin", "vi": "Vietnamese",
    "ar": "Arabic", "so": "Somali", "ru": "Russian", "fr": "French", "am": "Amharic",
    "ko": "Korean",
}

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DAY_NAMES = {**{d: i for i, d in enumerate(WEEKDAYS)},
             **{n: i for i, n in enumerate(("monday", "tuesday", "wednesday", "thursday",
                                            "friday", "saturday", "sunday"))}}
LIST_SEPARATOR = ";"


@dataclass(frozen=True, order=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    column: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


def known_neighborhoods() -> dict[str, str]:
    """casefolded -> spelling, from the ZIP lookup; empty if it has no data (then team
    neighborhoods are taken as written)."""
    try:
        from crisisline.neighborhoods import all_neighborhoods
        return {n.casefold(): n for n in all_neighborhoods()}
    except (ImportError, OSError):
        return {}


def split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(LIST_SEPARATOR) if v.strip()]


def parse_time(text: str) -> time:
    """``HH:MM``; ``24:00`` means midnight at the end of the day (written as 00:00)."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time like 07:00 or 23:30")
    hour, minute = int(m[1]), int(m[2])
    if (hour, minute) == (24, 0):
        return time(0, 0)
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(hour, minute)


def parse_datetime(text: str, zone: ZoneInfo, strict: bool = True) -> datetime:
    """An aware datetime from ISO text; without an offset it is local time in ``zone``.

    A local time the clocks skip (spring forward) is refused. One they pass twice (fall
    back) is refused when ``strict`` (give the offset, -04:00 or -05:00), else the
    first of the two is taken.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time like 2026-03-08 01:30 "
                         "or 2026-11-01T01:30-04:00") from None
    if value.tzinfo is not None:
        return value
    first = value.replace(tzinfo=zone, fold=0)
    second = value.replace(tzinfo=zone, fold=1)
    back = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != value:
        raise ValueError(f"{text} does not exist in {zone.key} (the clocks skip that hour)")
    if strict and first.utcoffset() != second.utcoffset():
        raise ValueError(f"{text} happens twice in {zone.key} (the clocks go back); "
                         f"add the UTC offset, e.g. {first.isoformat(timespec='minutes')}")
    return first


def format_datetime(value: datetime, zone: ZoneInfo) -> str:
    # With the offset, so the repeated fall-back hour round-trips unambiguously.
    local = value.astimezone(zone)
    return local.isoformat(timespec="minutes" if local.second == 0 else "seconds")


def format_time(value: time, is_end: bool = False) -> str:
    return "24:00" if is_end and value == time(0, 0) else value.strftime("%H:%M")


def parse(rows: Iterable[dict[str, str | None]], settings: Settings,
          ) -> tuple[RosterSnapshot | None, list[RowError]]:
    """Validate every row; the snapshot only when there are no errors at all."""
    return _Parser(settings).run(rows)


def read(handle: TextIO, settings: Settings) -> tuple[RosterSnapshot | None, list[RowError]]:
    reader = csv.DictReader(handle)
    header = [h.strip() for h in (reader.fieldnames or [])]
    errors = [RowError(1, c, "missing column") for c in COLUMNS if c not in header]
    errors += [RowError(1, c, f"unknown column (columns are: {', '.join(COLUMNS)})")
               for c in header if c and c not in COLUMNS]
    if not header:
        errors = [RowError(1, "", "the file is empty; expected a header row")]
    if errors:
        return None, errors
    reader.fieldnames = header
    return parse(reader, settings)


class _Parser:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.zone = settings.zone
        self.errors: list[RowError] = []

    def error(self, row: int, column: str, message: str) -> None:
        self.errors.append(RowError(row, column, message))

    def run(self, rows: Iterable[dict[str, str | None]],
            ) -> tuple[RosterSnapshot | None, list[RowError]]:
        by_kind: dict[str, list[tuple[int, dict[str, str]]]] = {k: [] for k in REQUIRED}
        for number, raw in enumerate(rows, start=2):
            if None in raw:  # csv puts surplus cells under the key None
                self.error(number, "", "more cells than columns in the header")
            row = {c: (raw.get(c) or "").strip() for c in COLUMNS}
            kind = row["kind"].lower()
            if not any(row.values()) or kind.startswith("#"):
                continue  # blank line or comment
            if kind not in REQUIRED:
                self.error(number, "kind", f"unknown kind {row['kind']!r} "
                                           f"(one of: {', '.join(REQUIRED)})")
                continue
            allowed = set(REQUIRED[kind]) | set(OPTIONAL[kind]) | {"kind"}
            for column in COLUMNS:
                if column in REQUIRED[kind] and not row[column]:
                    self.error(number, column, f"required for {kind} rows")
                elif column not in allowed and row[column]:
                    self.error(number, column, f"not used in {kind} rows; leave it empty")
            by_kind[kind].append((number, row))

        teams = self.teams(by_kind["team"])
        responders = self.responders(by_kind["responder"] + by_kind["backup"], teams)
        shifts = self.shifts(by_kind["shift"], responders)
        overrides = self.overrides(by_kind["override"], responders)
        if self.errors:
            return None, sorted(self.errors)
        return RosterSnapshot(teams=tuple(teams.values()), responders=tuple(responders.values()),
                              shifts=tuple(shifts), overrides=tuple(overrides),
                              timezone=self.settings.timezone), []

    def check_id(self, number: int, column: str, value: str, seen: Iterable[str]) -> bool:
        if not ID_PATTERN.match(value):
            self.error(number, column, f"{value!r}: ids are lower-case letters, digits, "
                                       ". _ - (up to 64)")
            return False
        if value in seen:
            self.error(number, column, f"{value!r} is listed twice")
            return False
        return True

    def teams(self, rows: list[tuple[int, dict[str, str]]]) -> dict[str, Team]:
        ids = [r["id"] for _, r in rows]
        known = known_neighborhoods()
        served: dict[str, str] = {}
        names: set[str] = set()
        out: dict[str, Team] = {}
        for number, row in rows:
            ok = bool(row["id"]) and self.check_id(number, "id", row["id"], out)
            if row["name"].casefold() in names:
                self.error(number, "name", f"team name {row['name']!r} is listed twice")
                ok = False
            names.add(row["name"].casefold())
            hoods = split_list(row["neighborhoods"])
            if known:
                # A name the ZIP lookup never returns would route no caller to this team.
                for hood in [h for h in hoods if h.casefold() not in known]:
                    self.error(number, "neighborhoods", f"unknown neighborhood {hood!r} "
                               f"(known: {', '.join(sorted(known.values()))})")
                    ok = False
                hoods = [known.get(h.casefold(), h) for h in hoods]
            for hood in hoods:
                if hood.casefold() in served:
                    self.error(number, "neighborhoods",
                               f"{hood!r} is already served by team {served[hood.casefold()]!r}")
                    ok = False
                served.setdefault(hood.casefold(), row["id"])
            adjacent = split_list(row["adjacent"])
            for other in adjacent:
                if other == row["id"]:
                    self.error(number, "adjacent", "a team can't be adjacent to itself")
                    ok = False
                elif other not in ids:
                    self.error(number, "adjacent", f"unknown team {other!r}")
                    ok = False
            if ok and hoods:
                out[row["id"]] = Team(row["id"], row["name"], frozenset(hoods),
                                      frozenset(adjacent))
        return out

    def responders(self, rows: list[tuple[int, dict[str, str]]],
                   teams: dict[str, Team]) -> dict[str, Responder]:
        out: dict[str, Responder] = {}
        seen: set[str] = set()
        for number, row in rows:
            ok = bool(row["id"]) and self.check_id(number, "id", row["id"], seen)
            seen.add(row["id"])
            team = row["team"] or None
            if team and team not in teams:
                self.error(number, "team", f"unknown team {team!r}")
                ok = False
            phone = self.phone(number, row["phone"]) if row["phone"] else None
            langs = split_list(row["languages"])
            for lang in langs:
                if lang not in KNOWN_LANGUAGES:
                    self.error(number, "languages",
                               f"unknown language {lang!r} (known codes: "
                               f"{', '.join(KNOWN_LANGUAGES)})")
                    ok = False
            if ok and phone and langs and row["name"]:
                out[row["id"]] = Responder(row["id"], row["name"], phone, frozenset(langs),
                                           team, backup=row["kind"].lower() == "backup")
        return out

    def phone(self, number: int, value: str) -> str | None:
        # The same check every dialled destination gets: never 911, never the police.
        reason = destinations.refusal(value, self.settings)
        if reason:
            self.error(number, "phone", reason)
            return None
        if destinations.SIP_ENDPOINT.match(value):
            return value
        return destinations.to_e164(value, self.settings.region)

    def shifts(self, rows: list[tuple[int, dict[str, str]]],
               responders: dict[str, Responder]) -> list[Shift]:
        out: list[Shift] = []
        seen: set[Shift] = set()
        for number, row in rows:
            ok = self.known_responder(number, "responder", row["responder"], responders)
            day = DAY_NAMES.get(row["day"].lower())
            if row["day"] and day is None:
                self.error(number, "day", f"{row['day']!r} is not a day (mon ... sun)")
                ok = False
            start = self.time_cell(number, "start", row["start"])
            end = self.time_cell(number, "end", row["end"])
            if not (ok and day is not None and start is not None and end is not None):
                continue
            shift = Shift(row["responder"], day, start, end)
            if shift in seen:
                self.error(number, "", "the same shift is listed twice")
                continue
            seen.add(shift)
            out.append(shift)
        return out

    def overrides(self, rows: list[tuple[int, dict[str, str]]],
                  responders: dict[str, Responder]) -> list[Override]:
        out: list[Override] = []
        for number, row in rows:
            ok = self.known_responder(number, "responder", row["responder"], responders)
            kind = row["type"].lower()
            if row["type"] and kind not in OVERRIDE_KINDS:
                self.error(number, "type", f"{row['type']!r} is not one of: "
                                           f"{', '.join(OVERRIDE_KINDS)}")
                ok = False
            covered_by = row["covered_by"] or None
            if covered_by:
                ok = self.known_responder(number, "covered_by", covered_by, responders) and ok
                if covered_by == row["responder"]:
                    self.error(number, "covered_by", "a responder can't cover for themself")
                    ok = False
                if kind == "extra":
                    self.error(number, "covered_by", "an extra shift covers for no one; "
                                                     "leave it empty")
                    ok = False
            elif kind == "swap":
                self.error(number, "covered_by", "a swap needs the responder who takes over")
                ok = False
            start = self.datetime_cell(number, "start", row["start"])
            end = self.datetime_cell(number, "end", row["end"])
            if start and end and end <= start:
                self.error(number, "end", "must be after start")
                ok = False
            if ok and start and end:
                out.append(Override(row["responder"], kind, start, end,  # type: ignore[arg-type]
                                    covered_by))
        return out

    def known_responder(self, number: int, column: str, value: str,
                        responders: dict[str, Responder]) -> bool:
        if value and value not in responders:
            self.error(number, column, f"unknown responder {value!r}")
        return bool(value) and value in responders

    def time_cell(self, number: int, column: str, value: str) -> time | None:
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            self.error(number, column, str(exc))
            return None

    def datetime_cell(self, number: int, column: str, value: str) -> datetime | None:
        if not value:
            return None
        try:
            return parse_datetime(value, self.zone)
        except ValueError as exc:
            self.error(number, column, str(exc))
            return None


def to_rows(snapshot: RosterSnapshot) -> Iterator[dict[str, str]]:
    """The snapshot as CSV rows, in the order a person reads them."""
    def row(**cells: str) -> dict[str, str]:
        return {c: cells.get(c, "") for c in COLUMNS}

    join = (LIST_SEPARATOR + " ").join
    for t in snapshot.teams:
        yield row(kind="team", id=t.id, name=t.name, neighborhoods=join(sorted(t.neighborhoods)),
                  adjacent=join(sorted(t.adjacent)))
    for r in sorted(snapshot.responders, key=lambda r: (r.backup, r.team_id or "", r.id)):
        yield row(kind="backup" if r.backup else "responder", id=r.id, name=r.name,
                  team=r.team_id or "", phone=r.phone, languages=join(sorted(r.languages)))
    for s in snapshot.shifts:
        yield row(kind="shift", responder=s.responder_id, day=WEEKDAYS[s.weekday],
                  start=format_time(s.start), end=format_time(s.end, is_end=True))
    for o in snapshot.overrides:
        yield row(kind="override", responder=o.responder_id, type=o.kind,
                  start=format_datetime(o.start, snapshot.zone),
                  end=format_datetime(o.end, snapshot.zone), covered_by=o.covered_by or "")


def write(snapshot: RosterSnapshot, out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(to_rows(snapshot))
