"""What the PBXs say: first rings, responders' room joins (a responder in two rooms at once
is double-booked), the sampler over both nodes' rooms, and the stand-ins' housekeeping."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from bench.soak_parts.constants import DRAIN_TALK_S, LIVE_REPORTS, RESHUFFLE_S, SAMPLE_S, TALK_S
from bench.soak_parts.model import log, responder_of
from bench.soak_parts.state import SoakState
from standin.phones import phones_for


class Watch(SoakState):
    """Watches the PBXs for double-booked responders and keeps them lean."""

    def on_event(self, node: str, e: dict) -> None:
        kind = e.get("Event")
        if kind == "Newchannel":
            uid = str(e.get("Uniqueid", ""))
            if uid.startswith("pr-"):
                self.first_ring.setdefault(uid.split("-")[1], time.time())
        elif kind == "ConfbridgeJoin":
            channel = str(e.get("Channel", ""))
            rid = responder_of(channel)
            if rid:
                where = (node, str(e.get("Conference", "")), channel)
                if self.in_rooms[rid]:
                    self.double(rid, {*self.in_rooms[rid], where})
                self.in_rooms[rid].add(where)
        elif kind == "ConfbridgeLeave":
            rid = responder_of(str(e.get("Channel", "")))
            if rid:
                self.in_rooms[rid].discard((node, str(e.get("Conference", "")),
                                            str(e.get("Channel", ""))))

    def double(self, rid: str, where: set[tuple[str, str, str]]) -> None:
        key = (rid, frozenset((n, r) for n, r, _ in where))
        if key in self._double_seen:
            return
        self._double_seen.add(key)
        text = ", ".join(sorted(f"{n}:{r} ({c})" for n, r, c in where))
        self.pbx_double.append((time.time(), rid, tuple(sorted({r[5:] for _, r, _ in where}))))
        if len(self.pbx_double) <= LIVE_REPORTS:
            log(self.t0, f"!! double-booked at the PBX: {rid} in {text}"
                + (" (further ones: counted, listed at the end)"
                   if len(self.pbx_double) == LIVE_REPORTS else ""))

    async def sampler(self) -> None:
        """Every SAMPLE_S: each responder's phone in at most one room on both nodes; callers
        called back (channels that aren't our callers) hung up after their talk."""
        while True:
            now = time.time()
            seen: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
            for node in self.nodes.values():
                if not node.up:
                    continue
                pbx = node.pbx
                for room, members in pbx.rooms.items():
                    names = [m.name for m in members]
                    responders = [n for n in names if responder_of(n)]
                    for n in responders:
                        seen[responder_of(n)].add((node.name, room, n))
                    if not responders:
                        continue
                    for m in members:
                        if m.name.startswith("PJSIP/direct-trunk") and \
                                m.name not in self.live[node.name]:
                            # By uniqueid: an id() is reused once a channel is freed, and
                            # a new callee that drew a hung-up one's mark was never hung up.
                            key = (node.name, m.uniqueid)
                            due = self.callee_due.setdefault(
                                key, now + (DRAIN_TALK_S if self.draining
                                            else self.rng.uniform(*TALK_S)))
                            if self.draining and due != float("inf"):
                                due = min(due, now + DRAIN_TALK_S)
                            if now >= due:
                                self.callee_due[key] = float("inf")
                                self.spawn(pbx.hangup(m.name))
            for rid, where in seen.items():
                if len(where) > 1:
                    self.double(rid, where)
            await asyncio.sleep(SAMPLE_S)

    async def housekeeping(self) -> None:
        """The stand-in keeps every event and phone leg for tests to inspect: over half an
        hour that is gigabytes and a slower PBX, so what is over is let go. Behaviours are
        drawn again every RESHUFFLE_S."""
        last = time.time()
        while True:
            await asyncio.sleep(10)
            for node in self.nodes.values():
                if node.up:
                    pbx = node.pbx
                    pbx.events.clear()
                    pbx.announcements.clear()
                    table = phones_for(pbx)
                    table.legs = [leg for leg in table.legs if leg.channel in pbx.channels]
                    pbx.dialled = [c for c in pbx.dialled if c.name in pbx.channels]
            if len(self.callee_due) > 5000:
                self.callee_due = {k: v for k, v in self.callee_due.items() if v != float("inf")}
            if self.running and time.time() - last >= RESHUFFLE_S:
                last = time.time()
                self.reshuffle()
