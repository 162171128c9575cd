"""A subset of Asterisk's extensions.conf: parsing, substitution, expressions, and the
interpreter loop with the flow applications (Goto, GotoIf, Gosub, ExecIf, Set...).

The PBX registers the applications that touch the outside (AGI, ConfBridge, Dial,
Playback, UserEvent). Semantics follow main/pbx.c and main/app.c where it matters for
our dialplan: the whole application data is substituted once before the application
runs; arguments are split on commas outside parentheses and quotes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Re-exported: channel.py and the tests import these from here.
from standin.expressions import evaluate, is_true, separate_args  # noqa: F401

if TYPE_CHECKING:  # only for types: channel.py imports this module
    from standin.channel import Channel

log = logging.getLogger(__name__)

AppFunc = Callable[["Channel", str], Awaitable[int]]
TIMED_APPS = frozenset({"confbridge", "dial", "playback", "wait", "agi"})


@dataclass
class Priority:
    number: int
    label: str | None
    app: str
    data: str
    line: int


@dataclass
class Extension:
    pattern: str
    priorities: dict[int, Priority] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class Context:
    name: str
    extensions: list[Extension] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)


def _strip_comment(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out).strip()


def pattern_matches(pattern: str, exten: str) -> bool:
    """Asterisk extension matching: literal, or ``_`` patterns with X Z N [..] . !"""
    if not pattern.startswith("_"):
        return pattern == exten
    rx = []
    p = pattern[1:]
    i = 0
    while i < len(p):
        c = p[i]
        if c in "xX":
            rx.append("[0-9]")
        elif c in "zZ":
            rx.append("[1-9]")
        elif c in "nN":
            rx.append("[2-9]")
        elif c == ".":
            rx.append(".+")
        elif c == "!":
            rx.append(".*")
        elif c == "[":
            end = p.index("]", i)
            rx.append("[" + re.escape(p[i + 1:end]).replace("\\-", "-") + "]")
            i = end
        else:
            rx.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), exten) is not None


class Dialplan:
    """The parsed contexts and globals of one extensions.conf."""

    def __init__(self) -> None:
        self.contexts: dict[str, Context] = {}
        self.globals: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path) -> Dialplan:
        return cls.parse(Path(path).read_text())

    @classmethod
    def parse(cls, text: str) -> Dialplan:
        dp = cls()
        ctx: Context | None = None
        ext: Extension | None = None
        last = 0
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = _strip_comment(raw)
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and "]" in line:
                name = line[1:line.index("]")].strip()
                ctx = None if name == "general" else dp.contexts.setdefault(name, Context(name))
                ext = None
                continue
            if ctx is None:
                continue
            key, sep, rest = line.partition("=>")
            if not sep:
                key, sep, rest = line.partition("=")
            key, rest = key.strip().lower(), rest.strip()
            if ctx.name == "globals":
                dp.globals[line.partition("=")[0].strip()] = line.partition("=")[2].strip()
            elif key == "include":
                ctx.includes.append(rest)
            elif key in ("exten", "same"):
                if key == "exten":
                    pattern, _, rest = rest.partition(",")
                    ext = next((e for e in ctx.extensions if e.pattern == pattern.strip()), None)
                    if ext is None:
                        ext = Extension(pattern.strip())
                        ctx.extensions.append(ext)
                if ext is None:
                    raise ValueError(f"line {lineno}: 'same =>' without an extension")
                prio_s, _, appdata = rest.partition(",")
                prio_s = prio_s.strip()
                label = None
                m = re.fullmatch(r"(\w+)\((.+)\)", prio_s)
                if m:
                    prio_s, label = m.group(1), m.group(2)
                if prio_s == "hint":
                    continue
                number = last + 1 if prio_s == "n" else int(prio_s)
                last = number
                app, _, data = appdata.strip().partition("(")
                if data.endswith(")"):
                    data = data[:-1]
                ext.priorities[number] = Priority(number, label, app.strip(), data, lineno)
                if label:
                    ext.labels[label] = number
        if "globals" in dp.contexts:
            del dp.contexts["globals"]
        return dp

    def find_extension(self, context: str, exten: str, _seen: set[str] | None = None
                       ) -> Extension | None:
        ctx = self.contexts.get(context)
        if ctx is None:
            return None
        exact = next((e for e in ctx.extensions if e.pattern == exten), None)
        if exact:
            return exact
        found = next((e for e in ctx.extensions if pattern_matches(e.pattern, exten)), None)
        if found:
            return found
        seen = (_seen or set()) | {context}
        for inc in ctx.includes:
            if inc not in seen and (e := self.find_extension(inc, exten, seen)):
                return e
        return None


class Interpreter:
    """Runs channels through a Dialplan; the PBX adds its applications to ``apps``."""

    def __init__(self, dialplan: Dialplan, globals_overrides: dict[str, str] | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None,
                 max_steps: int = 500) -> None:
        self.dialplan = dialplan
        self.globals = {**dialplan.globals, **(globals_overrides or {})}
        self.emit = emit or (lambda event: None)  # given to each channel, for VarSet
        self.max_steps = max_steps
        self.channels: dict[str, Channel] = {}  # for GET FULL VARIABLE on another channel
        self.apps: dict[str, AppFunc] = {}
        for name, fn in {
            "noop": self._noop, "verbose": self._noop, "log": self._noop,
            "set": self._set, "answer": self._answer, "ringing": self._noop,
            "progress": self._noop, "goto": self._goto, "gotoif": self._gotoif,
            "gosub": self._gosub, "return": self._return, "execif": self._execif,
            "hangup": self._hangup, "wait": self._wait,
        }.items():
            self.apps[name] = fn

    # ---- running -----------------------------------------------------------------
    async def exec_app(self, ch: Channel, app: str, data: str) -> int | None:
        """Run one application; None when there is no such application."""
        fn = self.apps.get(app.strip().lower())
        if fn is None:
            return None
        return await fn(ch, data)

    async def run(self, ch: Channel, dead: bool = False) -> None:
        """Run from the channel's location until hang-up, an app returns -1, or the end."""
        steps = 0
        while dead or not ch.hung_up:
            if not dead:
                ch.take_move()  # an async goto between applications: go on there
            ext = self.dialplan.find_extension(ch.context, ch.exten)
            prio = ext.priorities.get(ch.priority) if ext else None
            if prio is None:
                ch.trace.log.append(f"no priority {ch.location()}: end of dialplan")
                return
            # The guard is for loops that never wait; an application that passes time (a
            # room, a prompt, a Dial) ends the count, as a waiting caller's loop is normal.
            steps = 0 if prio.app.lower() in TIMED_APPS else steps + 1
            if steps > self.max_steps:
                ch.trace.loop_guard = f"stopped after {self.max_steps} steps at {ch.location()}"
                ch.request_hangup("loop-guard")
                return
            ch.trace.path.append((ch.context, ch.exten, ch.priority, prio.app))
            ch.jumped = False
            data = ch.substitute(prio.data)
            res = await self.exec_app(ch, prio.app, data)
            if res is None:  # Asterisk would hang up here; the brief asks us to go on
                ch.trace.log.append(f"unknown application {prio.app} at {ch.location()}")
                res = 0
            if not dead and ch.take_move():
                continue  # moved while the application ran: it ended, the channel goes on
            if res < 0 or (ch.hung_up and not dead):
                return
            if not ch.jumped:
                ch.priority += 1

    async def run_h(self, ch: Channel) -> None:
        """The h extension runs after hang-up in the context the channel was in."""
        ctx = self.dialplan.contexts.get(ch.context)
        if ctx is None or not any(e.pattern == "h" for e in ctx.extensions):
            return
        ch.exten, ch.priority = "h", 1
        await self.run(ch, dead=True)

    def jump(self, ch: Channel, target: str) -> bool:
        """Goto semantics: [[context,]exten,]priority-or-label."""
        parts = [p.strip() for p in separate_args(target)]
        parts = [p for p in parts if p != ""] or [""]
        context, exten = ch.context, ch.exten
        if len(parts) == 3:
            context, exten, prio = parts
        elif len(parts) == 2:
            exten, prio = parts
        else:
            prio = parts[0]
        ext = self.dialplan.find_extension(context, exten)
        if prio.isdigit():
            number = int(prio)
        elif ext and prio in ext.labels:
            number = ext.labels[prio]
        else:
            ch.trace.log.append(f"Goto to unknown {target!r}")
            return False
        ch.context, ch.exten, ch.priority = context, exten, number
        ch.jumped = True
        return True

    # ---- flow applications -------------------------------------------------------------
    async def _noop(self, ch: Channel, data: str) -> int:
        return 0

    async def _set(self, ch: Channel, data: str) -> int:
        name, _, value = data.partition("=")
        ch.set_variable(name.strip(), value)
        return 0

    async def _answer(self, ch: Channel, data: str) -> int:
        ch.state = 6  # AST_STATE_UP
        return 0

    async def _goto(self, ch: Channel, data: str) -> int:
        return 0 if self.jump(ch, data) else -1

    async def _gotoif(self, ch: Channel, data: str) -> int:
        cond, _, dests = data.partition("?")
        true_d, _, false_d = dests.partition(":")
        dest = true_d if is_true(cond) else false_d
        if dest.strip():
            return 0 if self.jump(ch, dest) else -1
        return 0

    async def _gosub(self, ch: Channel, data: str) -> int:
        target, args = data, ""
        m = re.fullmatch(r"(.*?)\((.*)\)", data.strip())
        if m:
            target, args = m.group(1), m.group(2)
        ch.stack.append((ch.context, ch.exten, ch.priority + 1))
        for n, arg in enumerate(separate_args(args) if args else [], 1):
            ch.variables[f"ARG{n}"] = arg
        if not self.jump(ch, target):
            ch.stack.pop()
            return -1
        return 0

    async def _return(self, ch: Channel, data: str) -> int:
        if not ch.stack:
            ch.trace.log.append("Return without Gosub")
            return -1
        ch.context, ch.exten, ch.priority = ch.stack.pop()
        ch.jumped = True
        if data:
            ch.variables["GOSUB_RETVAL"] = data
        return 0

    async def _execif(self, ch: Channel, data: str) -> int:
        parts = separate_args(data, "?", remove_chars=False)
        if len(parts) < 2:
            return 0
        branches = separate_args("?".join(parts[1:]), ":", remove_chars=False)
        chosen = branches[0] if is_true(parts[0]) else (branches[1] if len(branches) > 1 else "")
        if not chosen.strip():
            return 0
        app, _, appdata = chosen.partition("(")
        res = await self.exec_app(ch, app, appdata[:-1] if appdata.endswith(")") else appdata)
        return 0 if res is None else res

    async def _hangup(self, ch: Channel, data: str) -> int:
        ch.request_hangup("dialplan", at=ch.location())
        return -1

    async def _wait(self, ch: Channel, data: str) -> int:
        try:
            ch.advance_time(float(data or 0))
        except ValueError:
            pass
        return 0
