"""FastAGI wire protocol, our side: the header block, quoting, and reading replies.

Why our own reader rather than panoramisk's or pyst2's (see README, "FastAGI transport"):
Asterisk sends an unsolicited ``HANGUP`` line ~40 ms after the reply to the command that
saw the hang-up, so it lands where the *next* reply is expected; both libraries then read
every later reply against the wrong command (or crash). panoramisk's header loop spins at
100 % CPU when a peer closes before the blank line, and both drop the ``(timeout)``
marker of ``200 result= (timeout)``. This module treats ``HANGUP`` as an out-of-band flag,
bounds every read, and keeps the marker.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from crisisline.nodes import qualify, valid_node

MAX_HEADER_LINES = 256
MAX_LINE_BYTES = 64 * 1024
_REPLY = re.compile(r"^200 result=(?P<result>-?[^ ]*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?$")
_ENDPOS_ONLY = re.compile(r"endpos=(-?\d+)")


class AgiProtocolError(Exception):
    """Asterisk said something we can't read: the session can't go on safely."""


class AgiConnectionClosed(AgiProtocolError):
    """Asterisk closed the socket."""


class AgiCommandError(Exception):
    """510 (unknown command) or 520 (bad syntax): a bug on our side, never the caller's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


@dataclass(frozen=True)
class Reply:
    code: int
    result: str
    data: str | None = None  # the "(...)" part: "timeout", "dtmf", "hangup", a variable's value
    endpos: int | None = None
    raw: str = ""

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"

    @property
    def number(self) -> int:
        try:
            return int(self.result)
        except ValueError:
            return 0


@dataclass
class Headers:
    """The agi_* block. Unknown agi_* keys are kept; nothing in it is trusted."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def script(self) -> str:
        """agi_network_script without its query string: the handler's name."""
        return self.get("agi_network_script").split("?", 1)[0].strip("/")

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        _, _, query = self.get("agi_network_script").partition("?")
        return dict(parse_qsl(query, keep_blank_values=True))

    @property
    def node(self) -> str:
        """The Asterisk node this runs on (the dialplan's ``&node=``), "" for a line of one
        node or a name that isn't one."""
        name = self.query.get("node", "")
        return name if valid_node(name) else ""

    @property
    def channel(self) -> str:
        """The caller's channel as we keep it: named by its node on a line of several."""
        return qualify(self.node, self.get("agi_channel")[:200])

    @property
    def args(self) -> list[str]:
        out = []
        n = 1
        while f"agi_arg_{n}" in self.values:
            out.append(self.values[f"agi_arg_{n}"])
            n += 1
        return out


async def read_line(reader: asyncio.StreamReader, timeout: float) -> str:
    """One LF-terminated line, decoded leniently, without its LF. Bounded in time and size."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        raise AgiConnectionClosed("Asterisk closed the connection") from exc
    except asyncio.LimitOverrunError as exc:
        raise AgiProtocolError(f"line longer than the reader's limit ({exc.consumed} bytes)") from exc
    except TimeoutError as exc:
        raise AgiProtocolError(f"no line from Asterisk within {timeout:g} s") from exc
    if len(raw) > MAX_LINE_BYTES:
        raise AgiProtocolError(f"line of {len(raw)} bytes from Asterisk")
    return raw[:-1].decode("utf-8", errors="replace")


async def read_headers(reader: asyncio.StreamReader, timeout: float) -> Headers:
    """The header block up to its blank line. Peers that close, stall or flood are refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    headers = Headers()
    for _ in range(MAX_HEADER_LINES):
        line = await read_line(reader, max(0.001, deadline - loop.time()))
        if line == "":
            return headers
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
        if sep and key.startswith("agi_"):
            headers.values[key] = value.rstrip("\r")
        # Anything else is ignored: a header block is Asterisk's, but we don't trust it.
    raise AgiProtocolError(f"header block longer than {MAX_HEADER_LINES} lines")


def quote(value: object) -> str:
    """One command argument, safe for res_agi's parser.

    res_agi splits on spaces, toggles on ``"`` and unescapes ``\\``; a newline ends the
    command, so anything after it would run as a *new command*. Newlines and other
    control characters never reach the wire: they become spaces.
    """
    text = "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in str(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_reply(line: str) -> Reply:
    """A 200 line into its parts. Other codes are handled by the reader."""
    m = _REPLY.match(line)
    if m:
        endpos = m.group("endpos")
        return Reply(200, m.group("result"), m.group("data"),
                     int(endpos) if endpos is not None else None, line)
    if line.startswith("200 result="):
        # e.g. a GET VARIABLE value with ")" inside, or spacing we didn't foresee: keep it whole.
        rest = line[len("200 result="):]
        result, _, tail = rest.partition(" ")
        data = tail[1:-1] if tail.startswith("(") and tail.endswith(")") else (tail or None)
        endpos = _ENDPOS_ONLY.search(line)
        return Reply(200, result, data, int(endpos.group(1)) if endpos else None, line)
    raise AgiProtocolError(f"unreadable reply from Asterisk: {line[:200]!r}")
