"""A line of two Asterisk nodes (stand-ins here; the real Asterisk behind Kamailio is
tests/test_kamailio.py): one FastAGI server, one dispatcher holding an AMI session to each
node (PR_PBX_NODES). Both nodes name their channels alike (PJSIP/direct-trunk-00000001 on
each), so every channel is kept as ``<node>|<channel>``; a responder is rung on the caller's
node, and the record says which node that was. A node restarted: its calls end as what
they were, and the other node's callers carry on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from crisisline import db
from crisisline.config import Settings
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore
from localpbx.tones import short_prompts
from standin.ami import AmiServer
from standin.caller import CallerScript
from standin.phones import phones_for
from standin.serve import build_pbx
from tests.dispatch_helpers import SECRET, TIME_SCALE, team_roster
from tests.intake_helpers import EXTEN, Redis, running_agi, until
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.nodes import PbxNodes
from workers.dispatcher.reconcile import Reconciler
from workers.dispatcher.recorder import Recorder

ROSTER = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en,es", False),
                     ("cy", "dot", "en,es", False), ("dee", "dot", "en,es", False))


@dataclass
class Node:
    name: str
    server: AmiServer

    @property
    def pbx(self):
        return self.server.pbx


@dataclass
class Line:
    settings: Settings
    nodes: dict[str, Node]
    db: Redis
    gateway: PbxNodes | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def call(self, node: str, keys: str = "2 02121 2"):
        script = CallerScript(keys=keys, stay_s=None)
        return await self.nodes[node].pbx.start_call("from-direct", EXTEN["direct"], script)

    async def call_id(self, channel, timeout: float = 10) -> str:
        assert await until(lambda: channel.trace.variables.get("PR_CALL_ID")
                           and self.db.call(channel.trace.variables["PR_CALL_ID"])
                           .get("queued_at"), timeout), channel.trace
        return channel.trace.variables["PR_CALL_ID"]

    async def state(self, call_id: str, states: set[str], timeout: float = 15) -> str:
        await until(lambda: self.db.call(call_id).get("state") in states, timeout)
        return self.db.call(call_id).get("state", "")

    async def start_node(self, name: str, port: int = 0) -> Node:
        pbx = build_pbx(self.settings, time_scale=TIME_SCALE, node=name)
        phones_for(pbx).set_default("answer:5")
        server = AmiServer(pbx, username=self.settings.ami_user, secret=SECRET,
                           host="127.0.0.1", port=port, auth_fail_delay_s=0.01)
        await server.start()
        self.nodes[name] = Node(name, server)
        return self.nodes[name]

    async def stop_node(self, name: str, crash: bool = False) -> None:
        node = self.nodes.pop(name)
        if crash:  # kill -9: its AMI sessions drop, its calls vanish without a trace
            await node.server.close()
            node.pbx.crash()
            return
        await node.pbx.close()
        await node.server.close()


@asynccontextmanager
async def two_nodes(settings: Settings, tmp_path: Path,
                    reconcile_s: float = 1.0) -> AsyncIterator[Line]:
    settings = dataclasses.replace(settings, ami_secret=SECRET, wave_timeout_s=2.0,
                                   max_wait_s=30.0, languages=("en", "es"), wrapup_s=0)
    settings = dataclasses.replace(settings, prompts_dir=str(short_prompts(tmp_path / "prompts",
                                                                           settings)))
    db.upgrade(settings)
    async with running_agi(settings) as agi:
        settings = dataclasses.replace(settings, agi_port=agi.port)
        line = Line(settings, {}, Redis(settings.effective_redis_url))
        for name in ("a", "b"):
            await line.start_node(name)
        line.settings = settings = dataclasses.replace(settings, pbx_nodes={
            n: f"127.0.0.1:{node.server.port}" for n, node in line.nodes.items()})
        redis = async_redis(settings.effective_redis_url)
        gateway = PbxNodes(settings, redis)
        await gateway.connect()
        line.gateway = gateway
        d = Dispatcher(settings, CallStore(redis), OfferStore(redis), gateway, lambda: ROSTER,
                       name="d1", lease_s=1.0)
        recorder = Recorder(redis, db.engine_for(settings), "rec-d1", wrapup_s=settings.wrapup_s)
        stop = asyncio.Event()
        line.tasks = [asyncio.create_task(d.run(stop)), asyncio.create_task(recorder.run(stop)),
                      asyncio.create_task(Reconciler(d, every_s=reconcile_s).run(stop))]
        try:
            yield line
        finally:
            stop.set()
            for task in [*line.tasks, *d.tasks.values()]:
                task.cancel()
            gateway.close()
            await asyncio.wait(line.tasks, timeout=5)
            for name in list(line.nodes):
                await line.stop_node(name)
            await redis.aclose()


async def test_each_caller_is_connected_on_their_own_node(settings, tmp_path) -> None:
    async with two_nodes(settings, tmp_path) as line:
        on_a = await line.call("a")
        on_b = await line.call("b")
        assert on_a.name == on_b.name  # the same channel name on both nodes
        a_id, b_id = await line.call_id(on_a), await line.call_id(on_b)
        assert await line.state(a_id, {"bridged"}) == "bridged"
        assert await line.state(b_id, {"bridged"}) == "bridged"
        for call_id, node, channel in ((a_id, "a", on_a), (b_id, "b", on_b)):
            record = line.db.call(call_id)
            assert record["pbx_node"] == node
            assert record["channel"] == f"{node}|{channel.name}"
            # The responder who took it was rung on that node, and is in the caller's room
            # there: nobody was moved across nodes, nobody met the other node's caller.
            pbx, room = line.nodes[node].pbx, f"call-{call_id}"
            assert await until(lambda p=pbx, r=room: len(p.rooms.get(r, ())) == 2, 10), node
            assert channel in pbx.rooms[room]
        assert line.db.call(a_id)["accepted_by"] != line.db.call(b_id)["accepted_by"]


async def test_a_restarted_node_ends_its_calls_and_the_other_carries_on(settings,
                                                                     tmp_path) -> None:
    async with two_nodes(settings, tmp_path) as line:
        on_a = await line.call("a")
        a_id = await line.call_id(on_a)
        assert await line.state(a_id, {"bridged"}) == "bridged"
        taken_by = line.db.call(a_id)["accepted_by"]
        port = line.nodes["a"].server.port
        await line.stop_node("a", crash=True)  # Asterisk on node a dies with its calls
        on_b = await line.call("b")  # a caller meanwhile, on the other node
        b_id = await line.call_id(on_b)
        assert await line.state(b_id, {"bridged"}) == "bridged"
        await line.start_node("a", port)  # node a is back, empty
        # The call that was on node a ends as what it was (a conversation), never "lost".
        assert await line.state(a_id, {"ended"}, 20) == "ended"
        record = line.db.call(a_id)
        assert record["end_reason"] == "pbx_gone"
        # Its responder is free again: the next caller on node a can reach them.
        assert await until(lambda: not line.db.client.hget(f"pr:responder:{taken_by}",
                                                           "on_call_with"), 20)
        again = await line.call("a")
        again_id = await line.call_id(again)
        assert await line.state(again_id, {"bridged"}) == "bridged"
        assert line.db.call(again_id)["pbx_node"] == "a"
