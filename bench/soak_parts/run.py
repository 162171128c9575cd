"""The run: the line started, the callers ramped up, the faults on their schedule, the line
drained, the report; the end (everything stopped) and the event loop's handlers."""

from __future__ import annotations

import asyncio
import logging
import time

from bench.measure import free_port
from bench.realpbx import stop_process
from bench.soak_parts.callers import Callers
from bench.soak_parts.constants import DRAIN_S, STUCK_S
from bench.soak_parts.details import Details
from bench.soak_parts.faults import Faults
from bench.soak_parts.model import Node, log
from bench.soak_parts.records import Records
from bench.soak_parts.report import Report
from bench.soak_parts.topology import Topology
from bench.soak_parts.watch import Watch


class Soak(Topology, Watch, Callers, Faults, Records, Report, Details):
    """One soak run: the line, its callers and faults, and the report."""

    async def run(self) -> int:
        a = self.args
        self.run_s = a.minutes * 60
        self.configure()
        assert self.sentinels is not None
        await asyncio.to_thread(self.sentinels.start)
        self.agi_ports = [free_port(), free_port()]
        p1, p2 = (f"agi://127.0.0.1:{p}" for p in self.agi_ports)
        self.nodes = {"a": Node("a", f"{p1}|{p2}"), "b": Node("b", f"{p2}|{p1}")}
        await asyncio.gather(*(self.start_agi(f"agi-{i + 1}", p)
                               for i, p in enumerate(self.agi_ports)))
        for node in self.nodes.values():
            await self.start_node(node)
        for name in ("dispatcher-1", "dispatcher-2"):
            await self.start_dispatcher(name)
        self.print_header()
        background = [self.spawn(self.sampler()), self.spawn(self.housekeeping())]
        self.t0 = time.time()
        self.running = True
        fault_task = self.spawn(self.faults())
        self.spawn(self.ramp(a.callers, min(30.0, 0.1 * self.run_s)))
        await asyncio.sleep(self.run_s)
        self.running = False
        fault_task.cancel()
        log(self.t0, f"run over: {sum(1 for c in self.callers if c.ended is None)} callers "
                     "on the line are hung up; draining")
        self.draining = True
        drained_in = await self.drain()
        for task in background:
            task.cancel()
        return self.report(drained_in)

    async def drain(self) -> float | None:
        """Until every caller has left and the line has ended every call (Redis and SQL), at
        most DRAIN_S; the seconds it took, or None."""
        start = time.time()
        last, same_since = None, time.time()
        while time.time() - start < DRAIN_S:
            await asyncio.sleep(2)
            if any(c.ended is None for c in self.callers):
                continue
            state = await asyncio.to_thread(self.unfinished)
            if not any(state.values()):
                return time.time() - start
            if state != last:
                last, same_since = state, time.time()
            elif time.time() - same_since > STUCK_S:
                log(self.t0, f"drain stuck for {STUCK_S:.0f} s at {state}: counting now")
                return None
        return None

    async def close(self) -> None:
        self.running = False
        self.draining = True
        for task in list(self.tasks):
            task.cancel()
        for name in ("dispatcher-1", "dispatcher-2", "agi-1", "agi-2"):
            p = self.procs.get(name)
            if p is not None and p.proc is not None:
                await stop_process(p.proc)
        for node in self.nodes.values():
            if node.up and node.server is not None:
                node.up = False
                await node.server.close()
                node.pbx.crash()  # nothing to report the calls to any more

    def kill_all(self) -> None:
        """The last resort (a second Ctrl-C): every process we started, by its Popen."""
        for p in self.procs.values():
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
        if self.sentinels is not None:
            self.sentinels.stop()


async def main_async(soak: Soak) -> int:
    loop = asyncio.get_running_loop()

    def quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if str(context.get("message", "")).startswith("Task was destroyed but it is pending"):
            soak.destroyed_tasks += 1
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)

    class Sends(logging.Filter):
        """asyncio's "socket.send() raised exception." each time the stand-in writes to a
        peer that died (a killed FastAGI server or dispatcher): counted, not printed."""

        def filter(self, record: logging.LogRecord) -> bool:
            if record.getMessage().startswith("socket.send() raised exception"):
                soak.dead_sends += 1
                return False
            return True

    logging.getLogger("asyncio").addFilter(Sends())
    try:
        return await soak.run()
    finally:
        await soak.close()
