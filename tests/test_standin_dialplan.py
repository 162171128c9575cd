"""The stand-in runs our real dialplan (dialplan/extensions.conf): the IVR queues the
call -> waiting room; anything else (server closed early, refused) -> fallback group;
the h extension reports the hang-up. Real sockets, a fake FastAGI server per test."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import pytest

from standin import CallerScript, StandinPBX, parse_keys
from standin.dialplan import Dialplan, evaluate, pattern_matches, separate_args

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = ROOT / "dialplan" / "extensions.conf"


class IvrServer:
    """A FastAGI server: for each connection, runs ``on_call(env, send)``."""

    def __init__(self, on_call) -> None:
        self.on_call = on_call
        self.sessions: list[dict[str, str]] = []

    async def __aenter__(self) -> IvrServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env: dict[str, str] = {}
        try:
            while (line := (await reader.readline()).decode()) not in ("\n", ""):
                key, _, value = line[:-1].partition(": ")
                env[key] = value
            self.sessions.append(env)

            async def send(command: str) -> str:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                while (reply := (await reader.readline()).decode()[:-1]) == "HANGUP":
                    pass
                return reply

            await self.on_call(env, send)
        finally:
            writer.close()


async def queue_call(env: dict[str, str], send) -> None:
    """What our IVR does on success: sets PR_CALL_ID, a dispatcher deadline, PR_QUEUED=1."""
    if env["agi_network_script"].startswith("intake"):
        await send("ANSWER")
        await send('STREAM FILE peoples-response/en/promise ""')
        await send("GET DATA peoples-response/en/zip 6000 5")
        await send("SET VARIABLE PR_CALL_ID 42")
        await send(f"SET VARIABLE PR_ATTENDED_UNTIL {int(time.time()) + 600}")
        await send("SET VARIABLE PR_QUEUED 1")


async def close_at_once(env: dict[str, str], send) -> None:
    return None


def make_pbx(tmp_path: Path, port: int, **kw: object) -> StandinPBX:
    prompts = tmp_path / "prompts" / "en"
    prompts.mkdir(parents=True, exist_ok=True)
    for name in ("promise", "zip"):
        with wave.open(str(prompts / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(bytes(16000))  # 1 s
    return StandinPBX(EXTENSIONS, {"PR_AGI": f"agi://127.0.0.1:{port}"},
                      prompts_dir=tmp_path / "prompts", **kw)


def test_queued_caller_waits_in_its_room_and_h_reports_the_hangup(tmp_path: Path) -> None:
    async def main():
        async with IvrServer(queue_call) as ivr:
            pbx = make_pbx(tmp_path, ivr.port)
            events: list[dict] = []
            pbx.subscribe(events.append)
            trace = await pbx.place_call("from-direct", "6175550100", CallerScript(
                keys=parse_keys("02121"), caller_id_num="6175551234"))
            rooms = {name: [c.name for c in members] for name, members in pbx.rooms.items()}
            assert await pbx.hangup(trace.channel)
            return trace, rooms, events, ivr.sessions
    trace, rooms, events, sessions = asyncio.run(main())
    assert rooms == {"call-42": [trace.channel]}
    assert trace.room == "call-42"
    assert not trace.fallback_dialed
    assert trace.prompts == ["peoples-response/en/promise", "peoples-response/en/zip"]
    assert trace.keys == [("GET DATA", "02121")]
    assert trace.agi_status == ["SUCCESS", "SUCCESS"]  # the IVR, then the h extension's
    assert sessions[0]["agi_network_script"] == "intake?source=direct"
    assert sessions[0]["agi_callerid"] == "6175551234"
    assert sessions[1]["agi_network_script"] == "hangup?call=42&in=waiting_room"
    # Run from pr-waiting's h, through [pr-agi] (which tries each FastAGI server in turn).
    assert sessions[1]["agi_context"] == "pr-agi"
    assert ("pr-waiting", "h", 2, "Gosub") in trace.path
    assert trace.transcripts[0].replies[-1] == "200 result=1"
    assert "200 result=02121" in trace.transcripts[0].replies
    kinds = [e["Event"] for e in events if e["Event"] != "VarSet"]
    assert kinds[0] == "Newchannel"
    assert kinds[-4:] == ["ConfbridgeJoin", "ConfbridgeLeave", "ConfbridgeEnd", "Hangup"]
    assert "ConfbridgeStart" in kinds
    join = next(e for e in events if e["Event"] == "ConfbridgeJoin")
    assert (join["Conference"], join["Channel"]) == ("call-42", trace.channel)
    assert trace.hung_up_by == "pbx"
    assert trace.path[:2] == [("from-direct", "6175550100", 1, "Goto"), ("from-direct", "s", 1, "NoOp")]
    assert ("pr-waiting", "h", 2, "Gosub") in trace.path


def test_a_queued_caller_nobody_attends_reaches_the_fallback_group(tmp_path: Path) -> None:
    """PR_ATTENDED_UNTIL passes (no dispatcher pushed it on): Asterisk alone sends the
    caller from the waiting room to the fallback group."""
    async def soon(env: dict[str, str], send) -> None:
        if env["agi_network_script"].startswith("intake"):
            await send("SET VARIABLE PR_CALL_ID 43")
            await send(f"SET VARIABLE PR_ATTENDED_UNTIL {int(time.time()) + 1}")
            await send("SET VARIABLE PR_QUEUED 1")

    async def main():
        async with IvrServer(soon) as ivr:
            pbx = make_pbx(tmp_path, ivr.port, time_scale=0.05, fallback_answers=True)
            return await pbx.place_call("from-direct", "6175550100", CallerScript(stay_s=0.2))
    trace = asyncio.run(main())
    assert trace.room == "call-43" and trace.fallback_dialed
    assert [e["UserEvent"] for e in trace.events if e["Event"] == "UserEvent"][:2] == [
        "PRUnattended", "PRFallback"]
    assert trace.variables["CONFBRIDGE_RESULT"] == "TIMEOUT"


def test_with_no_desk_registered_the_fallback_group_dials_nothing_and_keeps_company(
        tmp_path: Path) -> None:
    async def main():
        async with IvrServer(close_at_once) as ivr:
            pbx = make_pbx(tmp_path, ivr.port, desk_registered=False)
            return await pbx.place_call("from-direct", "6175550100", CallerScript(
                hangup_after=3))
    trace = asyncio.run(main())
    assert trace.dialed == [] and trace.prompts.count("pls-hold-while-try") >= 2


def test_server_closing_early_is_success_but_not_queued_so_fallback(tmp_path: Path) -> None:
    async def main():
        async with IvrServer(close_at_once) as ivr:
            pbx = make_pbx(tmp_path, ivr.port, max_dial_attempts=2)
            return await pbx.place_call("from-direct", "6175550100", CallerScript())
    trace = asyncio.run(main())
    assert trace.agi_status == ["SUCCESS"]
    assert "PR_QUEUED" in trace.variables and trace.variables["PR_QUEUED"] == ""
    assert trace.fallback_dialed and trace.dialed[:2] == ["PJSIP/fallback-desk"] * 2
    assert trace.room is None
    assert trace.loop_guard and "attempted 3 times" in trace.loop_guard
    assert "pls-hold-while-try" in trace.prompts
    user_events = [e for e in trace.events if e["Event"] == "UserEvent"]
    assert user_events[0]["UserEvent"] == "PRFallback" and user_events[0]["CallID"] == ""
    # h of pr-fallback: no call id, so no hang-up AGI
    assert trace.path[-1] == ("pr-fallback", "h", 3, "NoOp")


def test_refused_connection_goes_to_fallback(tmp_path: Path) -> None:
    async def main():
        async with IvrServer(close_at_once) as ivr:
            port = ivr.port
        pbx = make_pbx(tmp_path, port, fallback_answers=True)
        return await pbx.place_call("from-direct", "6175550100", CallerScript(stay_s=0))
    trace = asyncio.run(main())
    assert trace.agi_status == ["FAILURE"]
    assert trace.fallback_dialed and trace.dialed == ["PJSIP/fallback-desk"]
    assert trace.variables["DIALSTATUS"] == "ANSWER"
    assert trace.loop_guard is None


def test_caller_hangs_up_in_the_ivr_h_runs_the_hangup_agi(tmp_path: Path) -> None:
    async def hangs_up(env: dict[str, str], send) -> None:
        if env["agi_network_script"].startswith("intake"):
            await send("SET VARIABLE PR_CALL_ID 7")
            assert await send("GET DATA peoples-response/en/zip 6000 5") == "200 result=-1"
            assert (await send("NOOP")) == "200 result=0"

    async def main():
        async with IvrServer(hangs_up) as ivr:
            trace = await make_pbx(tmp_path, ivr.port).place_call(
                "from-direct", "6175550100", CallerScript(hangup_after=1))
            return trace, ivr.sessions
    trace, sessions = asyncio.run(main())
    assert trace.agi_status == ["HANGUP", "SUCCESS"]
    assert trace.transcripts[0].replies[-3:] == ["200 result=-1", "HANGUP", "200 result=0"]
    assert sessions[1]["agi_network_script"] == "hangup?call=7&in=intake"
    assert not trace.fallback_dialed


def test_911_transfer_reads_headers_but_keeps_channel_variables(tmp_path: Path) -> None:
    async def main():
        async with IvrServer(queue_call) as ivr:
            pbx = make_pbx(tmp_path, ivr.port)
            return await pbx.place_call("from-911", "6175550100", CallerScript(
                variables={"TRANSFER_LANGUAGE": "es"},
                sip_headers={"x-transfer-language": "en", "X-Transfer-Zip": "02121",
                             "X-Transfer-Note": "calm now :) then: upstairs, (door open"},
                stay_s=0))
    trace = asyncio.run(main())
    assert trace.variables["PR_SOURCE"] == "911"
    assert trace.variables["TRANSFER_LANGUAGE"] == "es"
    assert trace.variables["TRANSFER_ZIP"] == "02121"
    # The whole note, ")" and all: no application's argument parser touches it.
    assert trace.variables["TRANSFER_NOTE"] == "calm now :) then: upstairs, (door open"
    assert trace.room == "call-42" and trace.hung_up_by == "caller"
    assert trace.variables["CONFBRIDGE_RESULT"] == "HANGUP"


def test_kick_from_room_continues_the_dialplan(tmp_path: Path) -> None:
    async def main():
        async with IvrServer(queue_call) as ivr:
            pbx = make_pbx(tmp_path, ivr.port)
            trace = await pbx.place_call("from-988", "6175550100", CallerScript())
            assert await pbx.kick("call-42", trace.channel)
            while trace.channel in pbx.channels:
                await asyncio.sleep(0.01)
            return trace, pbx.rooms
    trace, rooms = asyncio.run(main())
    assert rooms == {}
    assert trace.variables["CONFBRIDGE_RESULT"] == "KICKED"
    assert trace.hung_up_by == "dialplan"
    assert ("pr-waiting", "s", 12, "Hangup") in trace.path  # done: not a TIMEOUT


# ---- the parser and the expression language ------------------------------------------------
def test_our_dialplan_parses() -> None:
    dp = Dialplan.load(EXTENSIONS)
    assert dp.globals["PR_FALLBACK_DIAL"] == "PJSIP/fallback-desk"
    ring = dp.find_extension("pr-fallback", "s")
    assert ring is not None and ring.labels["ring"] == 3 and ring.labels["hold"] == 7
    assert dp.find_extension("from-direct", "6175550100").pattern == "_X."
    assert dp.find_extension("pr-intake", "h").priorities[3].label == "done"


@pytest.mark.parametrize(("pattern", "exten", "ok"), [
    ("_X.", "6175550100", True), ("_X.", "s", False), ("_NXX", "212", True),
    ("_NXX", "112", False), ("s", "s", True), ("_[1-3]X", "25", True), ("_[1-3]X", "45", False),
])
def test_patterns(pattern: str, exten: str, ok: bool) -> None:
    assert pattern_matches(pattern, exten) is ok


@pytest.mark.parametrize(("expr", "value"), [
    ('"SUCCESS" != "SUCCESS"', "0"), ('"FAILURE" != "SUCCESS"', "1"), ('"" = ""', "1"),
    ('"1" = "1" & "a" = "b"', "0"), ('"1" = "2" | "a" = "a"', "1"), ("3 + 4", "7"),
    ("10 > 9", "1"), ('"a b" = "a b"', "1"),
])
def test_expressions(expr: str, value: str) -> None:
    assert evaluate(expr) == value


def test_separate_args_respects_parens_and_quotes() -> None:
    assert separate_args("a,Set(X=1,2),\"c,d\"") == ["a", "Set(X=1,2)", "c,d"]
    assert separate_args("$[1]?Set(A=b:c)", "?", remove_chars=False) == ["$[1]", "Set(A=b:c)"]


@pytest.mark.parametrize("record_says, moved", [("42", True), ("77", False)])
def test_a_responder_who_accepts_moves_only_their_own_caller(tmp_path: Path, record_says: str,
                                                             moved: bool) -> None:
    """The whisper names the caller's channel from the call's record. After Asterisk restarts,
    channel names start again from 00000001: a call whose caller died with the old process
    names a channel that now belongs to someone else. Only a channel whose PR_CALL_ID is the
    call's own is moved; a stranger stays where they are and the responder's leg ends (found
    by bench/soak.py: a node restarted, a responder "bridged" with a stranger's call)."""
    async def whisper_accepts(env: dict[str, str], send) -> None:
        if env["agi_network_script"].startswith("intake"):
            await queue_call(env, send)
        elif env["agi_network_script"].startswith("whisper"):
            await send("SET VARIABLE PR_CALLER_CHANNEL " + caller.name)
            await send("SET VARIABLE PR_CONNECT pr-connect")
            await send("SET VARIABLE PR_ACCEPTED 1")

    async def main():
        nonlocal caller
        async with IvrServer(whisper_accepts) as ivr:
            pbx = make_pbx(tmp_path, ivr.port)
            placing = asyncio.ensure_future(pbx.place_call("from-988", "6175550100",
                                                           CallerScript(stay_s=5)))
            while not pbx.rooms.get("call-42"):
                await asyncio.sleep(0.01)
            caller = next(c for c in pbx.channels.values())
            leg = await pbx.start_call("pr-responder", "s", CallerScript(),
                                       endpoint="responder", tech="PJSIP")
            leg.set_variable("PR_CALL_ID", record_says)
            leg.set_variable("PR_RESPONDER", "ana")
            for _ in range(300):
                if caller.context != "pr-waiting" or leg.name not in pbx.channels:
                    break
                await asyncio.sleep(0.01)
            where, leg_up = caller.context, leg.name in pbx.channels
            await pbx.hangup(caller.name)
            await placing
            return where, leg_up

    caller = None
    where, leg_up = asyncio.run(main())
    if moved:
        assert where == "pr-connect"
    else:
        assert where == "pr-waiting" and not leg_up
