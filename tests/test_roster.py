"""Roster: model (on-call across DST), CSV import/export, store, migrations.

Every test that touches SQL runs on SQLite (a file under tmp_path) and on PostgreSQL
(a schema of its own per test, dropped afterwards). PostgreSQL must be reachable: an
unreachable server fails the test, unless PR_TEST_NO_POSTGRES=1 says to leave it out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from crisisline import config, db
from crisisline.roster import commands, csv_format, oncall
from crisisline.roster.model import Override, Responder, RosterSnapshot, Shift, Team
from crisisline.roster.store import RosterStore
from workers.dispatcher import service

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "roster.csv"
NY = ZoneInfo("America/New_York")
PG_URL = os.environ.get("PR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROSTER_TABLES = {"teams", "team_neighborhoods", "team_adjacency", "responders",
                 "responder_languages", "shifts", "overrides", "roster_revision"}

BACKENDS = ["sqlite"] + ([] if os.environ.get("PR_TEST_NO_POSTGRES") == "1" else ["postgresql"])


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[config.Settings]:
    if request.param == "sqlite":
        yield config.load(env={}, var_dir=str(tmp_path / "var"))
        return
    schema = f"roster_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is unreachable at {PG_URL} ({exc.orig}); start it, or set "
                    "PR_TEST_NO_POSTGRES=1 to run the roster tests on SQLite only")
    # search_path puts every table, and Alembic's version table, in the test's schema.
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        yield config.load(env={}, var_dir=str(tmp_path / "var"), database_url=url)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def local(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=NY, fold=fold)  # type: ignore[misc]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([",".join(csv_format.COLUMNS), *lines]) + "\n", encoding="utf-8")
    return path


def row(**cells: str) -> str:
    return ",".join(cells.get(c, "") for c in csv_format.COLUMNS)


# ---- migrations -------------------------------------------------------------------

def test_migrations_run_to_head(settings: config.Settings) -> None:
    engine = db.engine_for(settings)
    try:
        db.upgrade(settings, engine)
        db.upgrade(settings, engine)  # idempotent: `up` runs it on every start
        assert db.current_revision(engine) == db.head_revision(settings)
        assert ROSTER_TABLES <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.metadata)
                    if _table_of(d) in ROSTER_TABLES]
        assert diff == [], "roster schema and its migrations disagree"
    finally:
        engine.dispose()


def _table_of(diff: object) -> str | None:
    """The table an autogenerate diff is about (diffs are tuples, or lists of tuples for
    column modifications: ("modify_type", schema, table, column, ...))."""
    first = diff[0] if isinstance(diff, list) else diff
    assert isinstance(first, tuple)
    for item in first[1:]:
        if isinstance(item, sa.Table):
            return item.name
        if isinstance(item, str):
            return item
        table = getattr(item, "table", None)  # Index, Column, Constraint
        if isinstance(table, sa.Table):
            return table.name
    return None


# ---- import / export --------------------------------------------------------------

def test_example_imports_and_round_trips(settings: config.Settings) -> None:
    parsed, errors = commands.read_csv(settings, EXAMPLE)
    assert errors == [] and parsed is not None
    result = commands.import_csv(settings, EXAMPLE)
    assert isinstance(result, commands.ImportResult), result
    assert result.warnings == []
    assert result.teams >= 6 and result.backups >= 2
    stored = commands.snapshot(settings)
    assert stored == parsed
    langs = stored.languages()
    assert {"en", "es", "ht", "kea", "pt", "yue", "cmn", "vi", "ar", "so", "ru", "fr",
            "am"} <= langs


def test_export_then_import_is_identical(settings: config.Settings, tmp_path: Path) -> None:
    commands.import_csv(settings, EXAMPLE)
    before = commands.snapshot(settings)
    first = io.StringIO()
    commands.export_csv(settings, first)
    exported = tmp_path / "exported.csv"
    exported.write_text(first.getvalue(), encoding="utf-8")
    assert isinstance(commands.import_csv(settings, exported), commands.ImportResult)
    assert commands.snapshot(settings) == before
    second = io.StringIO()
    commands.export_csv(settings, second)
    assert second.getvalue() == first.getvalue()
    store = RosterStore(db.engine_for(settings))
    try:
        assert store.export_rows()[0]["kind"] == "team"
    finally:
        store.engine.dispose()


BAD_ROWS = [
    row(kind="team", id="t1", name="Team One", neighborhoods="Dorchester"),           # 2
    row(kind="responder", id="a", name="A", team="nowhere", phone="+16175550111",
        languages="en"),                                                               # 3
    row(kind="responder", id="b", name="B", team="t1", phone="+16175550112",
        languages="en;xx"),                                                            # 4
    row(kind="responder", id="c", name="C", team="t1", phone="12345", languages="en"), # 5
    row(kind="responder", id="d", name="D", team="t1", phone="911", languages="en"),   # 6
    row(kind="responder", id="e", name="E", team="t1", phone="(617) 343-4500",
        languages="es"),                                                               # 7
    row(kind="backup", id="f", name="F", phone="+1 911", languages="en"),              # 8
    row(kind="shift", responder="ghost", day="mon", start="09:00", end="17:00"),       # 9
    row(kind="override", responder="b", type="sick", start="2026-03-08 02:30",
        end="2026-03-08 05:00"),                                                       # 10
    row(kind="override", responder="b", type="swap", start="2026-11-01 01:30",
        end="2026-11-01 05:00"),                                                       # 11
    row(kind="shift", responder="b", day="someday", start="9am", end="17:00"),         # 12
    row(kind="team", id="t2", name="Two", neighborhoods="Dorchster", adjacent="t9"),    # 13
]


@pytest.mark.parametrize("preload", [True, False], ids=["over-example", "empty-db"])
def test_invalid_file_names_row_and_column_and_writes_nothing(
        settings: config.Settings, tmp_path: Path, preload: bool) -> None:
    if preload:
        commands.import_csv(settings, EXAMPLE)
    before = commands.snapshot(settings)
    errors = commands.import_csv(settings, write(tmp_path / "bad.csv", BAD_ROWS))
    assert isinstance(errors, list)
    where = {(e.row, e.column) for e in errors}
    assert {(3, "team"), (4, "languages"), (5, "phone"), (6, "phone"), (7, "phone"),
            (8, "phone"), (9, "responder"), (10, "start"), (11, "start"),
            (11, "covered_by"), (12, "day"), (12, "start"), (13, "neighborhoods"),
            (13, "adjacent")} <= where
    text = {(e.row, e.column): e.message for e in errors}
    assert "nowhere" in text[(3, "team")]
    assert "'xx'" in text[(4, "languages")]
    assert "emergency" in text[(6, "phone")] and "emergency" in text[(8, "phone")]
    assert "police" in text[(7, "phone")]
    assert "ghost" in text[(9, "responder")]
    assert "does not exist" in text[(10, "start")] and "twice" in text[(11, "start")]
    assert str(errors[0]).startswith("row 3, column team:")
    assert commands.snapshot(settings) == before


def test_header_and_misplaced_cells_are_errors(tmp_path: Path) -> None:
    s = config.load(env={}, var_dir=str(tmp_path / "var"))
    bad = tmp_path / "h.csv"
    bad.write_text("kind,id,name,colour\n", encoding="utf-8")
    _, errors = commands.read_csv(s, bad)
    assert (1, "colour") in {(e.row, e.column) for e in errors}
    assert (1, "phone") in {(e.row, e.column) for e in errors}
    _, errors = commands.read_csv(s, write(tmp_path / "m.csv", [
        row(kind="team", id="t1", name="T", neighborhoods="Roxbury", phone="+16175550100"),
        row(kind="shift", responder="t1", day="mon", start="09:00", end="10:00"),
        row(kind="robot")]))
    assert {(2, "phone"), (3, "responder"), (4, "kind")} <= {(e.row, e.column) for e in errors}


# ---- on call ------------------------------------------------------------------------

def _people() -> RosterSnapshot:
    team = Team("t", "Team", frozenset({"Roxbury", "Mission Hill"}), frozenset({"u"}))
    other = Team("u", "Other", frozenset({"Dorchester"}))
    names = ["spring", "spring2", "gap", "fall", "sat-night", "sun-early", "overnight",
             "sunday-night", "day", "cover", "swapper", "extra"]
    people = [Responder(n, n.title(), f"PJSIP/{n}", frozenset({"en"}), "t") for n in names]
    people.append(Responder("bk", "Backup", "+16175550150", frozenset({"en", "es"}), None,
                            backup=True))
    sun, sat, mon = 6, 5, 0
    shifts = [
        Shift("spring", sun, time(1), time(3)),
        Shift("spring2", sun, time(3), time(5)),
        Shift("gap", sun, time(2), time(3)),
        Shift("fall", sun, time(0), time(4)),
        Shift("sat-night", sat, time(22), time(1, 30)),
        Shift("sun-early", sun, time(1, 30), time(8)),
        Shift("overnight", mon, time(22), time(6)),
        Shift("sunday-night", sun, time(23), time(7)),
        Shift("day", mon, time(9), time(17)),
        Shift("bk", mon, time(0), time(0)),  # 24 hours
    ]
    overrides = [
        Override("day", "sick", local(2026, 6, 15, 9), local(2026, 6, 15, 13), "cover"),
        Override("day", "swap", local(2026, 6, 15, 13), local(2026, 6, 15, 17), "swapper"),
        Override("extra", "extra", local(2026, 6, 16, 20), local(2026, 6, 16, 23)),
        Override("day", "sick", local(2026, 6, 22, 9), local(2026, 6, 22, 17)),
        # The second 01:30 of the fall-back night (EST): must survive SQL and CSV.
        Override("extra", "extra", local(2026, 11, 1, 1, 30, fold=1), local(2026, 11, 1, 3)),
    ]
    return RosterSnapshot((team, other), tuple(people), tuple(shifts), tuple(overrides))


def _on(snap: RosterSnapshot, at: datetime) -> set[str]:
    return {r.id for r in snap.on_call(at)}


def test_the_dispatcher_reads_the_roster_again_when_it_changed_and_only_then(
        settings: config.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    commands.import_csv(settings, EXAMPLE)
    cache = service.RosterCache(settings)
    asyncio.run(cache.refresh())
    first = cache()
    assert first == commands.snapshot(settings) and cache.reads == 1
    asyncio.run(cache.refresh())  # unchanged: one small read, the same roster object
    assert cache() is first and cache.reads == 1
    # An import (a responder gone): read again, and the dispatcher rings from the new one.
    gone = first.responders[0]
    smaller = dataclasses.replace(
        first, responders=first.responders[1:],
        shifts=tuple(x for x in first.shifts if x.responder_id != gone.id),
        overrides=tuple(o for o in first.overrides
                        if gone.id not in (o.responder_id, o.covered_by)))
    engine = db.engine_for(settings)
    try:
        RosterStore(engine, settings.timezone).replace_all(smaller)
    finally:
        engine.dispose()
    asyncio.run(cache.refresh())
    assert cache.reads == 2 and cache() == smaller and cache().responder(gone.id) is None
    # Read whole now and then whatever the revision says (a roster edited by hand in SQL).
    monkeypatch.setattr(service, "ROSTER_RELOAD_S", 0.0)
    before = cache()
    asyncio.run(cache.refresh())
    assert cache.reads == 3 and cache() is before


@pytest.fixture
def people(settings: config.Settings) -> RosterSnapshot:
    """The scenario roster, written to SQL and read back (times and overrides included)."""
    engine = db.engine_for(settings)
    try:
        db.upgrade(settings, engine)
        store = RosterStore(engine, settings.timezone)
        store.replace_all(_people())
        snap = store.snapshot()
    finally:
        engine.dispose()
    assert snap == _people()
    return snap


def test_spring_forward(people: RosterSnapshot) -> None:
    z = lambda h, m=0: datetime(2026, 3, 8, h, m, tzinfo=UTC)  # noqa: E731
    assert "spring" not in _on(people, z(5, 59))             # 00:59 EST
    assert "spring" in _on(people, z(6, 30))                 # 01:30 EST
    assert _on(people, z(6, 59, )) >= {"spring"}             # 01:59 EST
    # 03:00 EDT comes right after 01:59:59 EST: spring ends, spring2 begins, no gap.
    assert {"spring", "spring2"} & _on(people, z(7)) == {"spring2"}
    # A 02:00-03:00 shift doesn't exist that night, but does a week later.
    assert all("gap" not in _on(people, z(5) + timedelta(minutes=m)) for m in range(0, 240, 5))
    assert "gap" in _on(people, local(2026, 3, 15, 2, 30))
    minutes = [z(6) + timedelta(minutes=m) for m in range(180)]
    assert all(len({"spring", "spring2"} & _on(people, t)) == 1 for t in minutes)


def test_fall_back(people: RosterSnapshot) -> None:
    first, second = local(2026, 11, 1, 1, 15), local(2026, 11, 1, 1, 15, fold=1)
    assert first.utcoffset() != second.utcoffset()
    # 00:00-04:00 across the repeated hour lasts five real hours.
    assert "fall" in _on(people, local(2026, 11, 1, 0)) and "fall" in _on(people, second)
    assert "fall" in _on(people, local(2026, 11, 1, 3, 59))
    assert "fall" not in _on(people, local(2026, 11, 1, 4))
    # Sat 22:00 - 01:30 ends at the first 01:30; Sun 01:30 - 08:00 starts there.
    assert "sat-night" in _on(people, first) and "sun-early" not in _on(people, first)
    assert "sat-night" not in _on(people, second) and "sun-early" in _on(people, second)
    start = datetime(2026, 11, 1, 2, tzinfo=UTC)
    for m in range(0, 8 * 60, 5):
        on = _on(people, start + timedelta(minutes=m)) & {"sat-night", "sun-early"}
        assert len(on) == 1
    # The extra override starts at the second 01:30 (EST), not the first.
    assert "extra" not in _on(people, local(2026, 11, 1, 1, 45))
    assert "extra" in _on(people, local(2026, 11, 1, 1, 45, fold=1))


def test_overnight_shifts(people: RosterSnapshot) -> None:
    assert "overnight" in _on(people, local(2026, 6, 16, 5, 59))      # Tue early
    assert "overnight" not in _on(people, local(2026, 6, 16, 6))
    assert "overnight" not in _on(people, local(2026, 6, 15, 21, 59))  # Mon evening
    assert "overnight" in _on(people, local(2026, 6, 15, 23))
    assert "sunday-night" in _on(people, local(2026, 6, 15, 3))        # Sun -> Mon wrap
    assert "bk" in _on(people, local(2026, 6, 15, 0)) and "bk" in _on(
        people, local(2026, 6, 15, 23, 59))
    assert "bk" not in _on(people, local(2026, 6, 16, 0))


def test_overrides_sick_swap_extra(people: RosterSnapshot) -> None:
    assert "day" in _on(people, local(2026, 6, 8, 10))                 # an ordinary Monday
    at = local(2026, 6, 15, 10)
    assert "day" not in _on(people, at) and "cover" in _on(people, at)  # sick, covered
    at = local(2026, 6, 15, 15)
    assert "day" not in _on(people, at) and "swapper" in _on(people, at)
    assert "cover" not in _on(people, at)
    assert "day" not in _on(people, local(2026, 6, 22, 16, 59))         # sick all day
    assert "extra" in _on(people, local(2026, 6, 16, 21))
    assert "extra" not in _on(people, local(2026, 6, 16, 23))
    with pytest.raises(ValueError):
        people.on_call(datetime(2026, 6, 16, 21))  # naive


def test_lookups_and_backup(people: RosterSnapshot) -> None:
    assert people.team_for_neighborhood("mission hill").id == "t"  # type: ignore[union-attr]
    assert people.team_for_neighborhood("Atlantis") is None
    assert [t.id for t in people.neighbors("u")] == ["t"]  # declared by t only
    assert [r.id for r in people.backup_group(local(2026, 6, 15, 12))] == ["bk"]
    assert people.backup_group(local(2026, 6, 16, 12)) == []


def test_example_covers_every_hour(settings: config.Settings) -> None:
    commands.import_csv(settings, EXAMPLE)
    snap = commands.snapshot(settings)
    # Both DST weeks and the holiday weeks with the example's overrides, hour by hour.
    for start in (local(2026, 3, 2), local(2026, 10, 26), local(2026, 12, 21)):
        for i in range(0, 2 * 7 * 24 * 2):
            at = start + timedelta(minutes=30 * i)
            on = snap.on_call(at)
            for team in snap.teams:
                assert any(r.team_id == team.id for r in on), (team.id, at.astimezone(NY))
            assert any(r.backup for r in on), ("backup", at.astimezone(NY))
    assert oncall.coverage_gaps(snap, local(2026, 3, 2), 24 * 7 * 52) == []
    sick = local(2026, 12, 31, 10)
    assert "minh-anh-tran" not in {r.id for r in snap.on_call(sick)}


def test_oncall_text_and_parse_at(settings: config.Settings) -> None:
    commands.import_csv(settings, EXAMPLE)
    at = commands.parse_at("2026-03-08 01:30", NY)
    assert at == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    text = commands.oncall_text(settings, at)
    assert "Sun 2026-03-08 01:30 EST" in text and "Citywide backup" in text
    assert "Dorchester & Mattapan" in text and "nobody on call" not in text
    assert commands.parse_at("2026-11-01T01:30-05:00", NY) == datetime(2026, 11, 1, 6, 30,
                                                                        tzinfo=UTC)
    assert commands.parse_at("2026-07-04", NY) == local(2026, 7, 4)
    assert commands.parse_at("9:15", NY).astimezone(NY).time() == time(9, 15)
    for bad in ("2026-03-08 02:30", "yesterday", "2026-02-30", "25:00"):
        with pytest.raises(ValueError, match="--at"):
            commands.parse_at(bad, NY)


def test_ensure_loaded_only_into_empty_database(settings: config.Settings,
                                                tmp_path: Path) -> None:
    assert isinstance(commands.ensure_loaded(settings, EXAMPLE), commands.ImportResult)
    small = write(tmp_path / "small.csv", [
        row(kind="team", id="t1", name="T", neighborhoods="Roxbury"),
        row(kind="responder", id="a", name="A", team="t1", phone="PJSIP/a", languages="en")])
    assert isinstance(commands.import_csv(settings, small), commands.ImportResult)
    assert commands.ensure_loaded(settings, EXAMPLE) is None  # never overwrites
    assert [r.id for r in commands.snapshot(settings).responders] == ["a"]


def test_example_numbers_are_fictional() -> None:
    for r in csv_format.read(EXAMPLE.open(encoding="utf-8"),
                             config.load(env={}))[0].responders:  # type: ignore[union-attr]
        assert r.phone.startswith("PJSIP/") or (r.phone[5:9] == "5550" and \
            100 <= int(r.phone[-4:]) <= 199), r.phone
