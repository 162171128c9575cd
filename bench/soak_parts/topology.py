"""The line's start-up on loopback: the settings and the roster, the two stand-in PBX nodes
(and a node's crash), and the FastAGI and dispatcher processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
import time
from datetime import time as dtime

from bench.sentinels import Sentinels, wait_listening
from bench.soak_parts.constants import BEHAVIOURS, CALLEE, SECRET, SERVICE, TIME_SCALE
from bench.soak_parts.model import Node, Proc
from bench.soak_parts.state import SoakState
from crisisline import config, db
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from crisisline.roster.store import RosterStore
from localpbx.tones import short_prompts
from standin.ami import AmiServer
from standin.phones import phones_for
from standin.serve import build_pbx


def roster(n: int) -> RosterSnapshot:
    """n responders, 60% in the Dorchester team, 40% in Roxbury (adjacent), all speaking
    English and Spanish, on call all week."""
    teams = (Team("dot", "Dorchester", frozenset({"Dorchester"}), frozenset({"rox"})),
             Team("rox", "Roxbury", frozenset({"Roxbury"}), frozenset({"dot"})))
    people = tuple(Responder(f"r{i:04d}", f"R{i}", f"PJSIP/r{i:04d}", frozenset({"en", "es"}),
                             "dot" if i % 5 < 3 else "rox") for i in range(n))
    shifts = tuple(Shift(r.id, d, dtime(0), dtime(0)) for r in people for d in range(7))
    return RosterSnapshot(teams, people, shifts)


class Topology(SoakState):
    """Starts the line's parts and crashes a node."""

    def configure(self) -> None:
        a = self.args
        self.rng = random.Random(a.seed)
        self.sentinels = Sentinels(self.tmp / "redis", SERVICE, plain=a.redis == "plain")
        env = {"PR_VAR_DIR": str(self.tmp), "PR_LANGUAGES": "en,es",
               "PR_REDIS_URL": self.sentinels.url, "PR_WRAPUP_S": "10",
               "PR_CALLBACK_RETRY_S": "30"}
        if a.redis == "sentinel":
            env.update(PR_REDIS_SENTINELS=self.sentinels.addresses, PR_REDIS_SERVICE=SERVICE)
        base = config.load(env=env)
        base = dataclasses.replace(base, prompts_dir=str(short_prompts(self.tmp / "prompts",
                                                                       base)))
        self.settings = dataclasses.replace(base, ami_secret=SECRET)
        # Our own settings only: a PR_ variable of the shell (a secret, a port) must not leak in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PR_")}
        self.env.update(env, PR_PROMPTS_DIR=str(self.settings.prompts_path),
                        PR_AMI_SECRET=SECRET, PR_LOG_LEVEL="WARNING")
        db.upgrade(self.settings)
        self.engine = db.engine_for(self.settings)
        RosterStore(self.engine, self.settings.timezone).replace_all(
            roster(a.responders))
        self.reshuffle()

    def reshuffle(self) -> None:
        """Everyone's phone behaviour, drawn again (people are sometimes busy, sometimes not)."""
        kinds, weights = zip(*BEHAVIOURS, strict=True)
        for i in range(self.args.responders):
            kind = self.rng.choices(kinds, weights)[0]
            if kind in ("answer", "answer-late"):
                kind = f"{kind}:{self.rng.uniform(1, 6 if kind == 'answer' else 4):.1f}"
            self.behaviours[f"r{i:04d}"] = kind
        for node in self.nodes.values():
            if node.up:
                phones_for(node.pbx).replace(self.behaviours, default=CALLEE)

    async def start_node(self, node: Node) -> None:
        pbx = build_pbx(self.settings, time_scale=TIME_SCALE, node=node.name)
        pbx.interp.globals["PR_AGI"] = node.agi
        pbx.fallback_answers = True  # the fallback desk picks up (a person, not a loop)
        phones_for(pbx).replace(self.behaviours, default=CALLEE)
        pbx.subscribe(lambda e, n=node.name: self.on_event(n, e))
        server = AmiServer(pbx, username=self.settings.ami_user, secret=SECRET,
                           host="127.0.0.1", port=node.port, auth_fail_delay_s=0.01)
        await server.start()
        node.pbx, node.server, node.port, node.up = pbx, server, server.port, True

    async def crash_node(self, node: Node) -> None:
        """As kill -9 of Asterisk: AMI sessions drop, every channel is gone without a trace."""
        node.up = False
        self.crashes.append((node.name, time.time()))
        assert node.server is not None
        await node.server.close()
        node.pbx.crash()
        for rid in list(self.in_rooms):
            self.in_rooms[rid] = {x for x in self.in_rooms[rid] if x[0] != node.name}
        self.live[node.name].clear()

    def start_proc(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        p = self.procs.get(name) or Proc(name, args, env, self.tmp / "logs" / f"{name}.log")
        self.procs[name] = p
        p.log.parent.mkdir(exist_ok=True)
        p.start()
        return p

    async def wait_log(self, p: Proc, marker: str, seconds: float = 60) -> None:
        """Until this incarnation of ``p`` has printed ``marker`` (one per start, in its log)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if p.log.read_text(errors="replace").count(marker) >= p.starts:
                return
            if p.proc is not None and p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited: see {p.log}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{p.name} not ready in {seconds:g} s: see {p.log}")

    async def start_agi(self, name: str, port: int) -> None:
        exe = [sys.executable, "-m", "peoples_response.cli"]
        self.start_proc(name, [*exe, "agi", "--port", str(port)], {**self.env,
                                                                   "PR_AGI_PORT": str(port)})
        await asyncio.to_thread(wait_listening, port, 60)

    async def start_dispatcher(self, name: str) -> None:
        exe = [sys.executable, "-m", "peoples_response.cli"]
        nodes = ",".join(f"{n.name}=127.0.0.1:{n.port}" for n in self.nodes.values())
        p = self.start_proc(name, [*exe, "dispatcher"], {**self.env, "PR_PBX_NODES": nodes})
        await self.wait_log(p, "peoples-response dispatcher: AMI")
