"""A whole system in one event loop: our FastAGI server, the stand-in PBX with its AMI
server, and the dispatcher (with its recorder) connected to it over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import time
from pathlib import Path

from crisisline import db
from crisisline.config import Settings
from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from crisisline.roster.store import RosterStore
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import OfferStore
from standin.ami import AmiServer
from standin.caller import CallerScript
from standin.phones import PhoneTable, phones_for
from standin.serve import build_pbx
from tests.intake_helpers import EXTEN, Redis, running_agi
from workers.dispatcher.ami import AmiGateway
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.reconcile import Reconciler
from workers.dispatcher.recorder import Recorder

SECRET = "test-secret-0123456789"
TIME_SCALE = 0.02  # PBX seconds -> real seconds: a 5 s prompt plays in 0.1 s


def team_roster(*people: tuple[str, str | None, str, bool]) -> RosterSnapshot:
    """(id, team, languages, backup) for each; everyone on call all week."""
    teams = (Team("dot", "Dorchester team", frozenset({"Dorchester"}), frozenset({"rox"})),
             Team("rox", "Roxbury team", frozenset({"Roxbury"})))
    responders = tuple(Responder(rid, rid.title(), f"PJSIP/{rid}", frozenset(langs.split(",")),
                                 team, backup) for rid, team, langs, backup in people)
    shifts = tuple(Shift(r.id, day, time(0), time(0)) for r in responders for day in range(7))
    return RosterSnapshot(teams, responders, shifts)


@dataclass
class System:
    settings: Settings
    ami: AmiServer
    phones: PhoneTable
    dispatchers: list[Dispatcher]
    db: Redis
    roster: RosterSnapshot
    _tasks: dict[Dispatcher, tuple[asyncio.Event, list[asyncio.Task]]]
    processes: list = dataclasses.field(default_factory=list)
    agi: object = None  # the in-process FastAGI server (agi.server.AgiServer)
    reconcile_s: float = 30.0  # how often dispatchers reconcile Redis with the PBX

    @property
    def pbx(self):
        return self.ami.pbx

    async def call(self, keys: str = "2 02121 2", source: str = "direct", **kw: object):
        """Start a caller (who stays until hung up); returns its channel."""
        script = CallerScript(keys=keys, stay_s=None, **kw)  # type: ignore[arg-type]
        return await self.pbx.start_call(f"from-{source}", EXTEN[source], script)

    def call_id(self, channel) -> str | None:
        return channel.trace.variables.get("PR_CALL_ID")

    async def start_dispatcher(self, name: str, lease_s: float = 1.0) -> Dispatcher:
        redis = async_redis(self.settings.effective_redis_url)
        gateway = AmiGateway(self.settings)
        await gateway.connect()
        d = Dispatcher(self.settings, CallStore(redis), OfferStore(redis), gateway,
                       lambda: self.roster, name=name, lease_s=lease_s)
        recorder = Recorder(redis, db.engine_for(self.settings), f"rec-{name}",
                            wrapup_s=self.settings.wrapup_s)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)), asyncio.create_task(recorder.run(stop)),
                 asyncio.create_task(Reconciler(d, every_s=self.reconcile_s).run(stop))]
        self.dispatchers.append(d)
        self._tasks[d] = (stop, tasks)
        return d

    def start_dispatcher_process(self) -> subprocess.Popen:
        """`peoples-response dispatcher` as its own process (reads the roster from SQL)."""
        RosterStore(db.engine_for(self.settings), self.settings.timezone).replace_all(self.roster)
        env = {**os.environ, "PR_VAR_DIR": self.settings.var_dir,
               "PR_REDIS_URL": self.settings.effective_redis_url,
               "PR_AMI_PORT": str(self.settings.ami_port), "PR_AMI_SECRET": SECRET,
               "PR_WAVE_TIMEOUT_S": str(self.settings.wave_timeout_s),
               "PR_MAX_WAIT_S": str(self.settings.max_wait_s), "PR_DISPATCH_LEASE_S": "1.5",
               "PR_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-m", "peoples_response.cli", "dispatcher"],
                                env=env, stdout=subprocess.DEVNULL)
        self.processes.append(proc)
        return proc

    async def kill(self, d: Dispatcher) -> None:
        """As kill -9: no clean-up at all, tasks just stop."""
        _, tasks = self._tasks.pop(d)
        every = [*tasks, *d.tasks.values()]
        for task in every:
            task.cancel()
        d.ami.close()
        # Bounded: a kill doesn't wait for anyone's clean-up.
        await asyncio.wait(every, timeout=2)
        self.dispatchers.remove(d)

    async def wait_state(self, call_id: str, states: set[str], timeout: float = 15) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            state = self.db.call(call_id).get("state", "")
            if state in states:
                return state
            await asyncio.sleep(0.02)
        return self.db.call(call_id).get("state", "")

    async def wait_call_id(self, channel, timeout: float = 10) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if (cid := self.call_id(channel)) and self.db.call(cid).get("queued_at"):
                return cid
            await asyncio.sleep(0.02)
        raise AssertionError(f"{channel.name} never queued")

    async def wait_offers(self, call_id: str, who: str | None = None, timeout: float = 10) -> None:
        """Until someone (or ``who``) is being offered the call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            offers = self.offers(call_id)
            if offers and (who is None or who in offers):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"nobody was offered {call_id}")

    def offers(self, call_id: str) -> dict[str, str]:
        return self.db.client.hgetall(f"pr:offers:{call_id}")


@asynccontextmanager
async def running_system(settings: Settings, roster: RosterSnapshot, *, wave_timeout_s: float = 1.0,
                         max_wait_s: float = 30.0, dispatchers: int = 1,
                         default_phone: str = "answer:5",
                         tweak: Callable[[Settings], Settings] | None = None) -> AsyncIterator[System]:
    settings = dataclasses.replace(settings, ami_secret=SECRET, ami_port=0, wave_timeout_s=wave_timeout_s,
                                   max_wait_s=max_wait_s)
    db.upgrade(settings)
    async with running_agi(settings) as agi:
        settings = dataclasses.replace(settings, agi_port=agi.port)
        if tweak:
            settings = tweak(settings)
        pbx = build_pbx(settings, time_scale=TIME_SCALE)
        server = AmiServer(pbx, username=settings.ami_user, secret=SECRET, host="127.0.0.1", port=0,
                           auth_fail_delay_s=0.01)
        await server.start()
        settings = dataclasses.replace(settings, ami_port=server.port)
        phones = phones_for(pbx)
        phones.set_default(default_phone)
        system = System(settings, server, phones, [], Redis(settings.effective_redis_url), roster, {},
                        agi=agi)
        try:
            for n in range(dispatchers):
                await system.start_dispatcher(f"d{n + 1}")
            yield system
        finally:
            for proc in system.processes:
                proc.kill()
                proc.wait(10)
            for d in list(system.dispatchers):
                await system.kill(d)
            await pbx.close()
            await server.close()


def prompts_of(channel) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in channel.trace.prompts]


__all__ = ["TIME_SCALE", "Path", "System", "prompts_of", "running_system", "team_roster"]
