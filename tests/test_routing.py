"""The routing policy, rule by rule, as a table: no sockets, no database."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from crisisline import config, destinations
from crisisline.roster.model import Override, Responder, RosterSnapshot, Shift, Team
from crisisline.routing import CallToRoute, ResponderState, plan

NY = ZoneInfo("America/New_York")
# Thursday 2026-11-26 14:00 local: everyone below is on a day shift then.
NOW = datetime(2026, 11, 26, 14, 0, tzinfo=NY)
THU = 3


def r(rid: str, team: str | None, langs: str, backup: bool = False,
      phone: str = "+16175550100") -> Responder:
    return Responder(rid, rid.title(), phone, frozenset(langs.split(",")), team, backup)


TEAMS = (
    Team("dot", "Dorchester team", frozenset({"Dorchester"}), frozenset({"rox"})),
    Team("rox", "Roxbury team", frozenset({"Roxbury"})),
    Team("eb", "East Boston team", frozenset({"East Boston"})),
)
PEOPLE = (
    r("ana", "dot", "en,es"), r("ben", "dot", "en"), r("cai", "dot", "en,ht"),
    r("dee", "rox", "en,es"), r("eli", "rox", "en"),
    r("fay", "eb", "es"),
    r("gus", None, "en", backup=True), r("hal", None, "es,en", backup=True),
)


def day_shifts(ids, weekday=THU, start=time(8), end=time(20)):
    return tuple(Shift(i, weekday, start, end) for i in ids)


def roster(people=PEOPLE, shifts=None, overrides=()) -> RosterSnapshot:
    shifts = day_shifts([p.id for p in people]) if shifts is None else shifts
    return RosterSnapshot(TEAMS, people, shifts, overrides)


def names(waves) -> list[tuple[int, list[str]]]:
    return [(w.number, [x.id for x in w.responders]) for w in waves]


CALL_ES_DOT = CallToRoute("c1", "es", "Dorchester")


@pytest.mark.parametrize(("call", "states", "passed", "expected"), [
    # language first: Spanish speakers of the team, of the adjacent team, citywide (East
    # Boston is not adjacent and still rings), the backup group's; then the others
    (CALL_ES_DOT, {}, (), [(1, ["ana"]), (2, ["dee"]), (3, ["fay"]), (4, ["hal"]),
                           (5, ["ben", "cai"]), (6, ["eli"]), (8, ["gus"])]),
    # English caller: everyone near speaks English; fay (Spanish only) rings last citywide
    (CallToRoute("c1", "en", "Dorchester"), {}, (),
     [(1, ["ana", "ben", "cai"]), (2, ["dee", "eli"]), (4, ["gus", "hal"]), (7, ["fay"])]),
    # busy on another call, ringing for another call: skipped; ringing for this call: kept
    (CALL_ES_DOT, {"ana": ResponderState(on_call_with="c9"), "ben": ResponderState(ringing_for="c8"),
                   "cai": ResponderState(ringing_for="c1")}, (),
     [(2, ["dee"]), (3, ["fay"]), (4, ["hal"]), (5, ["cai"]), (6, ["eli"]), (8, ["gus"])]),
    # resting after a call (wrap-up) until 15:00: skipped; rested until 13:00: rung
    (CALL_ES_DOT, {"ana": ResponderState(resting_until=NOW.timestamp() + 3600),
                   "dee": ResponderState(resting_until=NOW.timestamp() - 3600)}, (),
     [(2, ["dee"]), (3, ["fay"]), (4, ["hal"]), (5, ["ben", "cai"]), (6, ["eli"]), (8, ["gus"])]),
    # who passed on this call is not rung again
    (CALL_ES_DOT, {}, ("ana", "dee"),
     [(3, ["fay"]), (4, ["hal"]), (5, ["ben", "cai"]), (6, ["eli"]), (8, ["gus"])]),
    # least recently offered first within a wave
    (CALL_ES_DOT, {"ben": ResponderState(last_offered_at=200.0),
                   "cai": ResponderState(last_offered_at=100.0)}, (),
     [(1, ["ana"]), (2, ["dee"]), (3, ["fay"]), (4, ["hal"]), (5, ["cai", "ben"]), (6, ["eli"]),
      (8, ["gus"])]),
    # unknown neighborhood: citywide by language, then everyone citywide, backups last
    (CallToRoute("c1", "es", None), {}, (),
     [(3, ["ana", "dee", "fay"]), (4, ["hal"]), (7, ["ben", "cai", "eli"]), (8, ["gus"])]),
    # a neighborhood no team serves routes citywide too
    (CallToRoute("c1", "ht", "Mattapan"), {}, (),
     [(3, ["cai"]), (7, ["ana", "ben", "dee", "eli", "fay"]), (8, ["gus", "hal"])]),
    # waited past language_wait_s (30 s): the speakers not rung yet ring with the caller's
    # team at once, speakers first
    (CallToRoute("c1", "es", "Dorchester", waited_s=31), {}, ("ana",),
     [(5, ["dee", "fay", "hal", "ben", "cai"]), (6, ["eli"]), (8, ["gus"])]),
])
def test_waves(call, states, passed, expected):
    assert names(plan(call, roster(), states, NOW, passed=passed)) == expected


def test_empty_roster_plans_nothing_rather_than_failing():
    assert plan(CALL_ES_DOT, RosterSnapshot(), {}, NOW) == []


def test_only_people_on_call_are_rung_and_overrides_count():
    shifts = day_shifts(["ana", "ben", "gus"]) + day_shifts(["cai"], start=time(20), end=time(8))
    sick = Override("ben", "sick", datetime(2026, 11, 26, 9, tzinfo=NY),
                    datetime(2026, 11, 26, 17, tzinfo=NY))
    extra = Override("eli", "extra", datetime(2026, 11, 26, 13, tzinfo=NY),
                     datetime(2026, 11, 26, 15, tzinfo=NY))
    waves = plan(CALL_ES_DOT, roster(shifts=shifts, overrides=(sick, extra)), {}, NOW)
    assert names(waves) == [(1, ["ana"]), (6, ["eli"]), (8, ["gus"])]


@pytest.mark.parametrize(("at", "on"), [
    # spring forward 2026-03-08: 02:00-03:00 doesn't exist; a 01:00-03:00 shift is 1 real hour
    (datetime(2026, 3, 8, 1, 30, tzinfo=NY), True),
    (datetime(2026, 3, 8, 3, 30, tzinfo=NY), False),
    # fall back 2026-11-01: 01:30 happens twice; both are inside the shifts
    (datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NY), True),
    (datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY), True),
    (datetime(2026, 11, 1, 3, 30, tzinfo=NY), False),
])
def test_dst_boundaries(at, on):
    shifts = (Shift("ana", 6, time(1), time(3)), Shift("ana", 6, time(0), time(2)))
    waves = plan(CallToRoute("c1", "en", "Dorchester"), roster(shifts=shifts), {}, at)
    assert bool(waves) is on


def test_max_per_wave_rings_the_least_recently_offered():
    states = {"ana": ResponderState(last_offered_at=50.0), "ben": ResponderState(last_offered_at=10.0)}
    waves = plan(CallToRoute("c1", "en", "Dorchester"), roster(), states, NOW, max_per_wave=2)
    assert names(waves)[0] == (1, ["cai", "ben"])


def test_no_wave_ever_rings_an_emergency_or_police_number():
    s = config.load(env={})
    people = (r("ana", "dot", "es", phone="911"), r("ben", "dot", "es", phone="+16173434500"),
              r("cai", "dot", "es", phone="+16175550101"), r("gus", None, "es", True, phone="112"))
    waves = plan(CALL_ES_DOT, roster(people=people), {}, NOW,
                 refuse=lambda dest: destinations.refusal(dest, s))
    assert names(waves) == [(1, ["cai"])]


def test_no_free_responder_on_call_is_ever_left_out():
    """Whatever the caller's language and neighborhood, the waves together reach every free
    responder on call citywide (the backup group included)."""
    everyone = {p.id for p in PEOPLE}
    for lang in ("es", "en", "ht", "vi"):
        for hood in ("Dorchester", "Roxbury", "East Boston", "Mattapan", None):
            for waited in (0, 60):
                waves = plan(CallToRoute("c1", lang, hood, waited), roster(), {}, NOW)
                rung = [x.id for w in waves for x in w.responders]
                assert sorted(rung) == sorted(everyone), (lang, hood, waited)


def test_nobody_who_speaks_the_language_waits_behind_someone_who_doesnt():
    for call in (CALL_ES_DOT, CallToRoute("c1", "ht", "Roxbury"), CallToRoute("c1", "es", None)):
        order = [x for w in plan(call, roster(), {}, NOW) for x in w.responders]
        speaks = [call.language in x.languages for x in order]
        assert speaks == sorted(speaks, reverse=True), call


def test_wave_timeout_is_configurable():
    assert {w.timeout_s for w in plan(CALL_ES_DOT, roster(), {}, NOW, wave_timeout_s=7)} == {7}


@pytest.mark.parametrize(("at", "speakers_first"), [
    # 01:00: nobody in the Dorchester team speaks Spanish; Roxbury's Tanya Brooks does and
    # is rung first, before the Dorchester responder who doesn't (issue 10's run at 01:07).
    ("2026-12-02 01:00", {"tanya-brooks"}),
    # 14:00: Spanish speakers of other teams, citywide, before Dorchester's Marie-Claire.
    ("2026-12-02 14:00", {"carmen-figueroa", "esperanza-cruz", "ana-lucia-ramirez"}),
])
def test_the_example_rosters_spanish_caller_in_dorchester_at_night_and_by_day(at, speakers_first,
                                                                            tmp_path):
    """The same caller at two pinned hours: whoever is on call, every Spanish speaker rings
    before anyone who doesn't speak it."""
    from pathlib import Path

    from crisisline.clock import parse_pinned
    from crisisline.roster.commands import read_csv

    s = config.load(env={}, var_dir=str(tmp_path))
    snapshot, errors = read_csv(s, Path(__file__).resolve().parent.parent / "examples" / "roster.csv")
    assert not errors and snapshot is not None
    when = parse_pinned(at, s.timezone)
    waves = plan(CallToRoute("c1", "es", "Dorchester"), snapshot, {}, when, max_per_wave=4)
    first = {x.id for x in waves[0].responders}
    assert first <= speakers_first and first, (at, names(waves))
    order = [x for w in waves for x in w.responders]
    speaks = ["es" in x.languages for x in order]
    assert speaks == sorted(speaks, reverse=True)
    assert any(not s_ for s_ in speaks)  # the others are rung too, after every speaker


def test_a_rest_ends_by_the_real_clock_when_the_hour_is_pinned():
    """PR_CLOCK pins whose shift it is (here a Thursday afternoon long past); a responder's
    wrap-up rest was written by the real clock, and ends by it. Judged by the pinned hour,
    a rest that ended in real time would never end (found when the real date passed a
    test's pinned one)."""
    call = CallToRoute("c1", "es", "Dorchester", 0)
    real_now = NOW.timestamp() + 10 * 86400  # the real clock, days after the pinned hour
    rested = {p.id: ResponderState(resting_until=real_now - 5) for p in PEOPLE}
    everyone = {p.id for w in plan(call, roster(), {}, NOW) for p in w.responders}
    assert everyone
    after_rest = {p.id for w in plan(call, roster(), rested, NOW, rest_at=real_now)
                  for p in w.responders}
    assert after_rest == everyone
    still = {p.id: ResponderState(resting_until=real_now + 5) for p in PEOPLE}
    assert plan(call, roster(), still, NOW, rest_at=real_now) == []
