"""``peoples-response dispatcher``: the dispatcher, the recorder and supervisor commands,
in one asyncio process that alone talks to AMI."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from crisisline import db, destinations
from crisisline.config import Settings
from crisisline.roster.model import RosterSnapshot
from crisisline.roster.store import RosterStore
from crisisline.shutdown import stop_on_signals
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore, call_key
from crisisline.stores.offers import COMMANDS, OfferStore
from workers.dispatcher.ami import AmiGateway, leg_id
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.recorder import Recorder

log = logging.getLogger(__name__)
ROSTER_TTL_S = 15.0


class RosterCache:
    """The roster from SQL, read at most every ROSTER_TTL_S: not on every wave."""

    def __init__(self, settings: Settings) -> None:
        self.store = RosterStore(db.engine_for(settings), settings.timezone)
        self._snapshot = RosterSnapshot(timezone=settings.timezone)
        self._at = 0.0

    async def refresh(self) -> None:
        try:
            self._snapshot = await asyncio.to_thread(self.store.snapshot)
            self._at = time.monotonic()
        except Exception as exc:
            log.error("roster unavailable, using the last one read: %s", exc)

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            try:
                await asyncio.wait_for(stop.wait(), ROSTER_TTL_S)
            except TimeoutError:
                pass

    def __call__(self) -> RosterSnapshot:
        return self._snapshot


class Commands:
    """Supervisor actions from the panel (stream ``pr:commands``)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher

    async def run(self, stop: asyncio.Event) -> None:
        redis = self.d.redis
        last = "$"
        while not stop.is_set():
            try:
                got = await redis.xread({COMMANDS: last}, count=50, block=500)
            except Exception as exc:
                log.warning("commands: %s", exc)
                await asyncio.sleep(1)
                continue
            for _, entries in got or []:
                for eid, body in entries:
                    last = eid
                    command = {k.decode(): v.decode() for k, v in body.items()}
                    try:
                        await self.handle(command)
                    except Exception:
                        log.exception("supervisor command %s failed", command.get("type"))

    async def handle(self, c: dict[str, str]) -> None:
        d, call_id = self.d, c.get("call_id", "")
        if c.get("type") in ("ring_responder", "ring_team"):
            roster = d.roster()
            if c["type"] == "ring_responder":
                people = [r for r in roster.responders if r.id == c.get("responder_id")]
            else:
                people = roster.members(c.get("team_id", ""))
            cycle = int(await d.calls.field(call_id, "cycle") or 0)
            for r in people:
                if destinations.refusal(r.phone, d.settings) is None and \
                        await d.offers.ring(call_id, r.id, 0, cycle):
                    d.ami.originate(leg_id(call_id, cycle, 0, r.id), d.dial_string(r.phone),
                                    "pr-responder", {"PR_CALL_ID": call_id, "PR_RESPONDER": r.id},
                                    d.settings.wave_timeout_s)
            await d.calls.event(call_id, "supervisor_ring", by=c.get("by", ""),
                                responders=",".join(r.id for r in people))
        elif c.get("type") == "join_room":
            phone = c.get("phone", "")
            if destinations.refusal(phone, d.settings) or not await d.redis.exists(call_key(call_id)):
                log.warning("join_room refused for %s", call_id)
                return
            profile = "pr_listener" if c.get("mode") == "listen" else "pr_supervisor"
            await d.ami.action({"Action": "Originate", "Channel": d.dial_string(phone),
                                "Application": "ConfBridge",
                                "Data": f"call-{call_id},pr_room,{profile}", "Async": "true",
                                "Timeout": "30000"})
            await d.calls.event(call_id, "supervisor_joined", by=c.get("by", ""),
                                mode=c.get("mode", ""))


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    db.upgrade(settings)
    redis = async_redis(settings.effective_redis_url)
    ami = AmiGateway(settings)
    roster = RosterCache(settings)
    await roster.refresh()
    dispatcher = Dispatcher(settings, CallStore(redis), OfferStore(redis), ami, roster,
                            lease_s=settings.dispatch_lease_s)
    recorder = Recorder(redis, db.engine_for(settings), f"recorder-{os.getpid()}")
    with stop_on_signals() as stop:
        while not stop.is_set():
            try:
                await ami.connect()
                break
            except Exception as exc:
                log.warning("AMI not reachable at %s:%d (%s); retrying", settings.ami_host,
                            settings.ami_port, exc)
                await asyncio.sleep(1)
        print(f"peoples-response dispatcher: AMI {settings.ami_host}:{settings.ami_port}",
              flush=True)
        if ready is not None:
            ready.set()
        try:
            await asyncio.gather(dispatcher.run(stop), recorder.run(stop),
                                 roster.keep_fresh(stop), Commands(dispatcher).run(stop))
        finally:
            ami.close()
            await redis.aclose()
