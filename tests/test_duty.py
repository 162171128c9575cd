"""One dispatcher acts on a node's events, the others keep the last seconds of them and take
over when it is gone, acting again on what it may have missed (workers/dispatcher/duty.py).
Real Redis; the AMI sessions are stand-ins that only say whether they are up."""

from __future__ import annotations

import asyncio

import pytest

from crisisline.stores import async_redis
from workers.dispatcher.duty import DUTY_TTL_S, RENEW_S, REPLAY_S, Duty, duty_key


class Session:
    def __init__(self, up: bool = True) -> None:
        self.listening_since: float | None = 1.0 if up else None


class Nodes:
    """Where the dispatcher's AMI gateway stands: a session per node, handlers to call."""

    def __init__(self, *names: str) -> None:
        self.gateways = {name: Session() for name in names}
        self.handlers: list = []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dispatcher:
    """What a dispatcher makes of events: the rooms it notes, the events it acts on."""

    def __init__(self, name: str, redis, nodes: Nodes, clock: Clock | None = None) -> None:
        self.observed: list[str] = []
        self.acted: list[str] = []
        self.duty = Duty(name, redis, nodes, self._observe, self._act, clock or Clock(),
                         wants=lambda event: not event["n"].startswith("ignored"))

    def _observe(self, event: dict[str, str]) -> None:
        self.observed.append(event["n"])

    async def _act(self, event: dict[str, str]) -> None:
        self.acted.append(event["n"])


@pytest.fixture
async def redis(settings):
    client = async_redis(settings.effective_redis_url)
    yield client
    await client.aclose()


async def renewed(*ds: Dispatcher) -> None:
    """Each renews (or tries to take) its duties, in this order: the first takes them."""
    for d in ds:
        await d.duty.renew()


async def hear(ds: list[Dispatcher], node: str, n: str) -> None:
    for d in ds:
        await d.duty.on_event({"Event": "Hangup", "PRNode": node, "n": n})


async def test_one_dispatcher_acts_on_a_nodes_events_and_every_one_notes_them(redis):
    nodes = Nodes("a", "b")
    d1, d2 = Dispatcher("d1", redis, nodes), Dispatcher("d2", redis, nodes)
    await renewed(d1, d2)
    assert await redis.get(duty_key("a")) == b"d1" and await redis.get(duty_key("b")) == b"d1"
    assert 0 < await redis.pttl(duty_key("a")) <= DUTY_TTL_S * 1000  # runs out if not renewed
    await hear([d1, d2], "a", "1")
    await hear([d1, d2], "b", "2")
    assert d1.acted == ["1", "2"] and d2.acted == []
    assert d1.observed == d2.observed == ["1", "2"]


async def test_a_dispatcher_gone_is_taken_over_and_what_it_may_have_missed_acted_on(redis):
    clock = Clock()
    nodes = Nodes("a")
    d1, d2 = Dispatcher("d1", redis, nodes, clock), Dispatcher("d2", redis, nodes, clock)
    await renewed(d1, d2)
    await hear([d2], "a", "old")
    clock.now += RENEW_S
    await renewed(d1, d2)
    clock.now += REPLAY_S  # "old" is too long ago to matter to whoever takes over
    await renewed(d1, d2)
    # d1 is killed: it renews no more and acts on nothing; d2 keeps what it hears meanwhile.
    await hear([d2], "a", "missed-1")
    clock.now += RENEW_S
    await d2.duty.renew()
    assert d2.acted == []  # d1's duty has not run out yet
    await hear([d2], "a", "missed-2")
    clock.now += RENEW_S
    await redis.delete(duty_key("a"))  # d1's duty ran out (DUTY_TTL_S unrenewed)
    await d2.duty.renew()  # d2 takes it and acts on the gap
    await asyncio.sleep(0.05)
    assert await redis.get(duty_key("a")) == b"d2"
    assert d2.acted == ["missed-1", "missed-2"] and d2.duty.replayed == 2
    await hear([d2], "a", "new")
    assert d2.acted[-1] == "new"


async def test_a_dispatcher_deaf_to_a_node_hands_its_duty_over_at_once(redis):
    nodes1, nodes2 = Nodes("a"), Nodes("a")
    d1, d2 = Dispatcher("d1", redis, nodes1), Dispatcher("d2", redis, nodes2)
    await renewed(d1, d2)
    nodes1.gateways["a"].listening_since = None  # d1's AMI session to node a went down
    await d1.duty.renew()
    assert await redis.get(duty_key("a")) is None
    await d2.duty.renew()
    assert await redis.get(duty_key("a")) == b"d2"
    await hear([d2], "a", "1")
    assert d2.acted == ["1"]


async def test_without_redis_to_ask_a_dispatcher_acts_rather_than_miss_an_event(redis):
    clock = Clock()
    nodes = Nodes("a")
    d1, d2 = Dispatcher("d1", redis, nodes, clock), Dispatcher("d2", redis, nodes, clock)
    await renewed(d1, d2)
    await hear([d2], "a", "1")
    assert d2.acted == []

    async def unreachable(**_kw):
        raise ConnectionError("Redis is down")

    d2.duty._hold = unreachable
    clock.now += RENEW_S
    await d2.duty.renew()
    await hear([d2], "a", "2")
    assert d2.acted == []  # not long enough unanswered to doubt the one on duty
    clock.now += DUTY_TTL_S
    await d2.duty.renew()
    await hear([d2], "a", "3")
    await asyncio.sleep(0.05)
    # Acting again: on what it kept since it last knew someone was on duty, too.
    assert sorted(d2.acted) == ["1", "2", "3"]


async def test_a_dispatcher_that_stops_gives_its_duty_up(redis):
    d1 = Dispatcher("d1", redis, Nodes("a"))
    stop = asyncio.Event()
    task = asyncio.create_task(d1.duty.run(stop))
    for _ in range(100):
        if await redis.get(duty_key("a")):
            break
        await asyncio.sleep(0.01)
    assert await redis.get(duty_key("a")) == b"d1"
    stop.set()
    await task
    assert await redis.get(duty_key("a")) is None


async def test_a_dispatcher_whose_duty_never_ran_acts_on_everything(redis):
    d = Dispatcher("d1", redis, Nodes("a"))
    await hear([d], "a", "1")
    await hear([d], "", "2")  # (a node it doesn't know of)
    assert d.acted == ["1", "2"]


async def test_events_nothing_acts_on_are_noted_but_neither_acted_on_nor_kept(redis):
    """What the gateway asks of every event as it is read (AmiGateway.sift): no task for an
    event no handler acts on, and no copy kept for a replay."""
    nodes = Nodes("a")
    clock = Clock()
    d1, d2 = Dispatcher("d1", redis, nodes, clock), Dispatcher("d2", redis, nodes, clock)
    await renewed(d1, d2)
    assert nodes.sift == d2.duty.sift and d2.duty.act in nodes.handlers  # (the last one's)
    for d in (d1, d2):
        assert d.duty.sift({"Event": "ConfbridgeLeave", "PRNode": "a", "n": "ignored-1"}) is False
    assert d1.duty.sift({"Event": "Hangup", "PRNode": "a", "n": "2"}) is True  # on duty
    assert d2.duty.sift({"Event": "Hangup", "PRNode": "a", "n": "2"}) is False  # kept instead
    assert d1.observed == d2.observed == ["ignored-1", "2"]
    assert [e["n"] for _, e in d2.duty.nodes["a"].kept] == ["2"]
