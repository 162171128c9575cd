"""The fault schedule: what is killed when (fractions of the run), and each fault done and
undone (kill -9 of a FastAGI server, a dispatcher or the Redis primary; a PBX node crashed)."""

from __future__ import annotations

import asyncio
import time

from bench.soak_parts.model import log
from bench.soak_parts.state import SoakState

# (what, at, back): fractions of the run.
FAULTS = (("agi-1", 0.15, 0.25), ("dispatcher-1", 0.30, 0.38), ("redis", 0.45, 0.52),
          ("node-a", 0.60, 0.63), ("redis", 0.75, 0.82))
FAULT_TEXT = {"agi-1": "kill -9 FastAGI server 1", "dispatcher-1": "kill -9 dispatcher 1",
              "redis": "kill -9 the Redis primary", "node-a": "crash PBX node a"}
WINDOW_TEXT = {"agi-1": "FastAGI 1 killed", "dispatcher-1": "dispatcher 1 killed",
               "redis": "Redis primary killed", "node-a": "node a crashed"}
BACK_TEXT = {"agi-1": "FastAGI server 1 started again",
             "dispatcher-1": "dispatcher 1 started again",
             "redis": "the killed Redis back as a replica", "node-a": "node a started again"}
MIN_DOWN_S = 5.0


class Faults(SoakState):
    """Runs the fault schedule."""

    def schedule(self) -> list[tuple[float, str, str]]:
        """(seconds into the run, what, "down"|"back"), in time order."""
        if self.args.no_faults:
            return []
        out = []
        for what, at, back in FAULTS:
            if what == "redis" and self.args.redis == "plain":
                continue  # no replica to promote
            down = at * self.run_s
            out += [(down, what, "down"), (max(back * self.run_s, down + MIN_DOWN_S), what,
                                            "back")]
        return sorted(out)

    async def faults(self) -> None:
        killed_redis: list[int] = []
        for at, what, step in self.schedule():
            await asyncio.sleep(max(0.0, self.t0 + at - time.time()))
            if not self.running:
                return
            try:
                await self.fault(what, step, killed_redis)
            except Exception as exc:  # say so, and go on with the rest of the run
                log(self.t0, f"!! fault {what} {step} failed: {exc!r}")

    async def fault(self, what: str, step: str, killed_redis: list[int]) -> None:
        t = time.time()
        if step == "down":
            self.faults_done.append((t - self.t0, what))
        if what in ("agi-1", "dispatcher-1"):
            p = self.procs[what]
            if step == "down":
                pid = p.proc.pid if p.proc else 0
                await asyncio.to_thread(p.kill)
                log(self.t0, f"{FAULT_TEXT[what]} (pid {pid})")
            elif what == "agi-1":
                await self.start_agi(what, self.agi_ports[0])
                log(self.t0, f"{BACK_TEXT[what]} (ready in {time.time() - t:.1f} s)")
            else:
                await self.start_dispatcher(what)
                log(self.t0, f"{BACK_TEXT[what]} (AMI up in {time.time() - t:.1f} s)")
        elif what == "redis":
            assert self.sentinels is not None
            if step == "down":
                port = await asyncio.to_thread(self.sentinels.kill_primary)
                killed_redis.append(port)
                new = await asyncio.to_thread(self.sentinels.wait_promoted, port)
                log(self.t0, f"{FAULT_TEXT[what]} (:{port}); sentinels promoted :{new} in "
                             f"{time.time() - t:.1f} s")
            else:
                port = killed_redis[-1]
                await asyncio.to_thread(self.sentinels.restart_as_replica, port)
                log(self.t0, f"{BACK_TEXT[what]} (:{port}, in sync in {time.time() - t:.1f} s)")
        elif what == "node-a":
            node = self.nodes["a"]
            if step == "down":
                calls = len(node.pbx.channels)
                await self.crash_node(node)
                log(self.t0, f"{FAULT_TEXT[what]} ({calls} channels gone)")
            else:
                await self.start_node(node)
                log(self.t0, f"{BACK_TEXT[what]} (AMI on :{node.port} again)")
