"""The reconciler judges Redis against one listing of Asterisk's channels, and a pass over
hundreds of calls takes seconds: a responder who took a call just before or during the pass
has a leg the listing doesn't show. Freeing them would offer them another call while they
are with a caller, and lose the record of that caller reaching a person (found by
bench/bench_callbacks.py with 400 calls). Real Redis; Asterisk's listing is stubbed."""

from __future__ import annotations

import time

from crisisline import config
from crisisline.call import Call, Source, new_call_id
from crisisline.stores import async_redis
from crisisline.stores.callbacks import CallbackStore
from crisisline.stores.calls import CallStore, call_key
from crisisline.stores.offers import OfferStore, legs_key, responder_key
from workers.dispatcher.reconcile import Reconciler


class Listing:
    """AMI with nothing but CoreShowChannels: the channels given."""

    def __init__(self, uniqueids: list[str]) -> None:
        self.uniqueids = uniqueids
        self.listing_started: float | None = None

    async def listing(self, action: dict, event: str) -> list[dict[str, str]]:
        return [{"Uniqueid": u, "Channel": f"PJSIP/x-{u}", "Context": "pr-responder"}
                for u in self.uniqueids]


class Dispatcher:
    """What the reconciler uses of a dispatcher."""

    def __init__(self, settings: config.Settings, ami: Listing) -> None:
        self.settings = settings
        self.redis = async_redis(settings.effective_redis_url)
        self.calls, self.offers = CallStore(self.redis), OfferStore(self.redis)
        self.callbacks = CallbackStore(self.redis)
        self.ami = ami

    async def _hash(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(call_key(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def cancel_legs(self, call_id: str) -> None:
        pass


async def a_bridged_call(d: Dispatcher, rid: str, accepted_at: float) -> str:
    call = Call(new_call_id(), Source.DIRECT, "es", 2, neighborhood="Dorchester",
                caller_number="+16175550142", created_at=accepted_at - 30)
    await d.calls.create(call)
    await d.redis.hset(call_key(call.id), mapping={
        "state": "bridged", "accepted_by": rid, "accepted_at": f"{accepted_at:.3f}",
        "x_uniqueid": f"caller-{call.id}"})
    await d.redis.hset(responder_key(rid), mapping={"on_call_with": call.id, "ringing_for": ""})
    await d.redis.hset(legs_key(call.id), rid, f"PJSIP/{rid}-1")
    return call.id


async def test_a_responder_who_took_a_call_as_the_pass_began_stays_with_it(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        just_now = await a_bridged_call(d, "ana", time.time() - 0.5)
        long_ago = await a_bridged_call(d, "ben", time.time() - 60)
        # Both callers are on the line; neither responder's leg is in the listing.
        d.ami.uniqueids = [f"caller-{just_now}", f"caller-{long_ago}"]
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        counts = await reconciler.once()
        # Ana took her call half a second ago: too recent to judge; she stays on it and her
        # leg is still known (the bridge can still be counted). Ben's leg is gone for good.
        assert await d.redis.hget(responder_key("ana"), "on_call_with") == just_now.encode()
        assert await d.redis.hget(legs_key(just_now), "ana") is not None
        assert await d.redis.hget(responder_key("ben"), "on_call_with") == b""
        assert counts["freed"] == 1
        # And the reconciler looks again soon, not in half a minute.
        assert reconciler.revisit_in is not None and reconciler.revisit_in < 5
    finally:
        await d.redis.aclose()


async def test_a_caller_who_just_hung_up_is_left_to_their_own_hang_up_report(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        call_id = await a_bridged_call(d, "ana", time.time() - 60)
        d.ami.uniqueids = [f"pr-{call_id}-1-ana"]  # the responder's leg; the caller's is gone
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        assert (await reconciler.once())["ended"] == 0
        assert (await d._hash(call_id))["state"] == "bridged"
        assert reconciler.revisit_in is not None and reconciler.revisit_in < 5
        # Still gone a few seconds later, and nobody reported it: ended from here.
        reconciler._missing[call_id] -= 10
        assert (await reconciler.once())["ended"] == 1
        assert (await d._hash(call_id))["state"] == "ended"
    finally:
        await d.redis.aclose()


class Nodes(Listing):
    """Two nodes; ``unseen``: those the listing could not ask (PbxNodes.listing_nodes)."""

    def __init__(self, uniqueids: list[str], unseen: set[str]) -> None:
        super().__init__(uniqueids)
        self.unseen = unseen
        self.gateways = {"pbx1": object(), "pbx2": object()}

    async def listing_nodes(self, action: dict, event: str):
        return await self.listing(action, event), set(self.unseen)


async def test_a_node_that_cannot_be_asked_keeps_its_calls_and_the_others_are_judged(settings):
    d = Dispatcher(settings, Nodes([], {"pbx2"}))
    try:
        on_one = await a_bridged_call(d, "ana", time.time() - 60)
        on_two = await a_bridged_call(d, "ben", time.time() - 60)
        await d.redis.hset(call_key(on_one), "pbx_node", "pbx1")
        await d.redis.hset(call_key(on_two), "pbx_node", "pbx2")
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        await reconciler.once()
        for missing in reconciler._missing:
            reconciler._missing[missing] -= 10
        await reconciler.once()
        # pbx1 listed neither caller nor leg: its call ended and Ana is free. pbx2 couldn't
        # be asked: Ben's call (maybe well) goes on, and he stays with it.
        assert (await d._hash(on_one))["state"] == "ended"
        assert await d.redis.hget(responder_key("ana"), "on_call_with") == b""
        assert (await d._hash(on_two))["state"] == "bridged"
        assert await d.redis.hget(responder_key("ben"), "on_call_with") == on_two.encode()
        # Neither node answering: nothing is judged at all.
        d.ami.unseen = {"pbx1", "pbx2"}
        assert await reconciler.once() == {}
    finally:
        await d.redis.aclose()


async def test_a_taken_callback_request_that_never_started_is_offered_again(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        call = Call(new_call_id(), Source.DIRECT, "es", 2, created_at=time.time() - 120)
        await d.calls.create(call)
        await d.redis.hset(call_key(call.id), mapping={
            "state": "bridged", "cb_state": "pending", "accepted_by": "ana",
            "accepted_at": f"{time.time() - 30:.3f}", "queue_score": "2000", "owner": "d1"})
        await d.redis.hset(responder_key("ana"), "on_call_with", call.id)
        assert (await Reconciler(d).once())["ended"] == 1  # type: ignore[arg-type]
        data = await d._hash(call.id)
        # Back in the queue at its own place, for anyone; Ana (her leg long gone) is free.
        assert data["state"] == "waiting" and data["accepted_by"] == "" and data["owner"] == ""
        assert data["cb_state"] == "pending"
        assert await d.redis.zscore("pr:queue", call.id) == 2000
        assert await d.redis.hget(responder_key("ana"), "on_call_with") == b""
    finally:
        await d.redis.aclose()


async def test_a_stale_listing_never_frees_someone_rung_for_another_call_meanwhile(settings):
    d = Dispatcher(settings, Listing([]))
    try:
        old = Call(new_call_id(), Source.DIRECT, "es", 2, created_at=time.time() - 120)
        await d.calls.create(old)
        await d.redis.hset(call_key(old.id), mapping={"state": "dispatching",
                                                      "wave_started_at": f"{time.time() - 60:.3f}"})
        await d.redis.hset(responder_key("ana"), mapping={
            "ringing_for": old.id, "last_offered_at": f"{time.time() - 60:.3f}"})
        await d.redis.hset("pr:offers:" + old.id, "ana", "ringing:1")
        reconciler = Reconciler(d)  # type: ignore[arg-type]
        real = reconciler._responder_states

        async def then_rung_elsewhere():
            states = await real()  # read while she rang for the old call...
            await d.redis.hset(responder_key("ana"), "ringing_for", "newer")  # ...now another
            return states

        reconciler._responder_states = then_rung_elsewhere  # type: ignore[method-assign]
        await reconciler.once()
        # The old offer ended; her ringing for the newer call stands.
        assert (await d.redis.hget("pr:offers:" + old.id, "ana")).startswith(b"passed")
        assert await d.redis.hget(responder_key("ana"), "ringing_for") == b"newer"
    finally:
        await d.redis.aclose()


async def test_a_responder_the_pbx_shows_talking_is_busy_again_after_a_lost_write(settings):
    """A Redis failover can lose the last writes: a responder who took a call a moment before
    the primary died may be free in Redis while talking in the call's room. The PBX's listing
    puts them back on that call, so nobody rings them for another (found by bench/soak.py)."""
    d = Dispatcher(settings, Listing([]))
    try:
        call_id = await a_bridged_call(d, "ana", time.time() - 60)
        await d.redis.hset(responder_key("ana"), "on_call_with", "")  # the lost write
        await d.redis.hset(responder_key("ben"), mapping={"on_call_with": "",
                                                          "resting_until": f"{time.time() + 60}"})
        d.ami.uniqueids = [f"caller-{call_id}"]

        async def listing(action, event):
            return [{"Uniqueid": f"caller-{call_id}", "Channel": "PJSIP/x-1",
                     "Context": "pr-waiting", "Application": "ConfBridge"},
                    {"Uniqueid": f"pr-{call_id}-0-1-ana", "Channel": "PJSIP/ana-2",
                     "Context": "pr-responder", "Application": "ConfBridge"},
                    # Ben left another room after the listing was taken: left alone.
                    {"Uniqueid": f"pr-{call_id}-0-1-ben", "Channel": "PJSIP/ben-3",
                     "Context": "pr-responder", "Application": "ConfBridge"}]

        d.ami.listing = listing  # type: ignore[method-assign]
        counts = await Reconciler(d).once()  # type: ignore[arg-type]
        assert counts["busy"] == 1
        assert await d.redis.hget(responder_key("ana"), "on_call_with") == call_id.encode()
        assert await d.redis.hget(responder_key("ben"), "on_call_with") == b""
    finally:
        await d.redis.aclose()
