"""Calls through the real Asterisk, played as a person would: `simulate`, the scenario
table and the benchmarks drive the PBX rendered from our configuration with callers and
phones from the world Asterisk (localpbx.world).

A caller follows the same ``CallerScript`` as on the stand-in. The harness watches the PBX
over AMI (AGIExecStart says which question is being asked and which file plays) and
presses keys on the caller's SIP leg (RFC 4733) when a person who knows the answer would:

- a plain answer (``2``, ``02121#``, ``-`` for none) once the question's prompt has played
  (GET DATA, WAIT FOR DIGIT, GET OPTION, or a RECORD FILE that keys end);
- a timed answer ``KEYS@SECONDS``: that many seconds into the next prompt, whatever it is
  (a key during a prompt without escape digits is lost, as on any phone system).

What the caller heard and what happened comes back as a trace with the stand-in's field
names (prompts, keys, variables, agi_status, room, fallback_dialed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crisisline.nodes import qualify, split
from localpbx.ami import AmiConnection, Message
from localpbx.install import installed
from localpbx.netns import PrivateNetwork
from localpbx.process import AsteriskProcess
from localpbx.render import PbxLayout, render_pbx
from localpbx.world import WorldLayout, render_world, trunk_env
from standin.agi_commands import parse_args
from standin.caller import NO_KEY, CallerScript
from standin.sounds import RATE, SoundResolver

log = logging.getLogger(__name__)

EXTENSIONS = {"direct": "6175550100", "911": "911000", "988": "988000"}
# A transferring center sends what the stand-in's callers carry as channel variables as
# SIP headers (dialplan [pr-transfer-context] reads them).
TRANSFER_HEADERS = {"TRANSFER_LANGUAGE": "X-Transfer-Language", "TRANSFER_ZIP": "X-Transfer-Zip",
                    "TRANSFER_NOTE": "X-Transfer-Note"}
QUESTIONS = ("GET DATA", "WAIT FOR DIGIT", "GET OPTION")
AUDIO = ("STREAM FILE", "GET DATA", "GET OPTION", "CONTROL STREAM FILE")
REACTION_S = 0.4   # a person's pause between the end of a question and the first key
KEY_GAP_S = 0.25   # between the keys of a ZIP code
_tags = itertools.count(1)


def command_name(argv: list[str]) -> str:
    words = [w.upper() for w in argv[:3]]
    for n in (3, 2, 1):
        if " ".join(words[:n]) in ("CONTROL STREAM FILE", "STREAM FILE", "GET DATA", "RECORD FILE",
                                   "WAIT FOR DIGIT", "GET OPTION", "SET VARIABLE",
                                   "GET VARIABLE", "EXEC", "ANSWER", "HANGUP"):
            return " ".join(words[:n])
    return words[0] if words else ""


@dataclass
class RealTrace:
    """What happened on the PBX side of one call, with the stand-in trace's field names."""

    channel: str = ""
    uniqueid: str = ""
    prompts: list[str] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    agi_status: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    room: str | None = None
    rooms: list[str] = field(default_factory=list)
    fallback_dialed: bool = False
    dialed: list[str] = field(default_factory=list)
    hung_up_at: str | None = None
    hung_up_by: str | None = None
    contexts: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class RealCall:
    """One scripted caller on the real PBX."""

    def __init__(self, line: RealLine, script: CallerScript, source: str) -> None:
        self.line = line
        self.script = script
        self.source = source
        self.tag = f"sim{next(_tags)}x{secrets.token_hex(4)}"
        self.trace = RealTrace()
        self.world_channel = ""
        self.started = asyncio.Event()
        self.settled = asyncio.Event()   # in a room, or with the fallback desk
        self.finished = asyncio.Event()  # the PBX side hung up
        # In order: a timed answer is armed only once every answer before it was used.
        self._answers = list(script.keys)
        self._callback_answers = list(script.callback_keys)
        self._heard = 0
        self._tasks: set[asyncio.Task] = set()
        self._hanging_up = False

    # ---- placing -------------------------------------------------------------------------
    def _variables(self) -> list[str]:
        """Originate variables; a PJSIP_HEADER(add,...) one becomes a header of the INVITE
        (Async Originate runs no PreDialGoSub: manager.c fast_originate)."""
        headers = {"X-PR-Sim": self.tag}
        for name, value in self.script.variables.items():
            if name in TRANSFER_HEADERS:
                headers[TRANSFER_HEADERS[name]] = value
        headers.update(self.script.sip_headers)
        return [f"PJSIP_HEADER(add,{name})={value}" for name, value in headers.items()]

    async def place(self) -> None:
        world = self.line.world_ami
        assert world is not None
        cid_num = self.script.caller_id_num or ""
        cid_name = self.script.caller_id_name or ""
        caller_id = f'"{cid_name}" <{cid_num}>' if cid_name else (f"<{cid_num}>" if cid_num else "")
        headers: list[tuple[str, Any]] = [
            ("Action", "Originate"),
            ("Channel", f"PJSIP/{EXTENSIONS.get(self.source, self.source)}@to-{self.source}"),
            ("Context", "world-caller"), ("Exten", "s"), ("Priority", "1"),
            ("ChannelId", f"{self.tag}-w"), ("Async", "true"), ("Timeout", "30000"),
            ("Variable", self._variables()),
        ]
        if caller_id:
            headers.append(("CallerID", caller_id))
        self.line.calls[self.tag] = self  # before: its Newchannel may beat the response
        reply = await world.action(headers)
        if reply.get("Response") != "Success":
            raise RuntimeError(f"world could not place the call: {reply.get('Message')}")

    # ---- what the PBX does -----------------------------------------------------------------
    def on_pbx_event(self, e: Message) -> None:
        name = e.get("Event", "")
        if name == "AGIExecStart":
            self._on_command(e.get("Command", ""))
        elif name == "Newexten":
            app, data = e.get("Application", ""), e.get("AppData", "")
            context = e.get("Context", "")
            if not self.trace.contexts or self.trace.contexts[-1] != context:
                self.trace.contexts.append(context)
            if app == "Playback":
                for part in data.split(",")[0].split("&"):
                    self._prompt(part.strip())
            elif app == "Dial":
                dest = data.split(",")[0]
                self.trace.dialed.append(dest)
                if context == "pr-fallback":
                    self.trace.fallback_dialed = True
        elif name == "VarSet":
            var, value = e.get("Variable", ""), e.get("Value", "")
            self.trace.variables[var] = value
            if var == "AGISTATUS":
                self.trace.agi_status.append(value)
        elif name == "ConfbridgeJoin":
            self.trace.room = e.get("Conference")
            self.trace.rooms.append(e.get("Conference", ""))
            self._on_settled()
        elif name == "DialEnd" and e.get("DialStatus") == "ANSWER":
            self._on_settled()
        elif name == "Hangup":
            if self.trace.hung_up_by is None:
                self.trace.hung_up_by = "pbx"
            self.finished.set()
            for task in self._tasks:
                task.cancel()

    def _on_settled(self) -> None:
        if self.settled.is_set():
            return
        self.settled.set()
        if self.script.stay_s is not None:
            self._spawn(self._hangup_after(self.script.stay_s, "stay"))

    def _prompt(self, name: str) -> None:
        self.trace.prompts.append(name)
        self._heard += 1
        limit = self.script.hangup_after
        leave = self.script.leave_after and name.rsplit("/", 1)[-1] == self.script.leave_after
        if (limit is not None and self._heard == limit) or leave:
            self._spawn(self._hangup_after(self.line.duration(name), f"after {name}"))

    def _on_command(self, command: str) -> None:
        self.trace.commands.append(command)
        argv = parse_args(command)
        what = command_name(argv)
        length = 0.0
        if what in AUDIO and len(argv) > 2:
            self._prompt(argv[2])
            length = self.line.duration(argv[2])
        if self._answers and "@" in self._answers[0] and (
                what in AUDIO or what == "RECORD FILE" or what in QUESTIONS):
            token = self._answers.pop(0)
            keys, _, at = token.partition("@")
            self.trace.keys.append((what, token))
            self._spawn(self._press_later(keys, float(at or 0)))
            return
        if what in QUESTIONS:
            callback = len(argv) > 2 and argv[2].rsplit("/", 1)[-1].startswith("callback_") \
                and bool(self.script.callback_keys)
            token = (self._callback_answers.pop(0) if self._callback_answers else NO_KEY) \
                if callback else self._next_plain()
            self.trace.keys.append((what, token))
            if token != NO_KEY:
                delay = (length if what != "WAIT FOR DIGIT" else 0.0) + REACTION_S
                self._spawn(self._press_later(token, delay))
        elif what == "RECORD FILE" and len(argv) > 4:
            self._on_record(argv)

    def _next_plain(self) -> str:
        if self._answers and "@" not in self._answers[0]:
            return self._answers.pop(0)
        return NO_KEY

    def _on_record(self, argv: list[str]) -> None:
        escapes = argv[4]
        if any(d in escapes for d in "0123456789*"):
            # A recording any key ends (the spoken language choice): an input point.
            token = self._next_plain()
            self.trace.keys.append(("RECORD FILE", token))
            if token != NO_KEY:
                self._spawn(self._press_later(token[:1], REACTION_S))
            elif self.script.say is not None:
                self._spawn(self._say(self.script.say))
            return
        self._spawn(self._leave_message())

    async def _leave_message(self) -> None:
        await asyncio.sleep(0.6)  # the beep
        if self.script.speech is not None:
            await self._say(self.script.speech)
        else:
            await asyncio.sleep(1.0)
        if self.script.record_end == "dtmf":
            await self.press("#")
        elif self.script.record_end == "hangup":
            await self.hangup("during the message")

    # ---- acting as the caller -------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _press_later(self, keys: str, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        await self.press(keys)

    async def press(self, keys: str) -> None:
        world = self.line.world_ami
        for n, key in enumerate(keys):
            if n:
                await asyncio.sleep(KEY_GAP_S)
            if self.finished.is_set() or world is None:
                return
            try:
                reply = await world.action({"Action": "PlayDTMF", "Channel": self.world_channel,
                                            "Digit": key, "Duration": "120"})
            except Exception as exc:
                self.trace.log.append(f"PlayDTMF {key}: {exc}")
                continue
            if reply.get("Response") != "Success":
                self.trace.log.append(f"PlayDTMF {key}: {reply.get('Message')}")

    async def _say(self, audio: Path) -> None:
        """Play a recording into the call from the caller's side, then listen again."""
        world = self.line.world_ami
        if world is None or not self.world_channel:
            return
        stem = str(Path(audio).with_suffix(""))
        await world.action({"Action": "Setvar", "Channel": self.world_channel,
                            "Variable": "SAY_FILE", "Value": stem})
        await world.action({"Action": "Redirect", "Channel": self.world_channel,
                            "Context": "world-say", "Exten": "s", "Priority": "1"})
        samples = SoundResolver().duration_samples(stem) or 0
        await asyncio.sleep(samples / RATE + 0.3)

    async def _hangup_after(self, seconds: float, where: str) -> None:
        await asyncio.sleep(max(0.0, seconds))
        await self.hangup(where)

    async def hangup(self, where: str = "by the test") -> None:
        if self._hanging_up or self.finished.is_set():
            return
        self._hanging_up = True
        self.trace.hung_up_by = "caller"
        self.trace.hung_up_at = where
        world = self.line.world_ami
        if world is not None and self.world_channel:
            with contextlib.suppress(Exception):
                await world.action({"Action": "Hangup", "Channel": self.world_channel})

    async def wait_settled(self, timeout: float = 60) -> bool:
        await asyncio.wait(
            {asyncio.ensure_future(self.settled.wait()), asyncio.ensure_future(self.finished.wait())},
            timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return self.settled.is_set()

    async def wait_finished(self, timeout: float = 60) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout)
        return self.finished.is_set()


class RealLine:
    """The PBX rendered from our configuration, the world around it, and an observer."""

    def __init__(self, *, state: Path, prompts: Path, prompts_name: str = "peoples-response",
                 agi_url: str, desk: bool = True, extra_env: dict[str, str] | None = None,
                 ami_secret: str | None = None, network: PrivateNetwork | None = None) -> None:
        install = installed()
        if install is None:
            raise RuntimeError("Asterisk is not installed: run scripts/install-asterisk")
        self.install = install
        self.state = Path(state)
        self.prompts = Path(prompts)
        self.prompts_name = prompts_name
        self.agi_url = agi_url
        self.desk_secret = secrets.token_hex(12) if desk else None
        self.extra_env = extra_env or {}
        self.ami_secret = ami_secret or secrets.token_hex(16)
        # Both Asterisks run inside it when given (its owner deletes it); else on loopback.
        self.network = network
        self.sounds = SoundResolver(prompts_dir=self.prompts, prompts_prefix=prompts_name)
        self.calls: dict[str, RealCall] = {}
        self.by_channel: dict[str, RealCall] = {}
        self._early: dict[str, list[Message]] = {}
        self.layout: PbxLayout | None = None
        self.world: WorldLayout | None = None
        self.pbx_proc: AsteriskProcess | None = None
        self.world_proc: AsteriskProcess | None = None
        self.observer: AmiConnection | None = None
        self.observers: dict[str, AmiConnection] = {}  # node -> observer (attach, on nodes)
        self.world_ami: AmiConnection | None = None
        self.pbx_events: list[Message] = []
        self._identifying: set[asyncio.Future] = set()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from localpbx.render import free_port

        net = self.network
        pbx_host = net.pbx_address if net else "127.0.0.1"
        # Ports free on our loopback; inside a private namespace every port is free anyway.
        sip_port = free_port("127.0.0.1", udp_too=True)
        ami_port = free_port("127.0.0.1")
        self.world = render_world(install=self.install, state=self.state / "world",
                                  pbx_host=pbx_host, pbx_sip_port=sip_port,
                                  secret=secrets.token_hex(16), desk_secret=self.desk_secret,
                                  sounds=self.prompts, ami_host=pbx_host,
                                  ami_peer=net.host_address if net else "127.0.0.1")
        env = {**trunk_env(self.world), **self.extra_env}
        if self.desk_secret:
            env["PR_FALLBACK_DESK_SECRET"] = self.desk_secret
        self.layout = await asyncio.to_thread(
            render_pbx, install=self.install, state=self.state / "pbx", prompts=self.prompts,
            prompts_name=self.prompts_name, agi_url=self.agi_url, ami_secret=self.ami_secret,
            observer_secret=secrets.token_hex(16), host=pbx_host, sip_port=sip_port,
            ami_port=ami_port, extra_env=env)
        wrap = net.wrap if net else None
        self.pbx_proc = AsteriskProcess(self.install, self.layout.conf, self.layout.log, wrap=wrap)
        self.world_proc = AsteriskProcess(self.install, self.world.conf, self.world.log,
                                          wrap=wrap)
        await asyncio.gather(asyncio.to_thread(self.pbx_proc.start),
                             asyncio.to_thread(self.world_proc.start))
        self.observer = await AmiConnection.connect(pbx_host, self.layout.ami_port, "pr-observer",
                                                    self.layout.observer_secret)
        self.observer.subscribers.append(self._on_pbx_event)
        self.world_ami = await AmiConnection.connect(self.world.ami_host, self.world.ami_port,
                                                     "world", self.world.secret)
        self.world_ami.subscribers.append(self._on_world_event)
        if self.desk_secret:
            await self.wait_desk_registered()

    @classmethod
    async def attach(cls, runtime: dict[str, str], prompts: Path,
                     prompts_name: str = "peoples-response") -> RealLine:
        """Connect to the PBX and world that `up` runs (its var/run/up.json)."""
        line = cls.__new__(cls)
        line.install = Path(runtime.get("pbx_state", "."))
        line.state = Path(runtime.get("pbx_state", "."))
        line.prompts, line.prompts_name = Path(prompts), prompts_name
        line.agi_url, line.desk_secret, line.extra_env = "", None, {}
        line.network = None
        line.ami_secret = runtime.get("ami_secret", "")
        line.sounds = SoundResolver(prompts_dir=line.prompts, prompts_prefix=prompts_name)
        line.calls, line.by_channel, line._early = {}, {}, {}
        line.layout = line.world = None
        line.pbx_proc = line.world_proc = None
        line.pbx_events, line._identifying = [], set()
        # Several nodes (`up --nodes N`): an observer on each, their channels named
        # "<node>|<channel>" as the dispatcher and the call records name them.
        nodes = dict(pair.split("=", 1) for pair in runtime.get("nodes", "").split(",")
                     if "=" in pair) or {"": runtime["ami"]}
        line.observers = {}
        for node, address in nodes.items():
            host, _, port = address.rpartition(":")
            conn = await AmiConnection.connect(host, int(port), "pr-observer",
                                               runtime["observer_secret"])
            conn.subscribers.append(functools.partial(line._on_pbx_event, node=node))
            line.observers[node] = conn
        line.observer = next(iter(line.observers.values()))
        whost, _, wport = runtime["world_ami"].rpartition(":")
        line.world_ami = await AmiConnection.connect(whost, int(wport), "world",
                                                     runtime["world_secret"])
        line.world_ami.subscribers.append(line._on_world_event)
        return line

    async def wait_desk_registered(self, timeout: float = 20) -> None:
        """Until the fallback desk has a contact on the PBX, or RuntimeError (a scenario
        that needs the desk would otherwise fail later, and unclearly)."""
        assert self.observer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            reply = await self.observer.action({"Action": "PJSIPShowContacts"})
            items = reply.get("_items", [])
            if any(i.get("Endpoint") == "fallback-desk" for i in items):  # type: ignore[union-attr]
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the fallback desk did not register with the PBX in {timeout:.0f} s "
                           f"(see {self.world.log if self.world else 'the world log'})")

    async def hangup_channel(self, ref: str) -> None:
        """Hang up a PBX channel: ``<node>|<channel>`` on several nodes."""
        node, channel = split(ref)
        conn = self.observers.get(node, self.observer) if self.observers else self.observer
        if conn is not None:
            await conn.action({"Action": "Hangup", "Channel": channel})

    async def close(self) -> None:
        """Our AMI sessions (what `attach` opened)."""
        for conn in {*self.observers.values(), self.observer, self.world_ami} - {None}:
            await conn.close()

    async def stop(self) -> None:
        for conn in (self.observer, self.world_ami):
            if conn is not None:
                await conn.close()
        for proc in (self.world_proc, self.pbx_proc):
            if proc is not None:
                await asyncio.to_thread(proc.stop)

    # ---- calls and phones ------------------------------------------------------------------
    async def call(self, script: CallerScript, source: str = "direct") -> RealCall:
        call = RealCall(self, script, source)
        await call.place()
        return call

    async def set_phones(self, default: str | None = None,
                         entries: dict[str, str] | None = None) -> None:
        """What each phone does when rung (see localpbx.world); replaces earlier settings."""
        assert self.world_ami is not None
        await self.world_ami.action({"Action": "DBDelTree", "Family": "phones"})
        if default:
            await self.world_ami.action({"Action": "DBPut", "Family": "phones", "Key": "default",
                                         "Val": default})
        for match, behaviour in (entries or {}).items():
            await self.world_ami.action({"Action": "DBPut", "Family": "phones",
                                         "Key": match,
                                         "Val": behaviour})

    def duration(self, name: str) -> float:
        samples = self.sounds.duration_samples(name)
        return (samples or 0) / RATE

    # ---- events ----------------------------------------------------------------------------
    def _on_world_event(self, e: Message) -> None:
        if e.get("Event") == "Newchannel":
            uniqueid = e.get("Uniqueid", "")
            if uniqueid.endswith("-w") and uniqueid[:-2] in self.calls:
                self.calls[uniqueid[:-2]].world_channel = e.get("Channel", "")
        elif e.get("Event") == "OriginateResponse" and e.get("Response") == "Failure":
            uniqueid = e.get("Uniqueid", "")
            call = self.calls.get(uniqueid[:-2]) if uniqueid.endswith("-w") else None
            if call is not None:
                call.trace.log.append(f"world originate failed: reason {e.get('Reason')}")
                call.finished.set()

    def _on_pbx_event(self, e: Message, node: str = "") -> None:
        self.pbx_events.append(e)
        channel = qualify(node, e.get("Channel", "")) if node and e.get("Channel") else \
            e.get("Channel", "")
        call = self.by_channel.get(channel)
        if call is not None:
            call.on_pbx_event(e)
            if e.get("Event") == "Hangup":
                self.by_channel.pop(channel, None)
            return
        if e.get("Event") == "Newchannel" and split(channel)[1].startswith("PJSIP/") and \
                e.get("Context", "").startswith("from-"):
            self._early[channel] = [e]
            task = asyncio.ensure_future(self._identify(channel))
            self._identifying.add(task)
            task.add_done_callback(self._identifying.discard)
        elif channel in self._early:
            self._early[channel].append(e)

    async def _identify(self, channel: str) -> None:
        """Which of our callers a new PBX channel is (its X-PR-Sim header)."""
        node, bare = split(channel)
        observer = self.observers.get(node, self.observer) if self.observers else self.observer
        assert observer is not None
        try:
            reply = await observer.action({"Action": "Getvar", "Channel": bare,
                                           "Variable": "PJSIP_HEADER(read,X-PR-Sim)"})
        except Exception:
            self._early.pop(channel, None)
            return
        call = self.calls.get(reply.get("Value", ""))
        early = self._early.pop(channel, [])
        if call is None:
            return
        call.trace.channel = channel
        call.trace.uniqueid = early[0].get("Uniqueid", "") if early else ""
        self.by_channel[channel] = call
        call.started.set()
        for event in early:
            call.on_pbx_event(event)
