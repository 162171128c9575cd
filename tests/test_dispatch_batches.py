"""Calls plan and ring in batches (workers/dispatcher/turns.py, waves.py): the queue's order
within a batch, freed responders to the longest waiter, one Lua script per offer (never
double-booked, also by two dispatchers at once), and the shortcuts that make a batch cheap
give the same waves as the routing policy itself. Real Redis; no PBX (originates are noted)."""

from __future__ import annotations

import asyncio
import random
import time
import types
from datetime import UTC, datetime
from datetime import time as dtime

import pytest
import redis.asyncio as aioredis

from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from crisisline.routing import CallToRoute, ResponderState, next_wave, plan
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore, offers_key, responder_key
from workers.dispatcher import turns as turns_module
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.reconcile import _leg_up, _legs_index
from workers.dispatcher.turns import Turns
from workers.dispatcher.waves import PlanJob, WavePlanner

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)


class NotedAmi:
    """Stands where the AMI gateway does; notes the Originates."""

    def __init__(self) -> None:
        self.handlers: list = []
        self.originate_results: list = []
        self.listening_since = None
        self.originated: list[tuple[str, str]] = []
        self.hung_up: list[str] = []

    def originate(self, channel_id: str, destination: str, *args: object, **kw: object) -> None:
        self.originated.append((channel_id, destination))

    async def setvar(self, *args: object) -> bool:
        return True

    async def hangup(self, channel: str, cause: int = 16) -> None:
        self.hung_up.append(channel)


def roster(n: int, *, teams: int = 1, seed: int | None = None) -> RosterSnapshot:
    """n responders on call all week; with a seed, a mix of teams, languages and backups."""
    rng = random.Random(seed)
    team_list = tuple(Team(f"t{i}", f"Team {i}", frozenset({f"Hood{i}"}),
                           frozenset({f"t{i + 1}"}) if i + 1 < teams else frozenset())
                      for i in range(teams))
    people = []
    for i in range(n):
        langs = frozenset({"es", "en"}) if seed is None else \
            frozenset(rng.sample(["en", "es", "ht", "vi"], rng.randint(1, 2)))
        people.append(Responder(f"r{i:03d}", f"R{i}", f"PJSIP/r{i:03d}", langs,
                                f"t{rng.randrange(teams)}" if seed is not None else "t0",
                                seed is not None and rng.random() < 0.15))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot(team_list, tuple(people), shifts)


@pytest.fixture
async def client(settings):
    c = aioredis.Redis.from_url(settings.effective_redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def lean(settings):
    """The client the dispatcher has (crisisline.stores.async_redis): it counts its writes."""
    c = async_redis(settings.effective_redis_url)
    yield c
    await c.aclose()


def dispatcher(settings, client, snapshot: RosterSnapshot, name: str = "d1") -> Dispatcher:
    d = Dispatcher(settings, CallStore(client), OfferStore(client), NotedAmi(), lambda: snapshot,
                   name=name)
    d._now = lambda: NOW  # type: ignore[method-assign]
    return d


def job(call_id: str, language: str = "es", neighborhood: str = "Hood0") -> PlanJob:
    data = {"language": language, "neighborhood": neighborhood, "source": "direct",
            "queued_at": f"{NOW.timestamp():.3f}"}
    return PlanJob(call_id, data, 0, 0)


async def waiting(client, *jobs: PlanJob) -> list[PlanJob]:
    """The calls exist in Redis, waiting (a batch never rings for a call that isn't)."""
    for j in jobs:
        await client.hset(f"pr:call:{j.call_id}", mapping={"id": j.call_id, "state": "waiting"})
    return list(jobs)


# ---- the gate -------------------------------------------------------------------------------
async def test_a_batch_is_planned_in_queue_order_and_latecomers_wait_for_the_next():
    seen: list[list[str]] = []
    release = asyncio.Event()

    async def run(jobs):
        seen.append(list(jobs))
        await release.wait()
        return [f"done {j}" for j in jobs]

    gate: Turns[str, str] = Turns(0.5, run)
    # Woken in any order in one moment: planned in the queue's order (the score).
    first = [asyncio.create_task(gate.take(c, score, c)) for c, score in
             (("c3", 3.0), ("c1", 1.0), ("c2", 2.0))]
    await asyncio.sleep(0.01)
    late = asyncio.create_task(gate.take("c0", 0.0, "c0"))  # while the first batch runs
    await asyncio.sleep(0.01)
    assert seen == [["c1", "c2", "c3"]]
    release.set()
    assert await asyncio.gather(*first) == ["done c3", "done c1", "done c2"]
    assert await late == "done c0"
    assert seen == [["c1", "c2", "c3"], ["c0"]] and gate.batches == 2


async def test_a_call_cancelled_while_waiting_is_left_out_and_failures_reach_every_call():
    calls: list[list[str]] = []

    async def run(jobs):
        calls.append(list(jobs))
        if "boom" in jobs:
            raise RuntimeError("Redis went away")
        return list(jobs)

    gate: Turns[str, str] = Turns(0.5, run)
    gone = asyncio.create_task(gate.take("gone", 1.0, "gone"))
    kept = asyncio.create_task(gate.take("kept", 2.0, "kept"))
    gone.cancel()
    assert await kept == "kept" and calls == [["kept"]]
    a = asyncio.create_task(gate.take("a", 1.0, "a"))
    b = asyncio.create_task(gate.take("boom", 2.0, "boom"))
    for task in (a, b):
        with pytest.raises(RuntimeError):
            await task


async def test_a_more_urgent_starving_call_is_waited_for_a_moment(monkeypatch):
    monkeypatch.setattr(turns_module, "GRACE_S", 0.3)
    seen: list[list[str]] = []

    async def run(jobs):
        seen.append(list(jobs))
        return list(jobs)

    gate: Turns[str, str] = Turns(0.5, run)
    gate.starving = {"urgent": 1.0, "later": 5.0}
    early = asyncio.create_task(gate.take("early", 0.5, "early"))
    later = asyncio.create_task(gate.take("later", 5.0, "later"))
    await asyncio.sleep(0.1)
    # "early" comes before the urgent call and goes; "later" waits for it...
    assert seen == [["early"]] and not later.done()
    await gate.take("urgent", 1.0, "urgent")
    await asyncio.gather(early, later)
    # ...which then goes first.
    assert seen[1] == ["urgent", "later"]


# ---- waves for a batch ----------------------------------------------------------------------
async def test_scarce_responders_go_to_the_longest_waiter_in_a_batch(settings, client):
    settings = settings.__class__(**{**settings.__dict__, "ring_per_wave": 4})
    d = dispatcher(settings, client, roster(6))
    # Queue order: c1 first. Six responders: four for c1's wave, two for c2's.
    results = await d.waves.plan_batch(await waiting(client, job("c1"), job("c2"), job("c3")))
    (w1, rung1, _), (_, rung2, _), (w3, rung3, _) = results
    assert len(rung1) == 4 and len(rung2) == 2 and w3 is None and rung3 == []
    assert not set(rung1) & set(rung2)
    for call_id, rung in (("c1", rung1), ("c2", rung2)):
        offers = await client.hgetall(offers_key(call_id))
        assert {k.decode() for k in offers} == set(rung)
        for rid in rung:
            assert await client.hget(responder_key(rid), "ringing_for") == call_id.encode()
    assert len(d.ami.originated) == 6
    assert (await client.hget("pr:call:c1", "wave")) == str(w1.number).encode()


async def test_two_dispatchers_planning_at_once_never_double_book(settings, client):
    snapshot = roster(10)
    d1, d2 = dispatcher(settings, client, snapshot, "d1"), dispatcher(settings, client, snapshot, "d2")
    jobs1 = await waiting(client, *(job(f"a{i}") for i in range(5)))
    jobs2 = await waiting(client, *(job(f"b{i}") for i in range(5)))
    results = await asyncio.gather(d1.waves.plan_batch(jobs1), d2.waves.plan_batch(jobs2))
    rung = {(j.call_id, rid) for jobs, batch in zip((jobs1, jobs2), results, strict=True)
            for j, (_, who, _) in zip(jobs, batch, strict=True) for rid in who}
    rids = [rid for _, rid in rung]
    assert len(rids) == len(set(rids)) == 10  # everyone rung, nobody for two calls at once
    for call_id, rid in rung:
        assert await client.hget(responder_key(rid), "ringing_for") == call_id.encode()
        assert (await client.hget(offers_key(call_id), rid)).startswith(b"ringing:")


async def test_a_responder_taken_meanwhile_moves_the_call_to_its_next_wave(settings, client):
    teams = (Team("t0", "Team 0", frozenset({"Hood0"}), frozenset({"t1"})),
             Team("t1", "Team 1", frozenset({"Hood1"})))
    people = tuple(Responder(f"r{i:03d}", f"R{i}", f"PJSIP/r{i:03d}", frozenset({"es"}),
                             "t0" if i < 4 else "t1") for i in range(8))
    snapshot = RosterSnapshot(teams, people, tuple(Shift(r.id, d, dtime(0), dtime(0))
                                                   for r in people for d in range(7)))
    d = dispatcher(settings, client, snapshot)
    # Everyone but r007 rings for another call by the time the offers are made.
    offers = OfferStore(client)
    real_ring_many = offers.ring_many
    d.offers = offers

    async def taken_first(batch):
        for _, rid, _, _ in batch:
            if rid != "r007":
                await client.hset(responder_key(rid), "ringing_for", "elsewhere")
        return await real_ring_many(batch)

    offers.ring_many = taken_first  # type: ignore[method-assign]
    fresh = PlanJob("c1", {**job("c1").data, "queued_at": f"{time.time():.3f}"}, 0, 0)
    [(wave, rung, number)] = await d.waves.plan_batch(await waiting(client, fresh))
    # Wave 1 (their team) was taken meanwhile: wave 2 (the adjacent team) rings at once.
    assert rung == ["r007"] and wave is not None and number == wave.number == 2


async def test_a_call_that_ended_meanwhile_is_never_rung_nor_brought_back(settings, client):
    """A batch plans from a copy of the call read a moment ago: if the caller hung up (or a
    responder took the call) since, no phone rings for it and its record stays ended (once,
    a late wave wrote "dispatching" over an ended call, which then never ended again)."""
    d = dispatcher(settings, client, roster(4))
    gone, taken, live = await waiting(client, job("gone"), job("taken"), job("live"))
    await client.hset("pr:call:gone", mapping={"state": "abandoned", "ended_at": "1"})
    await client.hset("pr:call:taken", mapping={"state": "bridged", "accepted_by": "r999"})
    settings_cap = settings.__class__(**{**settings.__dict__, "ring_per_wave": 1})
    d.settings = settings_cap
    results = await d.waves.plan_batch([gone, taken, live])
    assert [rung for _, rung, _ in results[:2]] == [[], []]
    assert results[2][1] and results[2][0] is not None
    assert await client.hget("pr:call:gone", "state") == b"abandoned"
    assert await client.hget("pr:call:taken", "state") == b"bridged"
    assert await client.hget("pr:call:gone", "wave") is None
    for r in ("r000", "r001", "r002", "r003"):
        assert await client.hget(responder_key(r), "ringing_for") in (None, b"", b"live")
    assert all("gone" not in c and "taken" not in c for c, _ in d.ami.originated)


async def test_two_dispatchers_hearing_one_room_record_the_person_once(settings, client):
    """Each dispatcher holds an AMI session to every node, so each hears the caller and the
    responder join the room: the call is bridged once in the event stream (the record and
    the panel), with one time to a human; after the responder leaves and the call is
    queued again, the next person is noted once more."""
    d1, d2 = dispatcher(settings, client, roster(2), "d1"), dispatcher(settings, client,
                                                                      roster(2), "d2")
    await client.hset("pr:call:c1", mapping={
        "id": "c1", "state": "bridged", "accepted_by": "r000", "channel": "PJSIP/caller-1",
        "created_at": f"{time.time() - 5:.3f}"})
    await client.hset("pr:legs:c1", "r000", "PJSIP/r000-1")

    async def both_hear(leg: str) -> None:
        joins = [{"Event": "ConfbridgeJoin", "Conference": "call-c1", "Channel": ch}
                 for ch in ("PJSIP/caller-1", leg)]
        for event in joins:
            await asyncio.gather(d1.watch.on_event(event), d2.watch.on_event(event))

    await both_hear("PJSIP/r000-1")
    bridged = [b for _, b in await client.xrange("pr:events") if b[b"type"] == b"bridged"]
    assert len(bridged) == 1 and bridged[0][b"responder"] == b"r000"
    assert await client.hget("pr:call:c1", "time_to_human_s")
    await d1.watch._requeue("c1", "r000")
    assert await client.hget("pr:call:c1", "connected_at") is None
    await client.hset("pr:call:c1", mapping={"state": "bridged", "accepted_by": "r001"})
    await client.hset("pr:legs:c1", "r001", "PJSIP/r001-1")
    for w in (d1.watch, d2.watch):
        w.rooms.clear()
    await both_hear("PJSIP/r001-1")
    bridged = [b for _, b in await client.xrange("pr:events") if b[b"type"] == b"bridged"]
    assert [b[b"responder"] for b in bridged] == [b"r000", b"r001"]


@pytest.mark.parametrize("connected", [False, True])
async def test_a_taker_whose_leg_ends_before_the_caller_reached_them_frees_the_caller(
        settings, client, monkeypatch, connected):
    """The whisper's FastAGI server died between a responder's accept and telling their leg:
    the leg hangs up without moving the caller, and the dialplan says nothing (PR_ACCEPTED
    unset). The caller is searched for again at once, not left waiting until the fallback
    group, and the record no longer names a responder who never spoke with them (the soak
    counted one as double-booked). Once they were together, the dialplan's PRResponderLeft
    decides instead, and the leg's end alone changes nothing."""
    monkeypatch.setattr("workers.dispatcher.watch.HANGUP_GRACE_S", 0.05)
    d = dispatcher(settings, client, roster(2))
    await client.hset("pr:call:c2", mapping={
        "id": "c2", "state": "bridged", "accepted_by": "r000", "accepted_at": "1",
        "channel": "PJSIP/caller-2", "cycle": "0", "queue_score": "5",
        **({"connected_at": "2"} if connected else {})})
    await client.hset(offers_key("c2"), "r000", "accepted")
    await client.hset("pr:legs:c2", "r000", "PJSIP/r000-2")
    await d.watch.on_event({"Event": "Hangup", "Uniqueid": "pr-c2-0-1-r000",
                            "Channel": "PJSIP/r000-2"})
    await asyncio.sleep(0.3)
    call = {k.decode(): v.decode() for k, v in (await client.hgetall("pr:call:c2")).items()}
    requeued = [b for _, b in await client.xrange("pr:events") if b[b"type"] == b"requeued"]
    if connected:
        assert call["state"] == "bridged" and call["accepted_by"] == "r000" and not requeued
        return
    assert call["state"] == "waiting" and call["accepted_by"] == "" and call["cycle"] == "1"
    assert await client.zscore("pr:queue", "c2") == 5.0
    assert [b[b"reason"] for b in requeued] == [b"responder_never_connected"]
    # The dialplan's word coming late changes nothing more: one requeue.
    await d.watch.on_event({"Event": "UserEvent", "UserEvent": "PRResponderLeft",
                            "CallID": "c2", "Responder": "r000"})
    assert len([b for _, b in await client.xrange("pr:events") if b[b"type"] == b"requeued"]) == 1


# ---- the shortcuts give the policy's own answer ----------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_planning_a_few_per_group_gives_the_same_wave_as_everyone(seed, monkeypatch):
    rng = random.Random(seed)
    snapshot = roster(rng.randint(20, 160), teams=rng.randint(1, 4), seed=seed)
    on_call = snapshot.on_call(NOW)
    states = {r.id: ResponderState(
        ringing_for=rng.choice([None, None, None, "other", "c1"]),
        last_offered_at=rng.choice([None, float(rng.randint(1, 50))])) for r in on_call}
    passed = {r.id for r in on_call if rng.random() < 0.2}
    call = CallToRoute("c1", rng.choice(["en", "es", "ht", "vi"]),
                       rng.choice([None, "Hood0", "Hood1"]), rng.choice([0.0, 100.0]))
    per_wave = rng.choice([1, 2, 4])
    options = {"passed": passed, "max_per_wave": per_wave, "language_wait_s": 30.0}

    class D:  # what the planner reads of a dispatcher here
        settings = types.SimpleNamespace(ring_per_wave=per_wave, language_wait_s=30.0)

        @staticmethod
        def _wave_timeout(data: dict) -> float:
            return 20.0

    planner = WavePlanner(D())  # type: ignore[arg-type]
    live = {rid: (s.ringing_for or "", s.last_offered_at, s.resting_until)
            for rid, s in states.items()}
    groups = planner._groups(planner._sorted_out(on_call), live)
    data = {"language": call.language, "neighborhood": call.neighborhood or "",
            "queued_at": f"{NOW.timestamp() - call.waited_s:.3f}"}
    monkeypatch.setattr(time, "time", NOW.timestamp)  # the wait the call has, as planned
    everything = plan(call, snapshot, states, NOW, on_call=on_call, **options)
    for after in range(9):
        full = next_wave(call, snapshot, states, NOW, after, on_call=on_call, **options)
        assert full == next((w for w in everything if w.number > after), None)
        mine = planner._next_wave(PlanJob("c1", data, 0, after), snapshot, NOW, groups, live, {},
                                  passed, after)
        assert mine == full, (seed, after)


def test_finding_a_responders_leg_in_the_listing_without_scanning_it():
    rng = random.Random(7)
    ids = ["abc", "a-b", "abc-1", "x"]
    live = {f"pr-{rng.choice(ids)}-{rng.randint(0, 2)}-{rng.randint(0, 3)}-r{rng.randint(0, 5)}"
            for _ in range(60)} | {"1700000000.12", "pri-abc-es-1", "prs-abc-1"}
    index = _legs_index(live)
    for call_id in [*ids, "ab", "b"]:
        for rid in [f"r{i}" for i in range(7)]:
            brute = any(u.startswith(f"pr-{call_id}-") and u.endswith(f"-{rid}") for u in live)
            assert _leg_up(index, call_id, rid) == brute, (call_id, rid)


async def test_calls_are_taken_in_queue_order_with_their_hashes(settings, client):
    store = CallStore(client)
    for i, score in enumerate((30, 10, 20)):
        await client.hset(f"pr:call:c{i}", mapping={"id": f"c{i}", "state": "waiting"})
        await client.zadd("pr:queue", {f"c{i}": score})
    taken = await store.claim("d1", 30, 2)
    assert [c for c, _ in taken] == ["c1", "c2"]
    assert all(data["owner"] == "d1" and data["state"] == "dispatching" for _, data in taken)
    assert await store.claim_next("d1", 30) == "c0"
    assert await store.claim("d1", 30, 5) == []


@pytest.mark.parametrize("extra, at_once", [
    ({}, False),
    ({"restored": "1"}, True),  # put back from the PBX: its channel's mark may be old
    ({"previous_responder": "r001", "cycle": "1"}, True),  # back after a responder left
    ({"cb_state": "requested"}, True),
    ({"queued_at_age": 30}, True),  # queued long ago (a lease ran out meanwhile)
])
def test_a_call_fresh_from_the_queue_is_not_marked_attended_again_at_once(
        settings, client, extra, at_once):
    """The IVR marks a caller attended for unattended_s as it queues them (PR_ATTENDED_UNTIL):
    the dispatcher's first word can wait a third of that; any call not fresh from the IVR
    gets it at once, before the dialplan could give up on it."""
    d = dispatcher(settings, client, roster(1))
    said: list[dict] = []
    d.attend_soon = lambda data: said.append(data) or time.monotonic()  # type: ignore[method-assign]
    age = extra.pop("queued_at_age", 2)
    data = {"queued_at": f"{time.time() - age:.3f}", "cycle": "0", "channel": "PJSIP/c-1",
            **extra}
    at = d._first_attend(data)
    if at_once:
        assert said == [data]
    else:
        third = settings.unattended_s / 3
        assert not said and third - age - 1 < at - time.monotonic() <= third - age + 0.01


@pytest.mark.parametrize("joined", [False, True])
async def test_a_responder_left_waiting_for_a_caller_who_hung_up_on_the_way_is_let_go(
        settings, client, monkeypatch, joined):
    """The caller hung up while being moved to the room (during "connecting you now"): they
    never joined it, and the responder's leg would wait in it for them for good while Redis,
    the call being over, has them free, and rings them for the next caller (the soak found
    one in two rooms at once). Once the call has ended, that leg is hung up; a leg the room
    already let go (the usual case) is not hung up again."""
    monkeypatch.setattr("workers.dispatcher.watch.HANGUP_GRACE_S", 0.05)
    d = dispatcher(settings, client, roster(2))
    await client.hset("pr:call:c3", mapping={
        "id": "c3", "state": "ended", "accepted_by": "r000", "channel": "PJSIP/caller-3"})
    await client.set("pr:channel:PJSIP/caller-3", "c3")
    if not joined:
        await client.hset("pr:legs:c3", "r000", "PJSIP/r000-3")
    await d.watch.on_event({"Event": "Hangup", "Uniqueid": "1.3", "Channel": "PJSIP/caller-3"})
    await asyncio.sleep(0.3)
    assert d.ami.hung_up == ([] if joined else ["PJSIP/r000-3"])


def test_an_action_on_a_closing_ami_connection_waits_for_the_reconnect():
    """uvloop raises on a write to a closing transport; the action is kept (panoramisk sends
    it again once logged in again), as on asyncio's loop, and nothing is written."""
    from workers.dispatcher.ami import _Protocol

    class Closing:
        def is_closing(self) -> bool:
            return True

        def write(self, data: bytes) -> None:
            raise RuntimeError("the handler is closed")

    async def send() -> None:
        proto = _Protocol.__new__(_Protocol)
        proto.responses = {}
        proto.transport = Closing()
        fut = proto.send({"Action": "Setvar", "Channel": "PJSIP/x", "Variable": "A",
                          "Value": "1"})
        assert not fut.done() and len(proto.responses) >= 1

    asyncio.run(send())



IGNORED = [  # events the dispatcher hears and does nothing about
    {"Event": "Newchannel", "Uniqueid": "1.1", "Channel": "PJSIP/caller-1"},
    {"Event": "Hangup", "Uniqueid": "pri-c1-es-1", "Channel": "Local/es@pr-interpreters-1;1"},
    {"Event": "Hangup", "Uniqueid": "prs-c1-1", "Channel": "PJSIP/supervisor-1"},
    {"Event": "ConfbridgeJoin", "Conference": "waiting-c1", "Channel": "PJSIP/caller-1"},
    {"Event": "ConfbridgeLeave", "Conference": "call-c1", "Channel": "PJSIP/caller-1"},
    {"Event": "ConfbridgeEnd", "Conference": "call-c1"},
    {"Event": "UserEvent", "UserEvent": "PRFallback"},
    {"Event": "DialEnd", "DialStatus": "NOANSWER", "Channel": "PJSIP/caller-1"},
    {"Event": "DialEnd", "DialStatus": "ANSWER", "DestChannel": "PJSIP/r000-1"},
]


@pytest.mark.parametrize("event", IGNORED, ids=lambda e: e["Event"])
async def test_what_the_dispatcher_does_not_act_on_it_says_so_before_the_work(settings, lean,
                                                                               event):
    """CallWatch.wants (asked as each event is read: no task, no copy kept) agrees with act():
    what it turns down, act() would have done nothing with (no Redis, no AMI)."""
    d = dispatcher(settings, lean, roster(2))
    await lean.set("pr:channel:PJSIP/caller-1", "c1")
    await lean.hset("pr:call:c1", mapping={"id": "c1", "state": "waiting"})
    assert d.watch.wants(event) is False
    writes = lean.batches
    await d.watch.act(dict(event))
    await asyncio.sleep(0.05)
    assert lean.batches == writes and d.ami.hung_up == []


async def test_a_responders_leg_coming_up_is_wanted_and_acted_on(settings, lean):
    d = dispatcher(settings, lean, roster(2))
    await lean.hset("pr:offers:c1", "r000", "ringing:1")
    event = {"Event": "Newchannel", "Uniqueid": "pr-c1-0-1-r000", "Channel": "PJSIP/r000-1"}
    assert d.watch.wants(event) is True
    await d.watch.act(event)
    assert await lean.hget("pr:legs:c1", "r000") == b"PJSIP/r000-1"
