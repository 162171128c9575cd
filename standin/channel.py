"""A channel of the stand-in PBX and the trace of what happened on it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standin.caller import Caller, CallerScript
from standin.dialplan import evaluate

# Asterisk's channel state numbers (include/asterisk/channelstate.h).
STATE_DOWN, STATE_RING, STATE_RINGING, STATE_UP = 0, 4, 5, 6
STATE_DESC = {STATE_DOWN: "Down", STATE_RING: "Ring", STATE_RINGING: "Ringing", STATE_UP: "Up"}


@dataclass
class AgiTranscript:
    """Every line of one FastAGI session, both ways, in order.

    ``lines`` holds ("<<", text) for what the PBX sent, (">>", text) for what the
    FastAGI server sent, ("--", note) for socket events. Text is without its LF.
    """

    url: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    status: str | None = None

    @property
    def commands(self) -> list[str]:
        """Every command line the server sent, each as executed."""
        return [text for way, text in self.lines if way == ">>"]

    @property
    def replies(self) -> list[str]:
        return [text for way, text in self.lines if way == "<<"]


@dataclass
class CallTrace:
    """What a test wants to know about a call (live: it fills in while the call runs)."""

    channel: str
    uniqueid: str
    prompts: list[str] = field(default_factory=list)
    missing_prompts: list[str] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)  # (input point, answer)
    variables: dict[str, str] = field(default_factory=dict)
    agi_status: list[str] = field(default_factory=list)
    path: list[tuple[str, str, int, str]] = field(default_factory=list)
    transcripts: list[AgiTranscript] = field(default_factory=list)
    room: str | None = None
    fallback_dialed: bool = False
    dialed: list[str] = field(default_factory=list)
    hung_up_at: str | None = None
    hung_up_by: str | None = None  # "caller", "pbx", "dialplan", "agi", "loop-guard"
    loop_guard: str | None = None
    recordings: list[Path] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    sim_time_s: float = 0.0
    log: list[str] = field(default_factory=list)


class Channel:
    """One call leg: its name, variables, caller ID, place in the dialplan, caller."""

    def __init__(
        self,
        name: str,
        uniqueid: str,
        context: str,
        exten: str,
        script: CallerScript,
        tech: str = "PJSIP",
    ) -> None:
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = uniqueid
        self.tech = tech
        self.context = context
        self.exten = exten
        self.priority = 1
        self.dnid = exten
        self.script = script
        self.caller = Caller(script)
        self.language = script.language
        self.caller_id_num = script.caller_id_num
        self.caller_id_name = script.caller_id_name
        self.state = STATE_RING
        self.trace = CallTrace(channel=name, uniqueid=uniqueid)
        self.variables = self.trace.variables  # one dict: the trace shows the live values
        self.variables.update(script.variables)
        self.hangup_event = asyncio.Event()
        # Set by a hang-up or an async goto (AMI Redirect, ChannelRedirect): whatever the
        # channel is doing (a prompt, an AGI command, a room) stops.
        self.interrupt_event = asyncio.Event()
        self.moving: tuple[str, str, int] | None = None  # where an async goto sends it
        self.settled = asyncio.Event()  # in a room / bridged, for place_call to return
        self.kicked = asyncio.Event()
        self.kick_result = "KICKED"
        # The timed key that stopped the last prompt (see StandinPBX.play_prompt).
        self.last_key, self.last_keys, self.last_endpos = "", "", 0
        # SHARED() variables (func_global): their own namespace, settable from elsewhere.
        self.shared: dict[str, str] = {}
        # Variables a Dial passes to the channel it creates: name -> True for __VAR (on to
        # that channel's own children too), False for _VAR (one level).
        self.inheritable: dict[str, bool] = {}
        # What answered when this channel was dialled (a phone behaviour's kind), for AMD().
        self.answered_by = ""
        # CONFBRIDGE(user,...) on this channel: a dynamic user profile (None: none set).
        self.dynamic_user: dict[str, str] | None = None
        self.hangup_cause = 16
        self.task: asyncio.Task[None] | None = None
        self.stack: list[tuple[str, str, int]] = []  # Gosub return addresses
        self.jumped = False  # a Goto moved us: don't step to the next priority
        self.finished = asyncio.Event()
        # Set by the PBX: dialplan globals, and where VarSet events go.
        self.globals: dict[str, str] = {}
        self.emit: Callable[[dict[str, Any]], None] = lambda event: None

    @property
    def hung_up(self) -> bool:
        return self.hangup_event.is_set()

    @property
    def interrupted(self) -> bool:
        """Hung up, or being moved elsewhere: what res_agi's ast_check_hangup() sees."""
        return self.hangup_event.is_set() or self.moving is not None

    def request_hangup(self, by: str, at: str | None = None, cause: int = 16) -> None:
        """Soft hang-up: whatever is running notices and returns."""
        if self.hung_up:
            return
        self.hangup_cause = cause
        self.trace.hung_up_by = by
        self.trace.hung_up_at = at or self.trace.hung_up_at or self.location()
        self.caller.hung_up = True
        self.hangup_event.set()
        self.interrupt_event.set()

    def move_to(self, context: str, exten: str, priority: int) -> None:
        """ast_async_goto: stop what runs (a room is left as if kicked) and go on there."""
        if self.hung_up:
            return
        self.moving = (context, exten, priority)
        self.trace.log.append(f"moved to {context},{exten},{priority}")
        self.interrupt_event.set()
        self.kick_result = "MOVED"
        self.kicked.set()

    def take_move(self) -> bool:
        """Apply a pending async goto (the interpreter does it between applications)."""
        if self.moving is None or self.hung_up:
            return False
        self.context, self.exten, self.priority = self.moving
        self.moving = None
        self.jumped = True
        self.interrupt_event.clear()
        self.kicked.clear()
        self.kick_result = "KICKED"
        return True

    def location(self) -> str:
        return f"{self.context},{self.exten},{self.priority}"

    def advance_time(self, seconds: float) -> None:
        self.trace.sim_time_s += max(seconds, 0.0)

    def snapshot(self) -> dict[str, str]:
        """The channel headers AMI puts on every channel event."""
        return {
            "Channel": self.name,
            "ChannelState": str(self.state),
            "ChannelStateDesc": STATE_DESC.get(self.state, "Unknown"),
            "CallerIDNum": self.caller_id_num or "<unknown>",
            "CallerIDName": self.caller_id_name or "<unknown>",
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": self.language,
            "AccountCode": "",
            "Context": self.context,
            "Exten": self.exten,
            "Priority": str(self.priority),
            "Uniqueid": self.uniqueid,
            "Linkedid": self.linkedid,
        }

    # ---- variables and functions (main/pbx_variables.c, the subset we use) ----------
    def get_variable(self, name: str) -> str | None:
        """A variable as GET VARIABLE / ${NAME} sees it; None when unset."""
        if name.endswith(")") and "(" in name:
            return self.read_function(name)
        builtin = {"CHANNEL": self.name, "UNIQUEID": self.uniqueid, "EXTEN": self.exten,
                   "CONTEXT": self.context, "PRIORITY": str(self.priority),
                   "LANGUAGE": self.language, "EPOCH": str(int(time.time()))}
        if name in builtin:
            return builtin[name]
        if name in self.variables:
            return self.variables[name]
        return self.globals.get(name)

    def set_variable(self, name: str, value: str) -> None:
        if name.endswith(")") and "(" in name:
            func, _, arg = name[:-1].partition("(")
            key = (func.strip().upper(), arg.strip().lower())
            if key == ("CHANNEL", "language"):
                self.language = value
            elif key == ("CALLERID", "num"):
                self.caller_id_num = value
            elif key == ("CALLERID", "name"):
                self.caller_id_name = value
            elif key[0] == "SHARED":
                var, _, other = arg.partition(",")
                target = self.lookup(other.strip()) if other.strip() else self
                if target is not None:
                    target.shared[var.strip()] = value
            elif key[0] == "CONFBRIDGE":
                kind, _, option = arg.partition(",")
                if kind.strip().lower() == "user":
                    self.set_dynamic_user(option.strip().lower(), value.strip())
            else:
                self.trace.log.append(f"write to unsupported function {name}")
            return
        if name.startswith("_"):
            # _VAR / __VAR: inheritance prefixes (a Dial's new channel gets them), not part
            # of the name.
            self.inheritable[name.lstrip("_")] = name.startswith("__")
            name = name.lstrip("_")
        self.variables[name] = value
        self.emit({"Event": "VarSet", "Privilege": "dialplan,all", **self.snapshot(),
                   "Variable": name, "Value": value})

    def read_function(self, expr: str) -> str | None:
        func, _, args = expr[:-1].partition("(")
        func, argv = func.strip().upper(), [a.strip() for a in args.split(",")]
        if func == "CALLERID":
            return {"num": self.caller_id_num or "", "name": self.caller_id_name or "",
                    "all": self.callerid_all()}.get(argv[0].lower(), "")
        if func == "ENV":
            return os.environ.get(argv[0], "")
        if func == "PJSIP_HEADER":  # header names are case-insensitive in SIP
            wanted = argv[1].lower() if len(argv) > 1 else ""
            return next((v for k, v in self.script.sip_headers.items()
                         if k.lower() == wanted), "")
        if func == "LEN":
            return str(len(args))
        if func == "IF":
            cond, _, rest = args.partition("?")
            true_v, _, false_v = rest.partition(":")
            return true_v if cond.strip() not in ("", "0") else false_v
        if func == "CHANNEL":
            return {"language": self.language, "name": self.name, "channeltype": self.tech,
                    "uniqueid": self.uniqueid}.get(argv[0].lower(), "")
        if func == "SHARED":
            target = self.lookup(argv[1]) if len(argv) > 1 and argv[1] else self
            return target.shared.get(argv[0], "") if target is not None else ""
        if func == "IMPORT":  # func_logic: another channel's variable, "" without it
            target = self.lookup(argv[0]) if argv and argv[0] else None
            return (target.get_variable(argv[1]) or "") if target is not None and \
                len(argv) > 1 else ""
        if func == "CUT":
            return _cut(self.get_variable(argv[0]) or "", argv[1] if len(argv) > 1 else "-",
                        argv[2] if len(argv) > 2 else "1")
        if func == "PJSIP_DIAL_CONTACTS":
            return self.contacts(argv[0]) if argv else ""
        if func == "CONFBRIDGE_INFO":
            return self.room_info(argv[0].lower(), argv[1] if len(argv) > 1 else "")
        self.trace.log.append(f"unsupported function {func}")
        return None

    def substitute(self, text: str) -> str:
        """pbx_substitute_variables: ${VAR}, ${FUNC(args)}, ${VAR:o:l} and $[expr]."""
        out, i = [], 0
        while i < len(text):
            if text.startswith(("${", "$["), i):
                open_c, close_c = ("{", "}") if text[i + 1] == "{" else ("[", "]")
                end, depth = i + 1, 0
                for end in range(i + 1, len(text)):
                    depth += (text[end] == open_c) - (text[end] == close_c)
                    if depth == 0:
                        break
                if depth:  # unbalanced: left as it is
                    out.append(text[i:])
                    break
                inner = self.substitute(text[i + 2:end])
                out.append(self._value(inner) if open_c == "{" else evaluate(inner))
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def _value(self, inner: str) -> str:
        if not (inner.endswith(")") and "(" in inner) and ":" in inner:
            name, _, spec = inner.partition(":")  # ${VAR:offset:length}
            off_s, _, len_s = spec.partition(":")
            value = (self.get_variable(name) or "")[int(off_s or 0):]
            return value[: int(len_s)] if len_s.isdigit() else value
        return self.get_variable(inner) or ""

    # Set by the PBX: other channels by name (SHARED(var,channel)), and an endpoint's
    # registered contacts as PJSIP_DIAL_CONTACTS gives them ("" when none).
    lookup: Callable[[str], Channel | None] = staticmethod(lambda name: None)  # type: ignore[assignment]
    contacts: Callable[[str], str] = staticmethod(lambda endpoint: "")  # type: ignore[assignment]
    room_info: Callable[[str, str], str] = staticmethod(lambda kind, room: "0")  # type: ignore[assignment]

    def set_dynamic_user(self, option: str, value: str) -> None:
        """CONFBRIDGE(user,option)=value: ``template`` starts from a named profile."""
        if option == "template":
            self.dynamic_user = {"template": value}
        else:
            if self.dynamic_user is None:
                self.dynamic_user = {"template": "default_user"}
            self.dynamic_user[option] = value

    def callerid_all(self) -> str:
        return f'"{self.caller_id_name or ""}" <{self.caller_id_num or ""}>'

    def __repr__(self) -> str:
        return f"<Channel {self.name} at {self.location()}{' hung up' if self.hung_up else ''}>"


def _cut(value: str, delim: str, fields: str) -> str:
    """func_cut CUT(var,delim,fields): fields "2", "2-", "1-3" (1-based)."""
    parts = value.split(delim or "-")
    start_s, dash, end_s = fields.partition("-")
    try:
        start = int(start_s or 1)
        end = int(end_s) if end_s else (len(parts) if dash else start)
    except ValueError:
        return ""
    return (delim or "-").join(parts[start - 1:end])
