"""Responder phones of the stand-in, and the channels AMI Originate creates to reach them.

The dispatcher rings a responder with ``Action: Originate`` (``Channel: PJSIP/<endpoint>`` or
``PJSIP/+1617...@direct-trunk``); a real phone then rings, is answered or not, and the
person presses keys at the whisper. Here a *behaviour* plays that person:

  ``answer:SECONDS``             rings SECONDS, answers, presses 1 a moment (1.5 s) into the
                                 whisper, as a responder who has heard enough
  ``answer-late:SECONDS``        rings SECONDS, answers, hears the whole whisper, then presses 1
  ``decline[:SECONDS]``          answers (after 2 s by default), presses 2
  ``never``                      rings until the Originate Timeout: Failure, Reason 3
  ``voicemail[:SECONDS]``        answers after 5 s by default and never presses a key: a
                                 mailbox; it must never be bridged (``violations`` says so)
  ``hangup-in-whisper[:SECONDS]`` answers, hangs up as the first whisper prompt ends
  ``busy`` / ``congestion``      Failure, Reason 5 / 8, without ringing
  ``person[:SECONDS]``            someone the line calls back: answers, says hello, listens
                                 (answering-machine detection: HUMAN; ``voicemail``: MACHINE)
  ``unregistered``               a desk phone with no registered contact: Failure, Reason 0
                                 at once, no channel (tests/captures/ami_originate_unregistered)

``pbx.phones`` (see ``phones_for``) maps a dial string, a number / endpoint, or a responder
id (the ``PR_RESPONDER`` variable of the Originate) to a behaviour, with a default.

Every duration is PBX time: real time is seconds x ``pbx.time_scale`` (0.01 in tests
makes a 20 s ring last 0.2 s), because the dispatcher's wave timers run in real time.
The Originate Timeout is not scaled: it is the client's (the dispatcher's) real-time
limit, so it is turned into PBX time here. Reasons are the AST_CONTROL_* codes that main/pbx.c
(ast_pbx_outgoing_exten -> __ast_request_and_dial) puts in OriginateResponse.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from standin.caller import CallerScript
from standin.channel import STATE_DOWN, STATE_RINGING, STATE_UP, Channel

if TYPE_CHECKING:
    from standin.pbx import StandinPBX

log = logging.getLogger(__name__)

# include/asterisk/frame.h enum ast_control_frame_type, as OriginateResponse reports them.
REASON_OTHER, REASON_HANGUP, REASON_RINGING, REASON_ANSWER = 0, 1, 3, 4
REASON_BUSY, REASON_CONGESTION = 5, 8
# main/channel.c causes[] (ast_cause2str); anything else is "Unknown" (captures 11a/11b/13a).
CAUSE_TEXT = {0: "Unknown", 1: "Unallocated (unassigned) number", 16: "Normal Clearing",
              17: "User busy", 18: "No user responding", 19: "User alerting, no answer",
              21: "Call Rejected", 31: "Normal, unspecified",
              34: "Circuit/channel congestion"}
KINDS = {"answer": 2.0, "answer-late": 2.0, "decline": 2.0, "never": math.inf, "voicemail": 5.0,
         "hangup-in-whisper": 2.0, "busy": 0.0, "congestion": 0.0, "unregistered": 0.0,
         "person": 3.0}


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


@dataclass(frozen=True)
class Behaviour:
    kind: str
    seconds: float  # ringing before the phone answers

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        kind, _, secs = text.strip().lower().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown phone behaviour {text!r} (one of {', '.join(KINDS)})")
        if kind in ("answer", "answer-late") and not secs:
            raise ValueError("answer needs its ringing time: answer:SECONDS")
        try:
            seconds = float(secs) if secs else KINDS[kind]
        except ValueError:
            raise ValueError(f"bad seconds in phone behaviour {text!r}") from None
        if seconds < 0 or (kind in ("never", "busy", "congestion", "unregistered") and secs):
            raise ValueError(f"bad phone behaviour {text!r}")
        return cls(kind, seconds)

    def __str__(self) -> str:
        return self.kind if self.kind in ("never", "busy", "congestion", "unregistered") \
            else f"{self.kind}:{self.seconds:g}"

    def script(self) -> CallerScript:
        """The person (or mailbox) at the phone once it has answered."""
        # A moment into the whisper, as localpbx/world.py's phones do on the real PBX.
        if self.kind == "answer":
            return CallerScript(keys=["1@1.5"])
        if self.kind == "answer-late":
            return CallerScript(keys=["1"])
        if self.kind == "decline":
            return CallerScript(keys=["2@1.5"])
        if self.kind == "hangup-in-whisper":
            return CallerScript(hangup_after=1)
        return CallerScript()  # voicemail: listens to everything, presses nothing


@dataclass
class PhoneLeg:
    """One originated call to a phone, for tests and the simulation to inspect."""

    dial: str
    responder: str | None
    behaviour: Behaviour
    channel: str
    uniqueid: str
    outcome: str = "ringing"  # answered, no-answer, busy, congestion, cancelled, failed
    rooms: list[str] = field(default_factory=list)
    ch: Channel | None = None


class PhoneTable:
    """Which behaviour each phone has; ``legs`` records every call placed to one."""

    def __init__(self, default: str = "answer:2") -> None:
        self.default = Behaviour.parse(default)
        self.entries: dict[str, Behaviour] = {}
        self.legs: list[PhoneLeg] = []
        self.violations: list[str] = []  # e.g. a voicemail box bridged into a room

    def set(self, match: str, behaviour: str) -> None:
        """``match`` is a dial string, a number / endpoint, or a PR_RESPONDER id."""
        self.entries[match.strip()] = Behaviour.parse(behaviour)

    def set_default(self, behaviour: str) -> None:
        self.default = Behaviour.parse(behaviour)

    def replace(self, entries: dict[str, str], default: str | None = None) -> None:
        parsed = {m.strip(): Behaviour.parse(b) for m, b in entries.items()}  # all or none
        self.default = Behaviour.parse(default) if default else self.default
        self.entries = parsed

    def lookup(self, dial: str, responder: str | None = None) -> Behaviour:
        _, _, data = dial.partition("/")
        number = data.partition("@")[0]
        for key in (responder, dial, data, number, number.lstrip("+")):
            if key and key in self.entries:
                return self.entries[key]
        return self.default

    def leg(self, channel: str) -> PhoneLeg | None:
        return next((leg for leg in self.legs if leg.channel == channel), None)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("Event") != "ConfbridgeJoin":
            return
        leg = self.leg(event.get("Channel", ""))
        if leg is None:
            return
        leg.rooms.append(event.get("Conference", ""))
        if leg.behaviour.kind == "voicemail":
            msg = f"voicemail {leg.dial} was bridged into {event.get('Conference')}"
            log.error("stand-in: %s", msg)
            self.violations.append(msg)


def phones_for(pbx: StandinPBX) -> PhoneTable:
    """The PBX's phone table (``pbx.phones``), created on first use."""
    table = getattr(pbx, "phones", None)
    if not isinstance(table, PhoneTable):
        table = PhoneTable()
        pbx.phones = table  # type: ignore[attr-defined]  # StandinPBX has no slot for it
        pbx.subscribe(table.on_event)
    return table


@dataclass
class OriginateRequest:
    """The parts of an AMI Originate the stand-in acts on (manager.c action_originate)."""

    dial: str  # Channel header: tech/data
    context: str = ""
    exten: str = ""
    priority: int = 1
    application: str = ""
    data: str = ""
    timeout_ms: int = 30000
    caller_num: str | None = None
    caller_name: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    channel_id: str = ""
    action_id: str = ""


@dataclass
class OriginateResult:
    success: bool
    reason: int
    channel: str  # the channel name, or the dial string when no channel came up
    uniqueid: str


def parse_callerid(text: str) -> tuple[str | None, str | None]:
    """ast_callerid_parse: ``"Name" <num>`` -> (num, name); a bare number or a bare name."""
    text = text.strip()
    m = re.fullmatch(r'(.*?)\s*<([^>]*)>\s*', text)
    if m:
        name = m.group(1).strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
        num = re.sub(r"[()\-.\s]", "", m.group(2))  # ast_shrink_phone_number
        return num or None, name or None
    if re.fullmatch(r"[+0-9()\-.\s]+", text or "x"):
        return re.sub(r"[()\-.\s]", "", text) or None, None
    return None, text or None


def _new_channel(pbx: StandinPBX, req: OriginateRequest, script: CallerScript) -> Channel:
    # Numbering shares the PBX's counter so names never collide with start_call's.
    pbx._seq += 1
    tech, _, data = req.dial.partition("/")
    endpoint = data.rpartition("@")[2] if tech.upper() == "PJSIP" else data
    suffix = ";1" if tech.lower() == "local" else ""
    name = f"{tech}/{endpoint}-{pbx._seq:08x}{suffix}"
    uniqueid = req.channel_id or f"{pbx.uniqueid_prefix}{pbx._epoch}.{pbx._seq}"
    ch = Channel(name, uniqueid, req.context or "default", req.exten or "s", script, tech)
    ch.priority = req.priority if req.context else 1
    ch.caller_id_num, ch.caller_id_name = req.caller_num, req.caller_name
    pbx.adopt(ch)
    ch.state = STATE_DOWN
    return ch


async def _pbx_sleep(pbx: StandinPBX, ch: Channel, seconds: float) -> bool:
    """Let ``seconds`` of PBX time pass on a ringing channel; True if it was hung up."""
    if pbx.time_scale <= 0 or seconds <= 0:
        await asyncio.sleep(0)
        return ch.hung_up
    try:
        await asyncio.wait_for(ch.hangup_event.wait(), seconds * pbx.time_scale)
    except TimeoutError:
        return ch.hung_up
    return True


async def _originate_local(pbx: StandinPBX, req: OriginateRequest,
                           done: Callable[[OriginateResult], OriginateResult]) -> OriginateResult:
    """Originate Local/<exten>@<context>[/n] with an Application (core_local.c): the ;1 half
    runs the application, the ;2 half the dialplan at exten@context; audio of either reaches
    the other. When ;2 ends, ;1 hangs up. Prompts ;2 plays while ;1 is in a room are noted
    as heard in that room (``pbx.announcements``)."""
    target = req.dial.partition("/")[2].removesuffix("/n")
    exten, _, context = target.partition("@")
    if pbx.dialplan.find_extension(context, exten) is None:
        return done(OriginateResult(False, REASON_OTHER, req.dial, req.channel_id or "<unknown>"))
    one = _new_channel(pbx, req, CallerScript())
    two = Channel(one.name[:-1] + "2", f"{pbx.uniqueid_prefix}{pbx._epoch}.{pbx._seq}.2", context,
                  exten, CallerScript(), "Local")
    pbx.adopt(two)
    for ch in (one, two):
        ch.state = STATE_UP
        pbx.channels[ch.name] = ch
        pbx.emit({"Event": "Newchannel", "Privilege": "call,all", **ch.snapshot()})
    for name, value in req.variables:
        one.set_variable(name, value)
    res = done(OriginateResult(True, REASON_ANSWER, one.name, one.uniqueid))

    one.task = asyncio.create_task(_run_app(pbx, one, req.application, req.data), name=one.name)
    start = len(two.trace.prompts)

    async def run_two() -> None:
        await pbx._run(two)
        for prompt in two.trace.prompts[start:]:
            pbx.announcements.append((one.trace.room or "", prompt))
        one.request_hangup("local", at=f"{context},{exten}")

    two.task = asyncio.create_task(run_two(), name=two.name)
    return res


def _end_unanswered(pbx: StandinPBX, ch: Channel, cause: int) -> None:
    ch.state = STATE_DOWN
    pbx.emit({"Event": "Hangup", "Privilege": "call,all", **ch.snapshot(),
              "Cause": str(cause), "Cause-txt": cause_text(cause)})
    pbx.channels.pop(ch.name, None)
    ch.finished.set()


def originate_response(req: OriginateRequest, res: OriginateResult) -> dict[str, str]:
    """manager.c fast_originate(): the event an Async Originate ends with."""
    event = {"Event": "OriginateResponse", "Privilege": "call,all"}
    if req.action_id:
        event["ActionID"] = req.action_id
    event.update({"Response": "Success" if res.success else "Failure", "Channel": res.channel})
    if req.application:
        event.update({"Application": req.application, "Data": req.data})
    else:
        event.update({"Context": req.context, "Exten": req.exten})
    event.update({"Reason": str(res.reason), "Uniqueid": res.uniqueid,
                  "CallerIDNum": req.caller_num or "<unknown>",
                  "CallerIDName": req.caller_name or "<unknown>"})
    return event


async def originate(pbx: StandinPBX, req: OriginateRequest, *, report: bool) -> OriginateResult:
    """Ring a phone and, once it answers, run the Originate's context or application on
    the new channel. Returns when the phone answered or the attempt failed; with
    ``report`` (Async) the OriginateResponse event goes out then too."""
    table = phones_for(pbx)
    variables = dict(req.variables)
    behaviour = table.lookup(req.dial, variables.get("PR_RESPONDER"))

    def done(res: OriginateResult) -> OriginateResult:
        if report:
            pbx.emit(originate_response(req, res))
        return res

    if req.channel_id and any(c.uniqueid == req.channel_id for c in pbx.channels.values()):
        # Channel allocation refuses a uniqueid already in use (ARI says 409 for the same
        # thing); fast_originate then reports a plain failure with the id asked for.
        log.warning("stand-in: Originate ChannelId %s already in use", req.channel_id)
        return done(OriginateResult(False, REASON_OTHER, req.dial, req.channel_id))
    if req.dial.lower().startswith("local/") and req.application:
        return await _originate_local(pbx, req, done)
    if behaviour.kind == "unregistered":
        await asyncio.sleep(0)
        return done(OriginateResult(False, REASON_OTHER, req.dial, "<unknown>"))

    ch = _new_channel(pbx, req, behaviour.script())
    leg = PhoneLeg(req.dial, variables.get("PR_RESPONDER"), behaviour, ch.name, ch.uniqueid,
                   ch=ch)
    table.legs.append(leg)
    pbx.channels[ch.name] = ch
    pbx.emit({"Event": "Newchannel", "Privilege": "call,all", **ch.snapshot()})
    for name, value in req.variables:
        ch.set_variable(name, value)
    dest = {f"Dest{k}": v for k, v in ch.snapshot().items()}
    pbx.emit({"Event": "DialBegin", "Privilege": "call,all", **dest,
              "DialString": req.dial.partition("/")[2]})

    failed = {"busy": (REASON_BUSY, 17), "congestion": (REASON_CONGESTION, 34)}
    if behaviour.kind in failed:
        reason, cause = failed[behaviour.kind]
        await asyncio.sleep(0)
        leg.outcome = behaviour.kind
        res = done(OriginateResult(False, reason, req.dial, req.channel_id or "<unknown>"))
        _end_unanswered(pbx, ch, cause)
        return res

    ch.state = STATE_RINGING
    pbx.emit({"Event": "Newstate", "Privilege": "call,all", **ch.snapshot()})
    limit = max(req.timeout_ms, 0) / 1000
    if pbx.time_scale > 0:
        limit /= pbx.time_scale  # the client's real seconds, in PBX seconds
    try:
        hung = await _pbx_sleep(pbx, ch, min(behaviour.seconds, limit))
    except asyncio.CancelledError:  # the server is closing: don't leave a ringing ghost
        leg.outcome = "cancelled"
        _end_unanswered(pbx, ch, 16)
        raise
    if hung or behaviour.seconds > limit:
        # Cancelled while ringing (the dispatcher hung the leg up): reason 1, the cause
        # the Hangup asked for. Rang out: reason 3 and cause 19 (capture 11b).
        reason, cause = (REASON_HANGUP, ch.hangup_cause) if hung else (REASON_RINGING, 19)
        leg.outcome = "cancelled" if hung else "no-answer"
        res = done(OriginateResult(False, reason, req.dial, req.channel_id or "<unknown>"))
        _end_unanswered(pbx, ch, cause)
        return res

    ch.state = STATE_UP
    leg.outcome = "answered"
    pbx.emit({"Event": "Newstate", "Privilege": "call,all", **ch.snapshot()})
    pbx.emit({"Event": "DialEnd", "Privilege": "call,all",
              **{f"Dest{k}": v for k, v in ch.snapshot().items()}, "DialStatus": "ANSWER"})
    res = done(OriginateResult(True, REASON_ANSWER, ch.name, ch.uniqueid))
    if req.application:
        ch.task = asyncio.create_task(_run_app(pbx, ch, req.application, req.data),
                                      name=ch.name)
    else:
        # The PBX's own runner: dialplan, h extension, leaving rooms, Hangup event.
        ch.task = asyncio.create_task(pbx._run(ch), name=ch.name)
    return res


async def _run_app(pbx: StandinPBX, ch: Channel, app: str, data: str) -> None:
    """Originate with Application/Data: run that one application, then hang up."""
    try:
        res = await pbx.interp.exec_app(ch, app, data)
        if res is None:
            ch.trace.log.append(f"Originate: no application {app}")
        if not ch.hung_up:
            ch.request_hangup("dialplan", at=f"{app}({data})")
    finally:
        ch.state = STATE_DOWN
        cause = ch.hangup_cause
        pbx.emit({"Event": "Hangup", "Privilege": "call,all", **ch.snapshot(),
                  "Cause": str(cause), "Cause-txt": cause_text(cause)})
        pbx.channels.pop(ch.name, None)
        ch.finished.set()
