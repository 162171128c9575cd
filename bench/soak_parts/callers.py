"""The callers' load: each one dials in on the next node that is up, presses an IVR path,
talks, waits or asks for a callback, and leaves; a new caller replaces each one who leaves."""

from __future__ import annotations

import asyncio
import time

from bench.soak_parts.constants import (
    AREAS,
    CALLBACK_KEYS,
    CALLBACK_SHARE,
    KEYS,
    PATIENCE_S,
    TALK_S,
)
from bench.soak_parts.model import Caller, Node, responder_of
from bench.soak_parts.state import SoakState
from standin.caller import CallerScript
from standin.pbx import StandinPBX


class Callers(SoakState):
    """Keeps the callers on the line."""

    def pick_node(self) -> Node:
        names = list(self.nodes)
        for _ in names:
            node = self.nodes[names[self.next_node % len(names)]]
            self.next_node += 1
            if node.up:
                return node
        raise RuntimeError("no PBX node is up")

    async def new_caller(self) -> None:
        node = self.pick_node()
        n = len(self.callers)
        r = self.rng
        c = Caller(n, node.name, time.time(), r.uniform(*TALK_S), r.uniform(*PATIENCE_S),
                   r.random() < CALLBACK_SHARE)
        number = f"{AREAS[n // 10000 % len(AREAS)]}555{n % 10000:04d}"
        script = CallerScript(keys=r.choice(KEYS), stay_s=None, caller_id_num=number,
                              callback_keys=CALLBACK_KEYS if c.callback else "",
                              leave_after="callback_confirmed" if c.callback else None)
        self.callers.append(c)
        ch = await node.pbx.start_call("from-direct", "6175550100", script)
        c.ch, c.name = ch, ch.name
        self.live[node.name].add(ch.name)
        self.spawn(self.caller_life(c, node, node.pbx))

    async def caller_life(self, c: Caller, node: Node, pbx: StandinPBX) -> None:
        ch = c.ch
        hangup_at: float | None = None
        try:
            while not ch.finished.is_set():
                now = time.time()
                c.call_id = c.call_id or ch.trace.variables.get("PR_CALL_ID", "")
                if hangup_at is None:
                    room = pbx.room(f"call-{c.call_id}") if c.call_id else None
                    if room is not None and ch.name in room.members and \
                            any(responder_of(m) for m in room.members):
                        c.connected_at, c.how = now, "talked"
                        hangup_at = now + c.talk_s
                    elif ch.trace.fallback_dialed:
                        c.connected_at, c.how = now, "fallback desk"
                        hangup_at = now + c.talk_s
                    elif now - c.started > c.patience_s:
                        c.how = "gave up waiting"
                        hangup_at = now
                if self.draining and (hangup_at is None or hangup_at > now):
                    if c.how == "on the line":
                        c.how = "hung up at the end"
                    hangup_at = now
                if hangup_at is not None and now >= hangup_at:
                    await pbx.hangup(ch.name)
                    break
                waiter = asyncio.ensure_future(ch.finished.wait())
                await asyncio.wait({waiter}, timeout=0.5)
                waiter.cancel()
            if c.how == "on the line":
                if not node.up or node.pbx is not pbx:
                    c.how = "dropped (node crash)"
                elif ch.script.leave_after and ch.trace.hung_up_by == "caller":
                    c.how = "left after a callback request"
                else:
                    c.how = f"hung up by the PBX ({ch.trace.hung_up_by})"
        finally:
            c.call_id = c.call_id or ch.trace.variables.get("PR_CALL_ID", "")
            c.ended = time.time()
            c.ch = None
            self.live[c.node].discard(c.name)
            if self.running:
                self.spawn(self.new_caller())

    async def ramp(self, n: int, seconds: float) -> None:
        for i in range(n):
            if not self.running:
                return
            await self.new_caller()
            await asyncio.sleep(max(0.0, self.t0 + seconds * (i + 1) / n - time.time()))
