"""``peoples-response dispatcher``: the dispatcher and supervisor commands, in one asyncio
process that alone talks to AMI; its recorder runs beside it as a child (recording.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from crisisline import db, destinations
from crisisline.config import Settings
from crisisline.roster.model import RosterSnapshot
from crisisline.roster.store import RosterStore
from crisisline.shutdown import stop_on_signals
from crisisline.stores import async_redis
from crisisline.stores.calls import CallStore
from crisisline.stores.offers import COMMANDS, OfferStore
from workers.dispatcher.ami import supervisor_leg_id
from workers.dispatcher.dispatcher import Dispatcher
from workers.dispatcher.nodes import gateway_for
from workers.dispatcher.reconcile import Reconciler
from workers.dispatcher.recording import RecorderChild

log = logging.getLogger(__name__)
ROSTER_TTL_S = 15.0
ROSTER_RELOAD_S = 300.0  # read whole at least this often, changed or not (edited by hand)


class RosterCache:
    """The roster from SQL, looked at every ROSTER_TTL_S (not on every wave), and read whole
    only when its revision changed (RosterStore.revision: thousands of shifts took a tenth of
    a second of CPU per read) or ROSTER_RELOAD_S has passed."""

    def __init__(self, settings: Settings) -> None:
        self.store = RosterStore(db.engine_for(settings), settings.timezone)
        self._snapshot = RosterSnapshot(timezone=settings.timezone)
        self._revision: int | None = None
        self._read_at = 0.0  # (monotonic) when it was last read whole
        self.reads = 0  # whole reads (for tests)

    async def refresh(self) -> None:
        try:
            self._snapshot = await asyncio.to_thread(self._read)
        except Exception as exc:
            log.error("roster unavailable, using the last one read: %s", exc)

    def _read(self) -> RosterSnapshot:
        """The roster; the same one stays the same object (compared here, off the event
        loop): who is on call is worked out once per object (waves.py)."""
        revision = self.store.revision()  # (before the read: a write meanwhile reads again)
        if revision == self._revision and time.monotonic() - self._read_at < ROSTER_RELOAD_S:
            return self._snapshot
        snapshot = self.store.snapshot()
        self._revision, self._read_at = revision, time.monotonic()
        self.reads += 1
        return self._snapshot if snapshot == self._snapshot else snapshot

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
        self.joins = 0

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
            data = await d._hash(call_id)
            cycle = int(data.get("cycle") or 0)
            language = data.get("language", "en")
            for r in people:
                if destinations.refusal(r.phone, d.settings) is None and \
                        await d.offers.ring(call_id, r.id, 0, cycle):
                    d.ring(call_id, r, cycle, 0, language in r.languages,
                           d._wave_timeout(data), source=data.get("source", ""))
            await d.calls.event(call_id, "supervisor_ring", by=c.get("by", ""),
                                responders=",".join(r.id for r in people))
        elif c.get("type") == "join_room":
            await self.join_room(c)
        elif c.get("type") == "text_call":
            await d.texts.call_texter(c)  # a text handed to a phone call

    async def join_room(self, c: dict[str, str]) -> None:
        """A supervisor joins a call's room, muted (listen) or to speak. Stepping in to speak
        on a caller nobody has taken yet is taking the call: the caller is connected."""
        d, call_id = self.d, c.get("call_id", "")
        phone = c.get("phone", "")
        data = await d._hash(call_id)
        if destinations.refusal(phone, d.settings) or not data:
            log.warning("join_room refused for %s", call_id)
            return
        speak = c.get("mode") != "listen"
        profile = "pr_supervisor" if speak else "pr_listener"
        if speak and data.get("state") in ("waiting", "dispatching") and data.get("channel"):
            if await d.offers.accept(call_id, f"supervisor:{c.get('by', '')}"):
                await d.cancel_legs(call_id, keep=f"supervisor:{c.get('by', '')}")
                await d.move(data["channel"], "pr-connect", "connect")
        self.joins += 1
        d.ami.originate(supervisor_leg_id(call_id, self.joins), d.dial_string(phone), "",
                        {"PR_CALL_ID": call_id}, 30, application="ConfBridge",
                        data=f"call-{call_id},pr_room,{profile}")
        await d.calls.event(call_id, "supervisor_joined", by=c.get("by", ""),
                            mode=c.get("mode", ""))


AUDIO_SWEEP_S = 600.0


async def sweep_audio(settings: Settings, stop: asyncio.Event) -> None:
    """Callers' message audio never outlives the retention rules because a worker is down:
    the dispatcher (which always runs) deletes recordings older than the retention job's
    limit too, whether or not they were transcribed."""
    from workers.retention import purge_recordings

    while not stop.is_set():
        try:
            deleted = await asyncio.to_thread(purge_recordings, settings.recordings_path, time.time())
            if deleted:
                log.info("deleted %d message recording(s) past their time", deleted)
        except Exception as exc:
            log.warning("sweeping old recordings failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), AUDIO_SWEEP_S)
        except TimeoutError:
            pass


async def serve(settings: Settings, ready: asyncio.Event | None = None,
                recorder: RecorderChild | None = None) -> None:
    """``recorder``: the child process that writes the call records (None: another process
    does, e.g. ``peoples-response recorder`` run on its own)."""
    db.upgrade(settings)
    redis = async_redis(settings.effective_redis_url)
    ami = gateway_for(settings, redis)  # one AMI session, or one per node (PR_PBX_NODES)
    roster = RosterCache(settings)
    await roster.refresh()
    dispatcher = Dispatcher(settings, CallStore(redis), OfferStore(redis), ami, roster,
                            lease_s=settings.dispatch_lease_s)
    where = (", ".join(f"{n}={a}" for n, a in settings.pbx_nodes.items()) or
             f"{settings.ami_host}:{settings.ami_port}")
    with stop_on_signals() as stop:
        keep_recorder = asyncio.create_task(recorder.keep(stop)) if recorder else None
        while not stop.is_set():
            try:
                await ami.connect()
                break
            except Exception as exc:
                log.warning("AMI not reachable at %s (%s); retrying", where, exc)
                await asyncio.sleep(1)
        print(f"peoples-response dispatcher: AMI {where}", flush=True)
        # Before taking any call: agree with the PBX about who is still on a call (after a
        # crash or a PBX restart Redis may say someone is busy who isn't).
        reconciler = Reconciler(dispatcher)
        for _ in range(50):
            if ami.listening_since is not None:
                break
            await asyncio.sleep(0.1)
        try:
            await reconciler.once()
        except Exception:
            log.exception("reconciling Redis with the PBX at start failed")
        if ready is not None:
            ready.set()
        try:
            await asyncio.gather(dispatcher.run(stop), roster.keep_fresh(stop),
                                 Commands(dispatcher).run(stop), reconciler.run(stop),
                                 sweep_audio(settings, stop))
        finally:
            ami.close()
            dispatcher.watch.stop()
            if keep_recorder is not None:
                keep_recorder.cancel()
                recorder.stop()
            await redis.aclose()
