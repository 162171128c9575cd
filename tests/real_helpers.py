"""The whole line on the real Asterisk: our FastAGI server and dispatcher (in this event
loop), the PBX rendered from our configuration and the world Asterisk around it
(localpbx), real Redis and SQLite. Prompts are short tones (every name the catalog needs)
so a call's questions take seconds, not a minute; what a prompt says doesn't change what
happens."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from crisisline import db
from crisisline.config import Settings
from crisisline.roster.model import RosterSnapshot
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore
from localpbx.harness import RealCall, RealLine
from localpbx.install import installed
from localpbx.netns import open_private_network
from localpbx.tones import short_prompts
from standin.caller import CallerScript
from tests.intake_helpers import Redis, running_agi
from workers.dispatcher.ami import AmiGateway
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.recorder import Recorder

REAL = installed() is not None


@dataclass
class RealSystem:
    settings: Settings
    line: RealLine
    db: Redis
    roster: RosterSnapshot
    dispatchers: list[Dispatcher] = field(default_factory=list)
    _tasks: dict = field(default_factory=dict)
    agi: object = None  # the in-process FastAGI server (agi.server.AgiServer)

    async def call(self, keys: str = "2 02121 2", source: str = "direct",
                   **kw: object) -> RealCall:
        script = CallerScript(keys=keys, stay_s=None, **kw)  # type: ignore[arg-type]
        return await self.line.call(script, source)

    async def set_phones(self, default: str = "answer:1", desk: str = "answer:1",
                         **by_responder: str) -> None:
        """Behaviours by responder id (mapped to their numbers, as the world knows them);
        the fallback desk answers unless told otherwise."""
        phones = {r.id: r.phone for r in self.roster.responders}
        await self.line.set_phones(default, {"fallback-desk": desk, **{
            phones.get(k, k): v for k, v in by_responder.items()}})

    async def start_dispatcher(self, name: str, lease_s: float = 1.5) -> Dispatcher:
        redis = async_redis(self.settings.effective_redis_url)
        gateway = AmiGateway(self.settings)
        await gateway.connect()
        d = Dispatcher(self.settings, CallStore(redis), OfferStore(redis), gateway,
                       lambda: self.roster, name=name, lease_s=lease_s)
        recorder = Recorder(redis, db.engine_for(self.settings), f"rec-{name}",
                            wrapup_s=self.settings.wrapup_s)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)), asyncio.create_task(recorder.run(stop))]
        self.dispatchers.append(d)
        self._tasks[d] = (stop, tasks)
        return d

    async def stop_dispatchers(self) -> None:
        for d, (stop, tasks) in list(self._tasks.items()):
            stop.set()
            for task in [*tasks, *d.tasks.values()]:
                task.cancel()
            d.ami.close()
            await asyncio.wait([*tasks], timeout=5)
        self._tasks.clear()
        self.dispatchers.clear()

    async def wait_call_id(self, call: RealCall, timeout: float = 30) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            cid = call.trace.variables.get("PR_CALL_ID")
            if cid and self.db.call(cid).get("queued_at"):
                return cid
            await asyncio.sleep(0.05)
        raise AssertionError(f"call never queued: {call.trace}")

    async def wait_state(self, call_id: str, states: set[str], timeout: float = 30) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            state = self.db.call(call_id).get("state", "")
            if state in states:
                return state
            await asyncio.sleep(0.05)
        return self.db.call(call_id).get("state", "")


@asynccontextmanager
async def real_system(settings: Settings, roster: RosterSnapshot, state: Path, *,
                      wave_timeout_s: float = 4.0, max_wait_s: float = 60.0,
                      dispatchers: int = 1, desk: bool = True,
                      default_phone: str = "answer:1",
                      agi_first: str | None = None) -> AsyncIterator[RealSystem]:
    """``agi_first``: a FastAGI URL the dialplan tries before ours (a server that is down)."""
    prompts = short_prompts(state / "prompts", settings)
    settings = dataclasses.replace(settings, prompts_dir=str(prompts),
                                   wave_timeout_s=wave_timeout_s, max_wait_s=max_wait_s)
    db.upgrade(settings)
    from crisisline.roster.store import RosterStore

    RosterStore(db.engine_for(settings), settings.timezone).replace_all(roster)
    # As root, both Asterisks run in a network namespace of their own (localpbx.netns): our
    # FastAGI server listens on our side of its veth pair, the dispatcher dials AMI on theirs.
    network = await asyncio.to_thread(open_private_network)
    ours = network.host_address if network else "127.0.0.1"
    try:
        async with running_agi(settings, ours) as agi:
            line = RealLine(state=state / "asterisk", prompts=prompts,
                            prompts_name=settings.asterisk_prompts_path,
                            agi_url=",".join(filter(None, (agi_first,
                                                           f"agi://{ours}:{agi.port}"))),
                            desk=desk,
                            extra_env={"PR_REASSURE_S": str(settings.reassure_s)},
                            network=network)
            system: RealSystem | None = None
            try:
                await line.start()
                assert line.layout is not None
                settings = dataclasses.replace(
                    settings, agi_host=ours, agi_port=agi.port, ami_host=line.layout.host,
                    ami_port=line.layout.ami_port, ami_secret=line.ami_secret)
                system = RealSystem(settings, line, Redis(settings.effective_redis_url), roster,
                                    agi=agi)
                await system.set_phones(default_phone)
                for n in range(dispatchers):
                    await system.start_dispatcher(f"d{n + 1}")
                yield system
            finally:
                if system is not None:
                    await system.stop_dispatchers()
                await line.stop()
    finally:
        if network is not None:
            await asyncio.to_thread(network.close)
