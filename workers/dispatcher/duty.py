"""Which dispatcher acts on each Asterisk node's events.

Every dispatcher keeps an AMI session to every node and hears every event: it must, to take
over the moment another dies. But acting on an event (a leg up, a leg gone, two people in a
room) is Redis writes, and two dispatchers each making every one of them cost twice the CPU
of one for nothing (the writes are idempotent). So for each node one dispatcher is on duty:
it holds ``pr:duty:<node>`` in Redis, renewed every RENEW_S while its session to that node
is up, and acts; the others only note who is in which room (CallWatch.observe) and keep the
last REPLAY_S of events.

When the one on duty dies (kill -9) or loses that node, its key runs out within DUTY_TTL_S,
another takes it and replays what it kept from the last REPLAY_S, which covers the gap: the
events the old one had already acted on come out the same twice, and none is lost between
the two. A dispatcher that can't reach Redis to ask acts anyway (twice is safe, never is
not); so does one whose duty loop has not run yet (tests that drive events by hand).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)
DUTY_TTL_S = 3.0
RENEW_S = 1.0
REPLAY_S = DUTY_TTL_S + 2 * RENEW_S  # the longest gap between two holders, and a margin
DUTY_PREFIX = "pr:duty:"

# Take the duty if nobody holds it, or keep it if we do. KEYS: duty key; ARGV: our name, ttl
# (ms). Returns 1 when we hold it after.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Give it up if ours (a stop, or the node's session lost).
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def duty_key(node: str) -> str:
    return f"{DUTY_PREFIX}{node or 'pbx'}"


class NodeDuty:
    """One node's duty as this dispatcher sees it."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.held = False
        self.asked_at = float("-inf")  # (Duty.clock) when Redis last answered about it
        self.was_acting = True
        self.kept: collections.deque[tuple[float, dict[str, str]]] = collections.deque()

    def acting(self, now: float) -> bool:
        return self.held or now - self.asked_at > DUTY_TTL_S

    def keep(self, now: float, event: dict[str, str]) -> None:
        self.kept.append((now, event))
        while self.kept and now - self.kept[0][0] > REPLAY_S:
            self.kept.popleft()


class Duty:
    """The gate between the AMI sessions and CallWatch (see the module's doc)."""

    def __init__(self, name: str, redis: Any, ami: Any,
                 observe: Callable[[dict[str, str]], None],
                 act: Callable[[dict[str, str]], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic,
                 wants: Callable[[dict[str, str]], bool] = lambda _event: True) -> None:
        self.name = name
        self.clock = clock
        self.observe = observe
        self.act = act
        self.wants = wants  # whether act() does anything with an event (CallWatch.wants)
        # node -> its AMI session (one PBX: one session, node "").
        self.sessions: dict[str, Any] = dict(getattr(ami, "gateways", None) or {"": ami})
        self.nodes = {node: NodeDuty(node) for node in self.sessions}
        self._hold = redis.register_script(_HOLD)
        self._drop = redis.register_script(_DROP)
        self._replays: set[asyncio.Task] = set()
        self.replayed = 0  # events acted on again on taking a duty over (tests, logs)
        ami.sift = self.sift
        ami.handlers.append(self.act)

    def sift(self, event: dict[str, str]) -> bool:
        """As each event is read (AmiGateway.sift): noted, and True when this dispatcher is
        to act on it; one it is not on duty for is kept for a replay instead."""
        self.observe(event)
        if not self.wants(event):
            return False
        duty = self.nodes.get(event.get("PRNode", ""))
        if duty is None or self._acting(duty):
            return True
        duty.keep(self.clock(), event)
        return False

    async def on_event(self, event: dict[str, str]) -> None:
        """Both at once (tests that drive events by hand)."""
        if self.sift(event):
            await self.act(event)

    def _acting(self, duty: NodeDuty) -> bool:
        """Whether to act on the node's events now; on becoming so (the duty taken over, or
        Redis unanswered for DUTY_TTL_S), first on what was kept meanwhile."""
        acting = duty.acting(self.clock())
        if acting and not duty.was_acting:
            self._take_over(duty)
        duty.was_acting = acting
        return acting

    async def run(self, stop: asyncio.Event) -> None:
        """Hold (or try to take) each node's duty while its session is up, every RENEW_S."""
        try:
            while not stop.is_set():
                await self.renew()
                try:
                    await asyncio.wait_for(stop.wait(), RENEW_S)
                except TimeoutError:
                    pass
        finally:
            await self.release()

    async def renew(self) -> None:
        ttl_ms = str(int(DUTY_TTL_S * 1000))
        for node, duty in self.nodes.items():
            listening = self.sessions[node].listening_since is not None
            try:
                if not listening:
                    # Deaf to that node: someone who hears it takes the duty at once.
                    if duty.held:
                        await self._drop(keys=[duty_key(node)], args=[self.name])
                        duty.held = False
                    continue
                held = bool(await self._hold(keys=[duty_key(node)], args=[self.name, ttl_ms]))
            except Exception as exc:
                log.debug("%s: duty for node %r unknown (%s)", self.name, node, exc)
                continue  # (acting again once DUTY_TTL_S passes unanswered)
            duty.held, duty.asked_at = held, self.clock()
            self._acting(duty)

    def _take_over(self, duty: NodeDuty) -> None:
        """Acting now: first on what the last holder may have missed."""
        now = self.clock()
        events = [event for at, event in duty.kept if now - at <= REPLAY_S]
        duty.kept.clear()
        if not events:
            return
        log.warning("%s: on duty for node %r now; acting on the last %d event(s) again",
                 self.name, duty.node, len(events))
        self.replayed += len(events)
        task = asyncio.create_task(self._replay(events))
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(self, events: list[dict[str, str]]) -> None:
        for event in events:  # in the order heard
            try:
                await self.act(event)
            except Exception:
                log.exception("replaying %s failed", event.get("Event"))

    async def release(self) -> None:
        """Stopping: hand each duty held on at once rather than after DUTY_TTL_S."""
        for node, duty in self.nodes.items():
            if duty.held:
                try:
                    await self._drop(keys=[duty_key(node)], args=[self.name])
                except Exception:
                    pass
                duty.held = False
