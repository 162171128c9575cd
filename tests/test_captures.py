"""The stand-in against exchanges recorded from the real Asterisk 22.10.1 that the line
relies on (tests/captures/, made by tests/captures/record.py): a redirected channel's FastAGI
session, the room when its marked caller leaves, an Originate to an endpoint with no
registered contact. Same dialplan, same commands; the stand-in must answer the same way."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from standin.caller import CallerScript
from standin.dialplan import Dialplan
from standin.pbx import StandinPBX
from standin.phones import OriginateRequest, originate, phones_for
from tests.captures.record import DIALPLAN, REDIRECT_SCRIPTS

HERE = Path(__file__).resolve().parent / "captures"


def recorded_exchange(name: str) -> list[str]:
    """The capture's FastAGI lines after the env block: '>> command' / '<< reply'."""
    lines = (HERE / f"{name}.txt").read_text().splitlines()
    start = lines.index("<< ") + 1
    out = []
    for line in lines[start:]:
        if line.startswith("### ") or line.startswith("-- server closes"):
            break
        if line.startswith((">> ", "<< ")):
            out.append(line)
    return out


def recorded_user_events(name: str) -> list[dict[str, str]]:
    events, block = [], {}
    for line in (HERE / f"{name}.txt").read_text().splitlines():
        if not line:
            if block.get("Event") == "UserEvent":
                events.append(block)
            block = {}
            continue
        key, sep, value = line.partition(": ")
        if sep:
            block[key] = value
    return events


def normalise(line: str) -> str:
    """endpos and spool paths differ from run to run; the shape must not."""
    line = re.sub(r"endpos=\d+", "endpos=N", line)
    return re.sub(r'"/[^"]*/redirected"', '"SPOOL/redirected"', line)


class CaptureIvr:
    """Runs one recorded command list, as tests/captures/record.py's server did."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.exchange: list[str] = []
        self.started = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\n", b""):
            pass
        for command in self.commands:
            self.exchange.append(">> " + command)
            writer.write(command.encode() + b"\n")
            await writer.drain()
            self.started.set()
            while True:
                reply = (await asyncio.wait_for(reader.readline(), 30)).decode().rstrip("\n")
                self.exchange.append("<< " + reply)
                if reply != "HANGUP" and not reply.startswith("520-"):
                    break
            if reply.startswith("200 result=-1"):
                # Asterisk's HANGUP follows the reply ~40 ms later (capture 08a).
                extra = await asyncio.wait_for(reader.readline(), 2)
                self.exchange.append("<< " + extra.decode().rstrip("\n"))
        writer.close()


@pytest.mark.parametrize("script", sorted(REDIRECT_SCRIPTS))
async def test_a_redirect_looks_like_a_hang_up_to_fastagi_but_the_dialplan_goes_on(
        script: str, tmp_path: Path) -> None:
    commands = [c.replace("{spool}", str(tmp_path)) for c in REDIRECT_SCRIPTS[script]]
    ivr = CaptureIvr(commands)
    server = await asyncio.start_server(ivr.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "extensions.conf"
    path.write_text(DIALPLAN.format(agi_port=port))
    pbx = StandinPBX(path, time_scale=0.5, sounds_dirs=[Path("/usr/share/asterisk/sounds")])
    events: list[dict] = []
    pbx.subscribe(events.append)
    try:
        ch = await pbx.start_call("agi-test", "100", CallerScript(
            variables={"SCRIPT": script}, record_end="mute"))
        await asyncio.wait_for(ivr.started.wait(), 10)
        await asyncio.sleep(3.0 if "record" in script else 2.0)  # as record.py waited
        if script.startswith("redirect"):
            ch.set_variable("SHARED(PR_MOVED)", "connect")
            ch.move_to("moved", "s", 1)
        else:
            ch.request_hangup("caller")
        await asyncio.wait_for(ch.finished.wait(), 15)
    finally:
        server.close()
        await pbx.close()
    assert [normalise(x) for x in ivr.exchange] == [
        normalise(x) for x in recorded_exchange(f"fastagi_{script}")]
    got = [(e["UserEvent"], e.get("Status")) for e in events if e["Event"] == "UserEvent"]
    want = [(e["UserEvent"], e.get("Status")) for e in recorded_user_events(f"fastagi_{script}")]
    assert got == want  # Moved (AGISTATUS=HANGUP) after a redirect; HangupExten after a hang-up


async def test_the_marked_caller_leaving_takes_everyone_else_out() -> None:
    """ami_confbridge_caller_leaves: pr_caller is marked, pr_responder and pr_listener are
    end_marked; the caller's hang-up ends their ConfBridge with ENDMARKED."""
    pbx = StandinPBX(Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf",
                     time_scale=0.01)
    pbx.dialplan = Dialplan.parse(DIALPLAN.format(agi_port=1))
    pbx.interp.dialplan = pbx.dialplan
    events: list[dict] = []
    pbx.subscribe(events.append)
    chans = {who: await pbx.start_call("room", who, CallerScript()) for who in
             ("caller", "responder", "listener")}
    await asyncio.sleep(0.1)
    assert len(pbx.rooms["call-cap"]) == 3
    await pbx.hangup(chans["caller"].name)
    for who in ("responder", "listener"):
        await asyncio.wait_for(chans[who].finished.wait(), 5)
    got = {e["Who"]: e["Result"] for e in events if e.get("UserEvent") == "LeftRoom"}
    want = {e["Who"]: e["Result"] for e in recorded_user_events("ami_confbridge_caller_leaves")}
    assert got == want == {"responder": "ENDMARKED", "listener": "ENDMARKED"}
    assert pbx.rooms == {}


async def test_originate_to_an_endpoint_with_no_contact_fails_at_once() -> None:
    """ami_originate_unregistered: Failure, Reason 0, Channel = the dial string, no channel."""
    pbx = StandinPBX(Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf")
    phones_for(pbx).set("PJSIP/nobody", "unregistered")
    events: list[dict] = []
    pbx.subscribe(events.append)
    started = time.monotonic()
    res = await originate(pbx, OriginateRequest("PJSIP/nobody", "drive", "10", 1, timeout_ms=5000,
                                                action_id="a1"), report=True)
    assert time.monotonic() - started < 1
    assert (res.success, res.reason, res.channel) == (False, 0, "PJSIP/nobody")
    recorded = next(b for b in _blocks("ami_originate_unregistered") if b.get("Event") ==
                "OriginateResponse" and b.get("Channel") == "PJSIP/nobody")
    ours = next(e for e in events if e["Event"] == "OriginateResponse")
    assert (ours["Response"], ours["Reason"], ours["Channel"]) == (
        recorded["Response"], recorded["Reason"], recorded["Channel"])
    assert not [e for e in events if e["Event"] == "Newchannel"]


def _blocks(name: str) -> list[dict[str, str]]:
    out, block = [], {}
    for line in (HERE / f"{name}.txt").read_text().splitlines():
        if not line:
            if block:
                out.append(block)
            block = {}
            continue
        key, sep, value = line.partition(": ")
        if sep:
            block[key] = value
    return out
