"""Record FastAGI and AMI exchanges from the real Asterisk into tests/captures/*.txt.

These are the exchanges the code relies on that ../shared/reference/asterisk-captures lacks:
what a FastAGI session receives when its channel is redirected (AMI Redirect) during
STREAM FILE, GET DATA and RECORD FILE; what ConfBridge sends when the marked caller hangs
up with end_marked members in the room; and Originate / Dial to an endpoint with no
registered contact. tests/test_captures.py replays them against the stand-in.

    .venv/bin/python tests/captures/record.py        (needs scripts/install-asterisk)

Asterisk runs alone on loopback with the small dialplan below; a capture FastAGI server logs
every byte both ways; one AMI client drives the calls. Format as in the shared captures:
'<< ' from Asterisk, '>> ' from our server, '-- ' socket events; AMI blocks under
'### sent' / '### received'.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from localpbx.ami import AmiConnection  # noqa: E402
from localpbx.install import installed  # noqa: E402
from localpbx.process import AsteriskProcess  # noqa: E402
from localpbx.render import free_port, prepare_state  # noqa: E402

DIALPLAN = r"""[general]
static = yes

[globals]
AGI=agi://127.0.0.1:{agi_port}

[agi-test]
exten => _X.,1,NoOp(scenario ${{EXTEN}})
 same => n,Answer()
 same => n,Set(MARK=before)
 same => n,AGI(${{AGI}}/${{SCRIPT}})
 same => n,NoOp(after AGI: AGISTATUS=${{AGISTATUS}})
 same => n,UserEvent(AfterAgi,Status: ${{AGISTATUS}})
 same => n,Hangup()
exten => h,1,UserEvent(HangupExten,Status: ${{AGISTATUS}})

[moved]
exten => s,1,UserEvent(Moved,Status: ${{AGISTATUS}},Mark: ${{MARK}})
 same => n,Wait(1)
 same => n,Hangup()

[drive]
; The caller: answers and stays; the AMI client hangs it up or moves it.
exten => _X.,1,Answer()
 same => n,Wait(30)
 same => n,Hangup()

[room]
exten => caller,1,Answer()
 same => n,ConfBridge(call-cap,pr_room,pr_caller)
 same => n,UserEvent(LeftRoom,Who: caller,Result: ${{CONFBRIDGE_RESULT}})
exten => responder,1,Answer()
 same => n,ConfBridge(call-cap,pr_room,pr_responder)
 same => n,UserEvent(LeftRoom,Who: responder,Result: ${{CONFBRIDGE_RESULT}})
 same => n,Hangup()
exten => listener,1,Answer()
 same => n,ConfBridge(call-cap,pr_room,pr_listener)
 same => n,UserEvent(LeftRoom,Who: listener,Result: ${{CONFBRIDGE_RESULT}})
 same => n,Hangup()

[unregistered]
exten => s,1,Answer()
 same => n,Dial(PJSIP/nobody,5)
 same => n,UserEvent(DialDone,DialStatus: ${{DIALSTATUS}})
 same => n,Hangup()
"""

PJSIP = """[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:{sip_port}

[nobody]
type = endpoint
context = drive
aors = nobody
allow = !all,ulaw

[nobody]
type = aor
max_contacts = 1
"""

MANAGER = """[general]
enabled = yes
port = {ami_port}
bindaddr = 127.0.0.1

[capture]
secret = {secret}
permit = 127.0.0.1/255.255.255.255
read = all
write = all
"""


class CaptureServer:
    """A FastAGI server that runs a scripted list of commands per script name, logging both
    ways. A command may be a float: wait that long (with nothing sent)."""

    def __init__(self, scripts: dict[str, list]) -> None:
        self.scripts = scripts
        self.logs: dict[str, list[tuple[float, str]]] = {}
        self.done: dict[str, asyncio.Event] = {k: asyncio.Event() for k in scripts}
        self.command_started: dict[str, asyncio.Event] = {k: asyncio.Event() for k in scripts}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic()
        log: list[tuple[float, str]] = []

        def note(text: str) -> None:
            log.append((time.monotonic() - t0, text))

        note(f"-- connection accepted from {writer.get_extra_info('peername')}")
        script = ""
        while True:
            line = await reader.readline()
            text = line.decode(errors="replace").rstrip("\n")
            note("<< " + text)
            if text.startswith("agi_network_script:"):
                script = text.split(":", 1)[1].strip()
            if text == "":
                break
        self.logs[script] = log
        commands = self.scripts.get(script, [])

        async def read_reply() -> None:
            while True:
                try:
                    got = await asyncio.wait_for(reader.readline(), 30)
                except TimeoutError:
                    note("-- (no reply within 30 s)")
                    return
                if not got:
                    note("-- eof from Asterisk")
                    return
                note("<< " + got.decode(errors="replace").rstrip("\n"))
                text = got.decode(errors="replace")
                if text.startswith(("200", "510", "511", "520 ")):
                    # A HANGUP may follow ~40 ms later: keep reading briefly.
                    try:
                        extra = await asyncio.wait_for(reader.readline(), 0.3)
                        if extra:
                            note("<< " + extra.decode(errors="replace").rstrip("\n"))
                    except TimeoutError:
                        pass
                    return

        for command in commands:
            if isinstance(command, float):
                await asyncio.sleep(command)
                continue
            note(">> " + command)
            writer.write(command.encode() + b"\n")
            await writer.drain()
            self.command_started[script].set()
            await read_reply()
        note("-- server closes the socket")
        writer.close()
        self.done[script].set()


class AmiLog:
    def __init__(self, conn: AmiConnection) -> None:
        self.conn = conn
        self.blocks: list[tuple[float, str, dict[str, str]]] = []
        self.t0 = time.monotonic()
        conn.subscribers.append(lambda e: self.blocks.append((time.monotonic() - self.t0,
                                                             "received", e)))

    async def action(self, headers: dict[str, str]) -> dict[str, str]:
        self.blocks.append((time.monotonic() - self.t0, "sent", headers))
        reply = await self.conn.action(headers)
        self.blocks.append((time.monotonic() - self.t0, "received",
                            {k: v for k, v in reply.items() if k != "_items"}))
        for item in reply.get("_items", []):  # type: ignore[union-attr]
            self.blocks.append((time.monotonic() - self.t0, "received", item))
        return reply


def write_capture(name: str, title: str, notes: list[str], agi: list[tuple[float, str]] | None,
                  ami: list[tuple[float, str, dict[str, str]]], keep: set[str] | None = None) -> None:
    out = [f"# Scenario: {name} - {title}",
           "# Asterisk 22.10.1 (scripts/install-asterisk), alone on loopback",
           f"# Captured: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC by tests/captures/record.py",
           "# Observations:", *[f"#   {n}" for n in notes], ""]
    if agi is not None:
        out += [text for _, text in agi]
        out.append("")
    for _, way, block in ami:
        if keep is not None and way == "received" and block.get("Event") not in keep \
                and "Response" not in block:
            continue
        out.append(f"### {way}")
        out += [f"{k}: {v}" for k, v in block.items()]
        out.append("")
    out.append("# ---- timing (seconds)")
    if agi is not None:
        out += [f"# {t:7.3f} {text[:70]}" for t, text in agi]
    (HERE / f"{name}.txt").write_text("\n".join(out) + "\n")
    print("wrote", name)


REDIRECT_SCRIPTS = {
    "redirect_streamfile": ['STREAM FILE "demo-congrats" ""', 'CHANNEL STATUS',
                            'GET VARIABLE "MARK"', 'GET FULL VARIABLE "${SHARED(PR_MOVED)}"'],
    "redirect_getdata": ['GET DATA "demo-congrats" "5000" "5"', 'CHANNEL STATUS',
                         'GET FULL VARIABLE "${SHARED(PR_MOVED)}"'],
    "redirect_recordfile": ['RECORD FILE "{spool}/redirected" "wav" "#" "20000" "0" "s=5"',
                            'CHANNEL STATUS', 'GET FULL VARIABLE "${SHARED(PR_MOVED)}"'],
    "hangup_streamfile": ['STREAM FILE "demo-congrats" ""', 'CHANNEL STATUS',
                          'GET FULL VARIABLE "${SHARED(PR_MOVED)}"'],
}


async def main() -> None:
    install = installed()
    if install is None:
        raise SystemExit("install Asterisk first: scripts/install-asterisk")
    state = Path(tempfile.mkdtemp(prefix="pr-captures-"))
    try:
        prepare_state(install, state, state / "prompts", "peoples-response")
        agi_port, ami_port, sip_port = free_port(), free_port(), free_port(udp_too=True)
        secret = secrets.token_hex(8)
        scripts = {k: [c.replace("{spool}", str(state / "spool")) for c in v]
                   for k, v in REDIRECT_SCRIPTS.items()}
        server = CaptureServer(scripts)
        agi = await asyncio.start_server(server.handle, "127.0.0.1", agi_port)
        etc = state / "etc"
        root = HERE.parent.parent / "asterisk"
        for name in ("modules.conf", "confbridge.conf", "musiconhold.conf", "cdr.conf", "cel.conf",
                     "features.conf", "acl.conf", "udptl.conf", "pjproject.conf", "stasis.conf",
                     "ccss.conf", "amd.conf", "rtp.conf"):
            shutil.copy(root / name, etc / name)
        (etc / "extensions.conf").write_text(DIALPLAN.format(agi_port=agi_port))
        (etc / "pjsip.conf").write_text(PJSIP.format(sip_port=sip_port))
        (etc / "manager.conf").write_text(MANAGER.format(ami_port=ami_port, secret=secret))
        (etc / "logger.conf").write_text("[logfiles]\nconsole => notice,warning,error\n")
        (etc / "asterisk.conf").write_text(
            "[options]\nnocolor = yes\n[directories]\n"
            f"astetcdir => {etc}\nastmoddir => {install}/lib/asterisk/modules\n"
            f"astvarlibdir => {state}/lib\nastdbdir => {state}/lib\nastkeydir => {state}/lib\n"
            f"astdatadir => {state}/data\nastspooldir => {state}/spool\n"
            f"astrundir => {state}/run\nastlogdir => {state}/log\n")
        proc = AsteriskProcess(install, etc / "asterisk.conf", state / "console.log")
        await asyncio.to_thread(proc.start)
        try:
            await record(server, proc, ami_port, secret, state)
        finally:
            await asyncio.to_thread(proc.stop)
            agi.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def record(server: CaptureServer, proc: AsteriskProcess, ami_port: int, secret: str,
                 state: Path) -> None:
    await record_redirects(server, ami_port, secret, state)
    await record_room(ami_port, secret)
    await record_unregistered(ami_port, secret)


async def record_redirects(server: CaptureServer, ami_port: int, secret: str, state: Path) -> None:
    notes = {
        "redirect_streamfile": "AMI Redirect 2 s into STREAM FILE (no escape digits)",
        "redirect_getdata": "AMI Redirect 2 s into GET DATA's prompt",
        "redirect_recordfile": "AMI Redirect 3 s into RECORD FILE (the caller is silent)",
        "hangup_streamfile": "the caller hangs up 2 s into STREAM FILE (for comparison)",
    }
    for script, title in notes.items():
        conn = await AmiConnection.connect("127.0.0.1", ami_port, "capture", secret)
        ami = AmiLog(conn)
        token = secrets.token_hex(4)
        await ami.action({"Action": "Originate", "Channel": "Local/100@drive/n", "Context": "agi-test",
                          "Exten": "100", "Priority": "1", "Async": "true",
                          "ChannelId": f"cap-{token}", "OtherChannelId": f"cap-{token}-2",
                          "Variable": f"__SCRIPT={script}"})
        channel = ""
        for _ in range(100):
            found = [b.get("Channel", "") for _, _, b in ami.blocks
                     if b.get("Event") == "Newchannel" and b.get("Uniqueid") == f"cap-{token}"]
            if found:
                channel = found[0]
                break
            await asyncio.sleep(0.05)
        await asyncio.wait_for(server.command_started[script].wait(), 10)
        await asyncio.sleep(3.0 if "record" in script else 2.0)
        if script.startswith("redirect"):
            await ami.action({"Action": "Setvar", "Channel": channel,
                              "Variable": "SHARED(PR_MOVED)", "Value": "connect"})
            await ami.action({"Action": "Redirect", "Channel": channel, "Context": "moved",
                              "Exten": "s", "Priority": "1"})
        else:
            await ami.action({"Action": "Hangup", "Channel": channel[:-1] + "2"})
        await asyncio.wait_for(server.done[script].wait(), 15)
        await asyncio.sleep(2.5)
        recorded = state / "spool" / "redirected.wav"
        extra = []
        if script == "redirect_recordfile":
            extra = [f"file kept after the redirect: {recorded.exists()}, "
                     f"{recorded.stat().st_size if recorded.exists() else 0} bytes"]
        write_capture(f"fastagi_{script}", title, [title, *extra], server.logs.get(script),
                      ami.blocks, keep={"AGIExecStart", "AGIExecEnd", "UserEvent", "Hangup",
                                        "SoftHangupRequest", "AsyncAGIEnd"})
        await conn.close()


async def record_room(ami_port: int, secret: str) -> None:
    conn = await AmiConnection.connect("127.0.0.1", ami_port, "capture", secret)
    ami = AmiLog(conn)
    for who in ("caller", "responder", "listener"):
        await ami.action({"Action": "Originate", "Channel": f"Local/{who}@room/n",
                          "Application": "Wait", "Data": "60", "Async": "true",
                          "ChannelId": f"room-{who}", "OtherChannelId": f"room-{who}-2"})
        await asyncio.sleep(1.0)
    # The caller's own leg hangs up (the ;1 half is the caller's phone side).
    await ami.action({"Action": "Hangup", "Channel": "/^Local/caller@room-.*;1$/"})
    await asyncio.sleep(3.0)
    write_capture("ami_confbridge_caller_leaves", "marked caller, end_marked responder and listener;"
                  " the caller hangs up",
                  ["pr_caller is marked; pr_responder and pr_listener are end_marked:",
                   "when the caller leaves, the others are removed (CONFBRIDGE_RESULT=ENDMARKED)"],
                  None, ami.blocks, keep={"ConfbridgeStart", "ConfbridgeJoin", "ConfbridgeLeave",
                                          "ConfbridgeEnd", "UserEvent", "Hangup"})
    await conn.close()


async def record_unregistered(ami_port: int, secret: str) -> None:
    conn = await AmiConnection.connect("127.0.0.1", ami_port, "capture", secret)
    ami = AmiLog(conn)
    await ami.action({"Action": "Originate", "Channel": "PJSIP/nobody", "Context": "drive",
                      "Exten": "10", "Priority": "1", "Async": "true", "Timeout": "5000",
                      "ChannelId": "unreg-1"})
    await asyncio.sleep(1.5)
    await ami.action({"Action": "Originate", "Channel": "Local/s@unregistered/n",
                      "Application": "Wait", "Data": "10", "Async": "true",
                      "ChannelId": "unreg-2", "OtherChannelId": "unreg-2b"})
    await asyncio.sleep(3.0)
    write_capture("ami_originate_unregistered", "Originate and Dial to an endpoint with no contact",
                  ["Originate Channel=PJSIP/nobody (no registered contact) and a Dial(PJSIP/nobody)"],
                  None, ami.blocks, keep={"OriginateResponse", "UserEvent", "Hangup", "DialBegin",
                                          "DialEnd", "Newchannel"})
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
