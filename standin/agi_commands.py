"""The AGI command table of the stand-in (res/res_agi.c's ``commands[]``), the usage
texts Asterisk sends with a 520, and the parsing of command lines and AGI URLs.

Kept apart from agi_session.py so the session (the wire and the command handlers)
stays readable; nothing here touches a channel.
"""

from __future__ import annotations

from dataclasses import dataclass

AGI_PORT = 4573
MAX_ARGS = 128
DEAD_511 = "511 Command Not Permitted on a dead channel or intercept routine"


# Usage texts as Asterisk 22 sends them (raw XML doc text, captures 06 and 09).
USAGE = {
    "get data": "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\n"
                "Returns the digits received from the channel at the other end.",
    "stream file": (
        "Send the given file, allowing playback to be interrupted by the given digits, if any. "
        "Returns <literal>0</literal> if playback completes without a digit being pressed, or "
        "the ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on "
        "error or if the channel was disconnected. If musiconhold is playing before calling "
        "stream file it will be automatically stopped and will not be restarted after "
        "completion.\nIt sets the following channel variables upon completion:\n"
        "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text "
        "string.\n    <value>SUCCESS</value>\n    <value>FAILED</value>"),
    "get variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. "
        "Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set and "
        "returns the variable in parentheses.\nExample return code: 200 result=1 "
        "(testvariable)"),
    "set variable": "Sets a variable to the current channel.",
}
GENERIC_USAGE = "See the AGI command documentation (res/res_agi.c) for its arguments."


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    handler: str
    dead_ok: bool

    @property
    def usage(self) -> str:
        return USAGE.get(" ".join(self.words), GENERIC_USAGE)


# (words, handler, runs on a dead channel) as registered by res_agi.c's commands[].
COMMANDS = [Command(tuple(w.split()), h, d) for w, h, d in [
    ("answer", "answer", False), ("asyncagi break", "noop", True),
    ("channel status", "channel_status", False), ("control stream file", "result0", False),
    ("database del", "database", True), ("database deltree", "database", True),
    ("database get", "database", True), ("database put", "database", True),
    ("exec", "exec", True), ("get data", "get_data", False),
    ("get full variable", "get_full_variable", True), ("get option", "get_option", False),
    ("get variable", "get_variable", True), ("gosub", "result0", False),
    ("hangup", "hangup", False), ("noop", "noop", True), ("receive char", "result0", False),
    ("receive text", "result0", False), ("record file", "record_file", False),
    ("say alpha", "result0", False), ("say digits", "result0", False),
    ("say number", "result0", False), ("say phonetic", "result0", False),
    ("say date", "result0", False), ("say time", "result0", False),
    ("say datetime", "result0", False), ("send image", "result0", False),
    ("send text", "result0", False), ("set autohangup", "result0", False),
    ("set callerid", "result0", False), ("set context", "result0", False),
    ("set extension", "result0", False), ("set music", "result0", False),
    ("set priority", "result0", False), ("set variable", "set_variable", True),
    ("speech activate grammar", "result0", False), ("speech create", "result0", False),
    ("speech deactivate grammar", "result0", False), ("speech destroy", "result0", True),
    ("speech load grammar", "result0", False), ("speech recognize", "result0", False),
    ("speech set", "result0", False), ("speech unload grammar", "result0", True),
    ("stream file", "stream_file", False), ("tdd mode", "result0", False),
    ("verbose", "verbose", True), ("wait for digit", "wait_for_digit", False),
]]


def find_command(argv: list[str]) -> Command | None:
    """res_agi.c find_command(): every word of the command, case-insensitive; more
    arguments may follow."""
    for cmd in COMMANDS:
        n = len(cmd.words)
        if len(argv) >= n and all(a.lower() == w for a, w in zip(argv, cmd.words, strict=False)):
            return cmd
    return None


def parse_args(line: str) -> list[str]:
    """res_agi.c parse_args(): spaces/tabs split, ``"`` toggles quoting (and is removed,
    even mid-word), ``\\`` escapes the next character; nothing else (a CR stays)."""
    argv: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for c in line:
        if c == '"' and not escaped:
            quoted = not quoted
            if quoted and cur is None:  # an opening quote after whitespace starts a word
                cur = []
                argv.append("")
            continue
        if c in " \t" and not quoted and not escaped:
            if cur is not None:
                argv[-1] = "".join(cur)
                cur = None
            continue
        if c == "\\" and not escaped:
            escaped = True
            continue
        if cur is None:
            if len(argv) >= MAX_ARGS - 1:  # "Too many arguments, truncating"
                escaped = False
                continue
            cur = []
            argv.append("")
        cur.append(c)
        escaped = False
    if cur is not None:
        argv[-1] = "".join(cur)
    return argv


def parse_url(url: str) -> tuple[str, int, str]:
    """agi://host[:port][/script] -> (host, port, script). Script keeps its query."""
    rest = url.split("://", 1)[1] if "://" in url else url
    hostport, _, script = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else AGI_PORT, script
