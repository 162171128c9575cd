"""The stand-in PBX: runs scripted callers through our dialplan, connects to our
FastAGI server as Asterisk does, holds ConfBridge rooms and publishes AMI-shaped events.

Time is simulated: prompt lengths and timeouts are added to each channel's clock and
reported as endpos; with ``time_scale`` > 0 they are also waited for, scaled, in real
time (so a hang-up from outside can land in the middle of a prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standin.agi_session import AgiSession
from standin.caller import CallerScript
from standin.channel import STATE_DOWN, STATE_UP, CallTrace, Channel
from standin.dialplan import Dialplan, Interpreter, separate_args
from standin.sounds import RATE, SoundResolver

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
CAUSE_TEXT = {16: "Normal Clearing", 17: "User busy", 19: "No answer", 32: "Call Rejected"}


@dataclass
class Room:
    """One ConfBridge conference."""

    name: str
    bridge_uniqueid: str
    members: dict[str, Channel] = field(default_factory=dict)
    profiles: dict[str, tuple[str, str]] = field(default_factory=dict)  # bridge, user
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # each user's profile


CONFBRIDGE_CONF = Path(__file__).resolve().parent.parent / "asterisk" / "confbridge.conf"


def confbridge_profiles(path: Path) -> dict[str, dict[str, str]]:
    """Every section of a confbridge.conf with its options (absent file: none)."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            section = line[1:line.index("]")]
            out.setdefault(section, {})
        elif "=" in line and section:
            key, _, value = line.partition("=")
            out[section][key.strip().lower()] = value.strip()
    return out


def confbridge_timeouts(path: Path) -> dict[str, float]:
    """``timeout = N`` per user-profile section of a confbridge.conf (absent file: none)."""
    return {name: float(opts["timeout"]) for name, opts in confbridge_profiles(path).items()
            if opts.get("timeout", "").isdigit()}


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "y", "t", "1", "on")


class StandinPBX:
    def __init__(
        self,
        dialplan_path: Path,
        globals_overrides: dict[str, str] | None = None,
        sounds_dirs: list[Path] | None = None,
        prompts_dir: Path | None = None,
        prompts_prefix: str = "peoples-response",
        *,
        time_scale: float = 0.0,
        fallback_answers: bool = False,
        desk_registered: bool = True,
        max_dial_attempts: int = 3,
        spool_dir: Path | None = None,
        system_name: str = "",
    ) -> None:
        self.dialplan = Dialplan.load(Path(dialplan_path))
        # asterisk.conf systemname: put in front of every uniqueid (main/channel.c), so that
        # several nodes' channels never share one.
        self.system_name = system_name
        self.interp = Interpreter(self.dialplan, globals_overrides, emit=self.emit)
        self.sounds = SoundResolver(sounds_dirs, prompts_dir, prompts_prefix)
        self.time_scale = time_scale
        # ConfBridge user profiles, as Asterisk reads confbridge.conf.
        self.profiles = confbridge_profiles(CONFBRIDGE_CONF)
        self.user_timeouts = confbridge_timeouts(CONFBRIDGE_CONF)
        self.fallback_answers = fallback_answers  # does anyone pick up the fallback group?
        # Is a fallback desk phone registered (PJSIP_DIAL_CONTACTS(fallback-desk))?
        self.desk_registered = desk_registered
        self.max_dial_attempts = max_dial_attempts  # the fallback context loops forever
        self.spool_dir = Path(spool_dir) if spool_dir else Path.cwd()
        self.channels = self.interp.channels  # live channels by name
        self.astdb: dict[tuple[str, str], str] = {}
        # (room, prompt) played into a room by a Local channel (pr-announce).
        self.announcements: list[tuple[str, str]] = []
        self.dialled: list[Channel] = []  # every channel a Dial() created (standin/dial.py)
        self.events: list[dict[str, Any]] = []
        self._rooms: dict[str, Room] = {}
        self._subscribers: list[EventCallback] = []
        self._seq = 0
        self._epoch = int(time.time())
        for name, app in {"agi": self._app_agi, "confbridge": self._app_confbridge,
                          "dial": self._app_dial, "playback": self._app_playback,
                          "userevent": self._app_userevent, "wait": self._app_wait,
                          "channelredirect": self._app_channelredirect}.items():
            self.interp.apps[name] = app
        from standin import dial

        self.interp.apps["amd"] = lambda ch, data: dial.app_amd(self, ch, data)
        self.interp.apps["waitforsilence"] = lambda ch, data: dial.app_waitforsilence(self, ch, data)

    # ---- events ------------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event_dict)`` for every event; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers \
            else None

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        ch = self.channels.get(event.get("Channel", ""))
        if ch is not None:
            ch.trace.events.append(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not break the call
                log.exception("event subscriber failed")

    # ---- calls -----------------------------------------------------------------------
    def _new_channel(self, context: str, exten: str, script: CallerScript, endpoint: str,
                     tech: str) -> Channel:
        self._seq += 1
        name = f"{tech}/{endpoint}-{self._seq:08x}"
        return Channel(name, f"{self.uniqueid_prefix}{self._epoch}.{self._seq}", context, exten,
                       script, tech)

    @property
    def uniqueid_prefix(self) -> str:
        return f"{self.system_name}-" if self.system_name else ""

    async def start_call(self, context: str, exten: str, script: CallerScript, *,
                         endpoint: str = "direct-trunk", tech: str = "PJSIP") -> Channel:
        """Start a channel in ``[context]`` at ``exten``; it runs on in its own task."""
        ch = self._new_channel(context, exten, script, endpoint, tech)
        self.adopt(ch)
        self.channels[ch.name] = ch
        self.emit({"Event": "Newchannel", "Privilege": "call,all", **ch.snapshot()})
        ch.task = asyncio.create_task(self._run(ch), name=ch.name)
        await asyncio.sleep(0)
        return ch

    def adopt(self, ch: Channel) -> None:
        """Give a new channel what it needs from the PBX (globals, events, other channels)."""
        ch.globals, ch.emit = self.interp.globals, self.emit
        ch.lookup = self._find_channel  # type: ignore[method-assign]
        ch.contacts = self._contacts  # type: ignore[method-assign]
        ch.room_info = self._room_info  # type: ignore[method-assign]

    def _find_channel(self, name: str) -> Channel | None:
        """A channel by its name or uniqueid (ast_channel_get_by_name); None for ""."""
        if not name:
            return None
        if name in self.channels:
            return self.channels[name]
        return next((c for c in self.channels.values() if c.uniqueid == name), None)

    def _room_info(self, kind: str, room_name: str) -> str:
        """CONFBRIDGE_INFO(parties|marked|admins,conf): "0" for a room that doesn't exist."""
        room = self._rooms.get(room_name)
        if room is None:
            return "0"
        if kind == "parties":
            return str(len(room.members))
        key = {"marked": "marked", "admins": "admin"}.get(kind)
        return str(sum(_yes(o.get(key)) for o in room.options.values())) if key else "0"

    def _contacts(self, endpoint: str) -> str:
        if endpoint == "fallback-desk" and self.desk_registered:
            return "PJSIP/fallback-desk/sip:fallback-desk@127.0.0.5:5060"
        return ""

    async def place_call(self, context: str, exten: str, script: CallerScript, *,
                         endpoint: str = "direct-trunk") -> CallTrace:
        """Run a caller through the dialplan. Returns once the call has ended, or, for a
        caller with ``stay_s=None``, once it waits in a room or is bridged (the channel
        runs on: ``await pbx.hangup(trace.channel)`` ends it and runs ``h``)."""
        ch = await self.start_call(context, exten, script, endpoint=endpoint)
        assert ch.task is not None
        settled = asyncio.ensure_future(ch.settled.wait())
        await asyncio.wait({ch.task, settled}, return_when=asyncio.FIRST_COMPLETED)
        settled.cancel()
        if ch.task.done():
            ch.task.result()  # re-raise a stand-in bug where the test can see it
        return ch.trace

    async def _run(self, ch: Channel) -> None:
        try:
            if self.dialplan.find_extension(ch.context, ch.exten) is None:
                ch.trace.log.append(f"no extension {ch.exten} in [{ch.context}]")
            await self.interp.run(ch)
            if not ch.hung_up:  # fell off the end of the dialplan: Asterisk hangs up
                ch.request_hangup("dialplan", at="end of dialplan")
            await self.interp.run_h(ch)
        finally:
            self._gone(ch)

    async def _finish(self, ch: Channel) -> None:
        """A channel hung up outside its own task (a Dial's called leg): h, then gone."""
        try:
            await self.interp.run_h(ch)
        finally:
            self._gone(ch)

    def _gone(self, ch: Channel) -> None:
        for room in list(self._rooms.values()):
            if ch.name in room.members:
                self._leave(room, ch)
        ch.state = STATE_DOWN
        cause = ch.hangup_cause
        self.emit({"Event": "Hangup", "Privilege": "call,all", **ch.snapshot(),
                   "Cause": str(cause), "Cause-txt": CAUSE_TEXT.get(cause, "Unknown")})
        self.channels.pop(ch.name, None)
        ch.finished.set()

    async def hangup(self, channel_name: str, cause: int = 16) -> bool:
        """Hang a channel up (as AMI Hangup would) and wait until its h extension ran."""
        ch = self.channels.get(channel_name)
        if ch is None:
            return False
        ch.request_hangup("pbx", cause=cause)
        await ch.finished.wait()
        return True

    def crash(self) -> None:
        """As kill -9 of Asterisk: every channel stops where it is, with no h extension and
        no event (close the AMI server first: its clients just lose the connection), and
        FastAGI sockets close mid-session."""
        self.emit = lambda event: None  # type: ignore[method-assign]
        for ch in list(self.channels.values()):
            ch.emit = self.emit
            if ch.task is not None:
                ch.task.cancel()
        self.channels.clear()
        self._rooms.clear()

    async def close(self) -> None:
        """Hang up every channel still running."""
        for name in list(self.channels):
            await self.hangup(name)

    # ---- rooms -------------------------------------------------------------------------
    @property
    def rooms(self) -> dict[str, list[Channel]]:
        """Room name -> its members, in join order (a snapshot)."""
        return {name: list(room.members.values()) for name, room in self._rooms.items()}

    def room(self, name: str) -> Room | None:
        return self._rooms.get(name)

    async def kick(self, room_name: str, channel_name: str = "all") -> bool:
        """ConfbridgeKick: the member leaves the room and its dialplan goes on."""
        room = self._rooms.get(room_name)
        if room is None:
            return False
        targets = [c for n, c in room.members.items() if channel_name in ("all", n)]
        for ch in targets:
            ch.kick_result = "KICKED"
            ch.kicked.set()
        await asyncio.sleep(0)
        return bool(targets)

    async def join_room(self, ch: Channel, room_name: str, bridge_profile: str = "",
                        user_profile: str = "") -> None:
        room = self._rooms.get(room_name)
        if room is None:
            room = Room(room_name, f"standin-bridge-{self._epoch}-{self._seq}")
            self._rooms[room_name] = room
            self.emit({"Event": "ConfbridgeStart", "Privilege": "call,all",
                       **self._bridge_headers(room, 1)})
        room.members[ch.name] = ch
        room.profiles[ch.name] = (bridge_profile, user_profile)
        room.options[ch.name] = self.user_profile(ch, user_profile)
        ch.state = STATE_UP
        ch.trace.room = room_name
        self.emit({"Event": "ConfbridgeJoin", "Privilege": "call,all",
                   **self._bridge_headers(room, len(room.members)), **ch.snapshot(),
                   "Admin": "No", "Muted": "No"})

    def user_profile(self, ch: Channel, name: str) -> dict[str, str]:
        """conf_find_user_profile: the named profile, else the channel's dynamic one (on top
        of its template), else default_user."""
        if name:
            return dict(self.profiles.get(name, {}))
        if ch.dynamic_user is not None:
            base = dict(self.profiles.get(ch.dynamic_user.get("template", "default_user"), {}))
            base.update({k: v for k, v in ch.dynamic_user.items() if k != "template"})
            return base
        return dict(self.profiles.get("default_user", {}))

    def _leave(self, room: Room, ch: Channel) -> None:
        marked = _yes(room.options.get(ch.name, {}).get("marked"))
        room.members.pop(ch.name, None)
        room.profiles.pop(ch.name, None)
        room.options.pop(ch.name, None)
        if marked and not any(_yes(o.get("marked")) for o in room.options.values()):
            # conf_state_multi_marked.c leave_marked: the last marked user left; every
            # end_marked user is removed (CONFBRIDGE_RESULT=ENDMARKED).
            for other in list(room.members.values()):
                if _yes(room.options.get(other.name, {}).get("end_marked")):
                    other.kick_result = "ENDMARKED"
                    other.kicked.set()
        self.emit({"Event": "ConfbridgeLeave", "Privilege": "call,all",
                   **self._bridge_headers(room, len(room.members)), **ch.snapshot(),
                   "Admin": "No"})
        if not room.members:
            del self._rooms[room.name]
            self.emit({"Event": "ConfbridgeEnd", "Privilege": "call,all",
                       **self._bridge_headers(room, 0)})

    @staticmethod
    def _bridge_headers(room: Room, count: int) -> dict[str, str]:
        return {"Conference": room.name, "BridgeUniqueid": room.bridge_uniqueid,
                "BridgeType": "base", "BridgeTechnology": "softmix",
                "BridgeCreator": "ConfBridge", "BridgeName": room.name,
                "BridgeNumChannels": str(count), "BridgeVideoSourceMode": "none"}

    # ---- media and time ------------------------------------------------------------------
    async def wait(self, ch: Channel, seconds: float) -> bool:
        """Let ``seconds`` of simulated time pass; True when the channel hung up or was moved
        elsewhere (an async goto) meanwhile."""
        ch.advance_time(seconds)
        if ch.interrupted:
            return True
        if self.time_scale <= 0 or seconds <= 0:
            await asyncio.sleep(0)
            return ch.interrupted
        try:
            await asyncio.wait_for(ch.interrupt_event.wait(), seconds * self.time_scale)
        except TimeoutError:
            return False
        return True

    async def play_prompt(self, ch: Channel, name: str, escape: str = ""
                          ) -> tuple[int | None, bool]:
        """Play a file to the caller: (its length in samples or None if missing, whether a
        hang-up or a move cut it short). The caller may hang up once it has heard it. A
        timed key of the caller's script stops it when it is one of ``escape``
        (``ch.last_key`` then holds it, ``ch.last_keys`` every key of that answer, and
        ``ch.last_endpos`` where it stopped), and is lost otherwise."""
        ch.trace.prompts.append(name)
        samples = self.sounds.duration_samples(name, ch.language)
        if samples is None:
            ch.trace.missing_prompts.append(name)
            ch.trace.log.append(f"file {name} does not exist")
        length = (samples or 0) / RATE
        start = ch.trace.sim_time_s
        ch.caller.arm(start)
        ch.last_key, ch.last_keys, ch.last_endpos = "", "", samples or 0
        pressed = ch.caller.pressed_between(start, start + length) if samples else None
        if pressed is not None:
            keys, after = pressed
            ch.trace.keys.append(("during " + name, keys))
            if keys[:1] and keys[0] in escape:
                interrupted = await self.wait(ch, after)
                ch.last_key, ch.last_keys, ch.last_endpos = keys[0], keys, int(after * RATE)
                return samples, interrupted
            ch.trace.log.append(f"key {keys} lost during {name} (no escape digits)")
        interrupted = await self.wait(ch, length)
        if not interrupted and ch.caller.hear(name):
            ch.request_hangup("caller", at=name)
        return samples, interrupted

    def played_samples(self, samples: int) -> int:
        # Without real time we can't know how far a cut-short prompt got: report half.
        return samples // 2

    def recording_path(self, name: str, fmt: str) -> Path:
        path = Path(f"{name}.{fmt}")
        return path if path.is_absolute() else self.spool_dir / path

    async def _stay(self, ch: Channel, where: str, timeout_s: float = 0.0) -> str:
        """Wait while bridged: returns "hangup", "kicked" or "timeout" (the user profile's)."""
        waits = {asyncio.ensure_future(ch.hangup_event.wait()): "hangup",
                 asyncio.ensure_future(ch.kicked.wait()): "kicked",
                 asyncio.ensure_future(ch.interrupt_event.wait()): "moved"}
        if timeout_s > 0 and self.time_scale > 0:
            waits[asyncio.ensure_future(asyncio.sleep(timeout_s * self.time_scale))] = "timeout"
        if ch.script.stay_s is not None:
            waits[asyncio.ensure_future(asyncio.sleep(ch.script.stay_s))] = "stay"
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        how = next(waits[t] for t in waits if t in done)
        if how == "stay":
            ch.request_hangup("caller", at=where)
            return "hangup"
        if ch.hung_up:
            return "hangup"
        if how in ("kicked", "moved"):
            return ch.kick_result.lower()
        return how

    # ---- applications ----------------------------------------------------------------------
    async def _app_agi(self, ch: Channel, data: str) -> int:
        args = separate_args(data)
        status = await AgiSession(self, ch, args[0].strip(), args[1:]).run()
        ch.set_variable("AGISTATUS", status)
        ch.trace.agi_status.append(status)
        return -1 if status == "HANGUP" and ch.hung_up else 0

    async def _app_confbridge(self, ch: Channel, data: str) -> int:
        args = [*separate_args(data), "", ""]
        room_name = args[0].strip()
        if not room_name or ch.hung_up:
            return -1
        ch.kicked.clear()
        ch.kick_result = "KICKED"
        await self.join_room(ch, room_name, args[1].strip(), args[2].strip())
        if ch.script.stay_s is None:
            ch.settled.set()
        profile = self.user_profile(ch, args[2].strip())
        timeout = float(profile["timeout"]) if profile.get("timeout", "").isdigit() else 0.0
        how = await self._stay(ch, f"ConfBridge({room_name})", timeout)
        room = self._rooms.get(room_name)
        if room is not None and ch.name in room.members:
            self._leave(room, ch)
        if how != "moved":
            ch.set_variable("CONFBRIDGE_RESULT", how.upper())
        return 0  # capture 07b: ConfBridge ended by a hang-up still returns 0

    async def _app_dial(self, ch: Channel, data: str) -> int:
        args = [*separate_args(data), "", ""]
        dest, timeout = args[0].strip(), args[1].strip()
        if ch.context != "pr-fallback":
            # A callback ([pr-callback-call]): a phone that answers, or not (standin/dial.py).
            from standin import dial

            seconds = float(timeout) if timeout.replace(".", "", 1).isdigit() else 0.0
            return await dial.dial(self, ch, dest, seconds, args[2].strip())
        ch.trace.dialed.append(dest)
        fallback = self.interp.globals.get("PR_FALLBACK_DIAL")
        if fallback is None or dest == fallback:
            ch.trace.fallback_dialed = True
        if len(ch.trace.dialed) > self.max_dial_attempts:
            ch.trace.loop_guard = (f"Dial({dest}) attempted {len(ch.trace.dialed)} times: "
                                   f"stopped by the stand-in at {ch.location()}")
            ch.request_hangup("loop-guard", at=ch.location())
            return -1
        dest_name = f"{dest}-{self._seq + 1:08x}"
        self.emit({"Event": "DialBegin", "Privilege": "call,all", **ch.snapshot(),
                   "DestChannel": dest_name, "DialString": dest})
        if self.fallback_answers:
            ch.set_variable("DIALSTATUS", "ANSWER")
            self.emit({"Event": "DialEnd", "Privilege": "call,all", **ch.snapshot(),
                       "DestChannel": dest_name, "DialStatus": "ANSWER"})
            ch.state = STATE_UP
            if ch.script.stay_s is None:
                ch.settled.set()
            await self._stay(ch, f"Dial({dest})")
            return -1
        hung = await self.wait(ch, float(timeout) if timeout.isdigit() else 0.0)
        status = "CANCEL" if hung else "NOANSWER"
        ch.set_variable("DIALSTATUS", status)
        self.emit({"Event": "DialEnd", "Privilege": "call,all", **ch.snapshot(),
                   "DestChannel": dest_name, "DialStatus": status})
        return -1 if ch.hung_up else 0

    async def _app_playback(self, ch: Channel, data: str) -> int:
        files = separate_args(data)[0]
        status = "SUCCESS"
        for name in files.split("&"):
            samples, _ = await self.play_prompt(ch, name.strip())
            if samples is None:
                status = "FAILED"  # app_playback logs a warning and goes on
            if ch.hung_up:
                return -1
            if ch.moving:
                return 0
        ch.set_variable("PLAYBACKSTATUS", status)
        return 0

    async def _app_wait(self, ch: Channel, data: str) -> int:
        """Wait(seconds): PBX time, scaled to real time; a hang-up or a move ends it."""
        try:
            seconds = float(data or 0)
        except ValueError:
            seconds = 0.0
        await self.wait(ch, seconds)
        return -1 if ch.hung_up else 0

    async def _app_channelredirect(self, ch: Channel, data: str) -> int:
        """app_channelredirect: ast_async_parseable_goto on another channel."""
        args = [a.strip() for a in separate_args(data)]
        target = self._find_channel(args[0]) if args and args[0] else None
        if target is None:
            ch.trace.log.append(f"ChannelRedirect: no channel {args[0] if args else ''}")
            ch.set_variable("CHANNELREDIRECT_STATUS", "NOCHANNEL")
            return 0
        where = [*args[1:]]
        context, exten, prio = target.context, target.exten, "1"
        if len(where) == 3:
            context, exten, prio = where
        elif len(where) == 2:
            exten, prio = where
        elif len(where) == 1:
            prio = where[0]
        ext = self.dialplan.find_extension(context, exten)
        number = int(prio) if prio.isdigit() else (ext.labels.get(prio, 0) if ext else 0)
        if number < 1:
            ch.set_variable("CHANNELREDIRECT_STATUS", "FAILURE")
            return 0
        target.move_to(context, exten, number)
        ch.set_variable("CHANNELREDIRECT_STATUS", "SUCCESS")
        return 0

    async def _app_userevent(self, ch: Channel, data: str) -> int:
        args = separate_args(data)
        event = {"Event": "UserEvent", "Privilege": "user,all", **ch.snapshot(),
                 "UserEvent": args[0].strip()}
        for header in args[1:]:
            key, _, value = header.partition(":")
            if key.strip():
                event[key.strip()] = value.lstrip()
        self.emit(event)
        return 0


async def run_call(pbx: StandinPBX, context: str, exten: str, script: CallerScript) -> CallTrace:
    """Place a call and, if it is still waiting somewhere, hang it up: a whole call."""
    trace = await pbx.place_call(context, exten, script)
    with contextlib.suppress(KeyError):
        if trace.channel in pbx.channels:
            await pbx.hangup(trace.channel)
    return trace
