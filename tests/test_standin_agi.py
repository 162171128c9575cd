"""The stand-in's FastAGI side against the recorded Asterisk 22.10.1 exchanges
(/work/shared/reference/asterisk-captures/fastagi_*.txt), over real sockets.

A tiny FastAGI server in this file plays the capture server's part: it reads the
agi_* block, sends scripted commands and reads Asterisk's replies.
"""

from __future__ import annotations

import asyncio
import socket
import wave
from pathlib import Path

import pytest

from standin import CallerScript, StandinPBX
from standin.agi_session import parse_args, parse_url
from standin.sounds import SoundResolver

CAPTURES = Path("/work/shared/reference/asterisk-captures")
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
CLOSE = object()


class FakeAgiServer:
    """Runs a list of steps per connection: a command line (str), raw bytes (sent in
    one write, one reply read per LF), ("expect", line) to read one line, CLOSE."""

    def __init__(self, steps: list, close_on_accept: bool = False) -> None:
        self.steps = steps
        self.close_on_accept = close_on_accept
        self.env: list[str] = []
        self.replies: list[str] = []
        self.port = 0
        self.done = asyncio.Event()

    async def __aenter__(self) -> FakeAgiServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"agi://127.0.0.1:{self.port}"

    async def _read_reply(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode()
            if not line:
                return
            line = line[:-1]
            self.replies.append(line)
            if line.startswith(("200 ", "510 ", "511 ", "520 ")) or line == "200 result=":
                return

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.close_on_accept:
                return
            while (line := (await reader.readline()).decode()) not in ("\n", ""):
                self.env.append(line[:-1])
            for step in self.steps:
                if step is CLOSE:
                    break
                if isinstance(step, tuple):
                    line = (await asyncio.wait_for(reader.readline(), 5)).decode()[:-1]
                    self.replies.append(line)
                    assert line == step[1]
                    continue
                data = step if isinstance(step, bytes) else step.encode() + b"\n"
                writer.write(data)
                await writer.drain()
                for _ in range(max(data.count(b"\n"), 1)):
                    await self._read_reply(reader)
        finally:
            writer.close()
            self.done.set()


DIALPLAN = """
[general]
[globals]
[agi-test]
exten => s,1,NoOp(scenario)
 same => n,AGI(${AGI_URL})
 same => n,NoOp(AGISTATUS=${AGISTATUS})
 same => n,Hangup()
exten => h,1,NoOp(h-exten ${CHANNEL} AGISTATUS=${AGISTATUS})
"""


def make_pbx(tmp_path: Path, **kw: object) -> StandinPBX:
    path = tmp_path / "extensions.conf"
    path.write_text(DIALPLAN)
    return StandinPBX(path, {}, prompts_dir=tmp_path / "prompts", spool_dir=tmp_path, **kw)


def call(tmp_path: Path, steps: list, script: CallerScript | None = None,
         close_on_accept: bool = False, script_name: str = "test"):
    async def main():
        async with FakeAgiServer(steps, close_on_accept) as server:
            script_ = script or CallerScript()
            script_.variables.setdefault("AGI_URL", f"{server.url}/{script_name}")
            trace = await make_pbx(tmp_path).place_call("agi-test", "s", script_)
            return server, trace
    return asyncio.run(main())


def exchange(trace) -> list[str]:
    """The session as the captures show it: '>> ' command, '<< ' reply, env left out."""
    lines = trace.transcripts[0].lines
    start = next(i for i, (way, text) in enumerate(lines) if way == "<<" and text == "")
    return [f"{way} {text}" for way, text in lines[start + 1:] if way != "--"]


def samples(name: str) -> int:
    n = SoundResolver().duration_samples(name)
    assert n is not None, f"core sound {name} missing"
    return n


# ---- the env block (01a/01b) ----------------------------------------------------------
def test_env_block_order_and_values(tmp_path: Path) -> None:
    server, trace = call(tmp_path, ["GET FULL VARIABLE ${CALLERID(all)}"],
                         CallerScript(extra_agi_env={"agi_surprise": "yes"}),
                         script_name="01a_env_local?x=1")
    keys = [line.split(":")[0] for line in server.env]
    assert keys == [
        "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language",
        "agi_type", "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname",
        "agi_callingpres", "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid",
        "agi_rdnis", "agi_context", "agi_extension", "agi_priority", "agi_enhanced",
        "agi_accountcode", "agi_threadid", "agi_surprise"]
    env = dict(line.split(": ", 1) for line in server.env if ": " in line)
    assert server.env[0] == "agi_network: yes"
    assert env["agi_network_script"] == "01a_env_local?x=1"
    assert env["agi_request"] == f"agi://127.0.0.1:{server.port}/01a_env_local?x=1"
    assert env["agi_channel"] == trace.channel and trace.channel.startswith("PJSIP/direct-trunk-")
    assert env["agi_version"] == "22.10.1"
    assert (env["agi_callerid"], env["agi_calleridname"], env["agi_callingpres"]) == (
        "unknown", "unknown", "67")
    assert (env["agi_context"], env["agi_extension"], env["agi_priority"]) == (
        "agi-test", "s", "2")
    assert env["agi_enhanced"] == "0.0"
    assert "agi_accountcode: " in server.env  # empty value, trailing space kept
    assert server.replies == ['200 result=1 ("" <>)']


def test_caller_id_and_hostile_name_are_sent_raw(tmp_path: Path) -> None:
    hostile = 'Doe, "JJ" John\nagi_injected: 1' + "x" * 10_000
    server, _ = call(tmp_path, ["GET FULL VARIABLE ${CALLERID(name)}", "NOOP"],
                     CallerScript(caller_id_num="5551234", caller_id_name='Doe, "JJ" John',
                                  raw_calleridname=hostile))
    assert "agi_callerid: 5551234" in server.env
    assert "agi_callingpres: 0" in server.env
    assert 'agi_calleridname: Doe, "JJ" John' in server.env
    assert "agi_injected: 1" + "x" * 10_000 in server.env  # the raw newline went through
    assert server.replies[0] == '200 result=1 (Doe, "JJ" John)'


def test_agi_args_become_agi_arg_lines(tmp_path: Path) -> None:
    async def main():
        async with FakeAgiServer(["NOOP"]) as server:
            script = CallerScript(variables={"AGI_URL": f"{server.url}/x,one,two words"})
            await make_pbx(tmp_path).place_call("agi-test", "s", script)
            return server
    server = asyncio.run(main())
    assert server.env[-2:] == ["agi_arg_1: one", "agi_arg_2: two words"]


# ---- 02 STREAM FILE --------------------------------------------------------------------
def test_02_stream_file_and_missing_file_gives_failure(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["ANSWER", 'STREAM FILE demo-congrats "0123456789*#"',
                               'STREAM FILE vm-goodbye "0123456789*#"',
                               'STREAM FILE no-such-file "0123456789*#"'],
                    CallerScript(keys=["2"]))
    assert exchange(trace) == [
        ">> ANSWER", "<< 200 result=0",
        '>> STREAM FILE demo-congrats "0123456789*#"',
        f"<< 200 result=0 endpos={samples('demo-congrats')}",  # listens to the end
        '>> STREAM FILE vm-goodbye "0123456789*#"',
        f"<< 200 result=0 endpos={samples('vm-goodbye')}",
        '>> STREAM FILE no-such-file "0123456789*#"', "<< 200 result=-1 endpos=0"]
    assert trace.agi_status == ["FAILURE"]  # capture 02: the failed STREAM FILE counts
    assert trace.prompts == ["demo-congrats", "vm-goodbye", "no-such-file"]
    assert trace.missing_prompts == ["no-such-file"]
    assert trace.keys == []  # STREAM FILE does not consume answers


# ---- 03 GET DATA -------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "key", "reply"), [
    ("GET DATA beep 5000 10", "02121#", "200 result=02121"),          # 03a
    ("GET DATA beep 5000 5", "12345", "200 result=12345"),            # 03b
    ("GET DATA beep 3000 5", "-", "200 result= (timeout)"),           # 03c
    ("GET DATA beep 5000 5", "#", "200 result="),                     # 03d
    ("GET DATA beep 3000 5", "12", "200 result=12 (timeout)"),        # 03e
])
def test_03_get_data(tmp_path: Path, command: str, key: str, reply: str) -> None:
    _, trace = call(tmp_path, [command], CallerScript(keys=[key]))
    assert exchange(trace) == [f">> {command}", f"<< {reply}"]
    assert trace.keys == [("GET DATA", key)]
    assert trace.prompts == ["beep"]
    assert trace.agi_status == ["SUCCESS"]


def test_get_data_when_answers_run_out_presses_nothing(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["GET DATA beep 3000 5"], CallerScript(keys=[]))
    assert exchange(trace)[-1] == "<< 200 result= (timeout)"


# ---- 04 WAIT FOR DIGIT ----------------------------------------------------------------
def test_04_wait_for_digit(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["WAIT FOR DIGIT 3000", "WAIT FOR DIGIT 3000"],
                    CallerScript(keys=["7", "-"]))
    assert exchange(trace) == [">> WAIT FOR DIGIT 3000", "<< 200 result=55",
                               ">> WAIT FOR DIGIT 3000", "<< 200 result=0"]


# ---- 05 RECORD FILE ------------------------------------------------------------------------
def _wav(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()


def test_05a_record_ended_by_hash_writes_a_real_wav(tmp_path: Path) -> None:
    cmd = f'RECORD FILE {tmp_path}/rec1 wav "#" 10000 0 BEEP s=2'
    _, trace = call(tmp_path, [cmd], CallerScript(speech=CAPTURES / "rec1.wav"))
    kept = 21986 - 1600  # the caller's speech, minus the 200 ms Asterisk chops off
    assert exchange(trace) == [f">> {cmd}", f"<< 200 result=35 (dtmf) endpos={kept}"]
    assert _wav(tmp_path / "rec1.wav") == (1, 8000, 2, kept)
    assert trace.recordings == [tmp_path / "rec1.wav"]


def test_05b_record_ended_by_silence(tmp_path: Path) -> None:
    cmd = f'RECORD FILE {tmp_path}/rec2 wav "#" 10000 0 BEEP s=2'
    _, trace = call(tmp_path, [cmd], CallerScript(record_end="silence"))
    # no speech: 2 s of silence ends it, 1 s of it is kept, 8000 ms of max time left
    assert exchange(trace)[-1] == "<< 200 result=8000 (timeout) endpos=8000"
    assert _wav(tmp_path / "rec2.wav") == (1, 8000, 2, 8000)


def test_05c_record_hangup_then_dead_channel(tmp_path: Path) -> None:
    cmd = f'RECORD FILE {tmp_path}/rec3 wav "#" 10000 0 BEEP s=2'
    _, trace = call(tmp_path, [cmd, 'STREAM FILE beep ""', "GET VARIABLE CHANNEL"],
                    CallerScript(speech=CAPTURES / "rec3.wav", record_end="hangup"))
    assert exchange(trace) == [
        f">> {cmd}", "<< 200 result=-1 (hangup) endpos=23586", "<< HANGUP",
        '>> STREAM FILE beep ""', f"<< {DEAD}",
        ">> GET VARIABLE CHANNEL", f"<< 200 result=1 ({trace.channel})"]
    assert trace.agi_status == ["HANGUP"]
    assert ("agi-test", "h", 1, "NoOp") in trace.path


# ---- 06 quoting, escaping, CR, injection ------------------------------------------------------
def test_06_set_variable_quoting_and_injection(tmp_path: Path) -> None:
    steps = [
        'SET VARIABLE V1 "hello world"', "GET VARIABLE V1",
        'SET VARIABLE V2 "say \\"hi\\" now"', "GET VARIABLE V2",
        'SET VARIABLE V3 ab"cd ef"gh', "GET VARIABLE V3",
        'SET VARIABLE V4 back\\\\slash\\"q', "GET VARIABLE V4",
        "SET VARIABLE V5 hello world", "GET VARIABLE V5",
        'SET VARIABLE V6 "(paren) and ) inside"', "GET VARIABLE V6",
        'SET VARIABLE V7 ""', "GET VARIABLE V7", "GET VARIABLE NOT_SET_ANYWHERE",
        'GET FULL VARIABLE "${V1}|${V2}"',
        b'SET VARIABLE A "x"\nEXEC NoOp injected\n', "GET VARIABLE A",
        "GET VARIABLE V1\r", 'SET VARIABLE CR "crlf"\r', "GET VARIABLE CR",
    ]
    _, trace = call(tmp_path, steps)
    assert [line[3:] for line in exchange(trace) if line.startswith("<<")] == [
        "200 result=1", "200 result=1 (hello world)",
        "200 result=1", '200 result=1 (say "hi" now)',
        "200 result=1", "200 result=1 (abcd efgh)",
        "200 result=1", '200 result=1 (back\\slash"q)',
        "520-Invalid command syntax.  Proper usage follows:",
        "Sets a variable to the current channel.", "520 End of proper usage.",
        "200 result=0",
        "200 result=1", "200 result=1 ((paren) and ) inside)",
        "200 result=1", "200 result=1 ()", "200 result=0",
        '200 result=1 (hello world|say "hi" now)',
        "200 result=1", "200 result=0",  # the injected EXEC ran as a command of its own
        "200 result=1 (x)", "200 result=0",  # "V1\r" is another variable: CR is kept
        "200 result=1", "200 result=1 (crlf\r)"]
    assert "EXEC NoOp injected" in trace.transcripts[0].commands
    assert trace.variables["V4"] == 'back\\slash"q' and trace.variables["CR"] == "crlf\r"


def test_parse_args_like_res_agi() -> None:
    assert parse_args('SET VARIABLE V3 ab"cd ef"gh') == ["SET", "VARIABLE", "V3", "abcd efgh"]
    assert parse_args('STREAM FILE beep ""') == ["STREAM", "FILE", "beep", ""]
    assert parse_args("GET VARIABLE V1\r") == ["GET", "VARIABLE", "V1\r"]
    assert parse_args("a\tb  \\ c") == ["a", "b", " c"]
    assert parse_url("agi://h/intake?source=direct") == ("h", 4573, "intake?source=direct")


# ---- 08 hang-ups and early closes ---------------------------------------------------------------
def test_08a_hangup_during_get_data(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["GET DATA demo-congrats 10000 5", 'STREAM FILE beep ""',
                               "GET VARIABLE AGISTATUS"],
                    CallerScript(keys=["12345"], hangup_after=1))
    assert exchange(trace) == [
        ">> GET DATA demo-congrats 10000 5", "<< 200 result=-1", "<< HANGUP",
        '>> STREAM FILE beep ""', f"<< {DEAD}",
        ">> GET VARIABLE AGISTATUS", "<< 200 result=0"]
    assert trace.agi_status == ["HANGUP"]
    assert trace.hung_up_at == "demo-congrats" and trace.hung_up_by == "caller"
    assert trace.path[-1] == ("agi-test", "h", 1, "NoOp")


def test_hangup_after_stream_file_is_sent_before_the_next_command(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ['STREAM FILE beep ""', "ANSWER", "NOOP"],
                    CallerScript(hangup_after=1))
    assert exchange(trace) == [
        '>> STREAM FILE beep ""', f"<< 200 result=0 endpos={samples('beep')}", "<< HANGUP",
        ">> ANSWER", f"<< {DEAD}", ">> NOOP", "<< 200 result=0"]


def test_hangup_between_commands_is_sent_at_once(tmp_path: Path) -> None:
    async def main():
        async with FakeAgiServer(["ANSWER", ("expect", "HANGUP"), "NOOP"]) as server:
            pbx = make_pbx(tmp_path)
            ch = await pbx.start_call("agi-test", "s", CallerScript(
                variables={"AGI_URL": f"{server.url}/x"}))
            while not any(r == "200 result=0" for r in server.replies):
                await asyncio.sleep(0.01)
            await pbx.hangup(ch.name)
            return ch.trace
    trace = asyncio.run(main())
    assert exchange(trace) == [">> ANSWER", "<< 200 result=0", "<< HANGUP",
                               ">> NOOP", "<< 200 result=0"]
    assert trace.agi_status == ["HANGUP"] and trace.hung_up_by == "pbx"


def test_08b_server_closes_early_is_success(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["ANSWER", CLOSE])
    assert trace.agi_status == ["SUCCESS"]
    assert trace.variables["AGISTATUS"] == "SUCCESS"


def test_08c_server_closes_on_accept_is_success(tmp_path: Path) -> None:
    _, trace = call(tmp_path, [], close_on_accept=True)
    assert trace.agi_status == ["SUCCESS"]
    assert ("agi-test", "s", 3, "NoOp") in trace.path  # the dialplan went on


def test_08d_connection_refused_is_failure(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = CallerScript(variables={"AGI_URL": f"agi://127.0.0.1:{port}/x"})
    trace = asyncio.run(make_pbx(tmp_path).place_call("agi-test", "s", script))
    assert trace.agi_status == ["FAILURE"]


def test_failure_line_forces_failure(tmp_path: Path) -> None:
    _, trace = call(tmp_path, [b"FAILURE\n"])
    assert trace.agi_status == ["FAILURE"]


# ---- 09 errors, 10 HANGUP command ----------------------------------------------------------------
def test_09_errors(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["FOO BAR", "GET DATA", "STREAM FILE", "GET VARIABLE", "",
                               "noop lower case", "EXEC NoSuchApp foo", "NOOP"])
    usage = "<< 520-Invalid command syntax.  Proper usage follows:"
    assert exchange(trace) == [
        ">> FOO BAR", "<< 510 Invalid or unknown command",
        ">> GET DATA", usage,
        "<< Stream the given <replaceable>file</replaceable>, and receive DTMF data.",
        "<< Returns the digits received from the channel at the other end.",
        "<< 520 End of proper usage.",
        ">> STREAM FILE", usage,
        "<< Send the given file, allowing playback to be interrupted by the given digits, if "
        "any. Returns <literal>0</literal> if playback completes without a digit being "
        "pressed, or the ASCII numerical value of the digit if one was pressed, or "
        "<literal>-1</literal> on error or if the channel was disconnected. If musiconhold is "
        "playing before calling stream file it will be automatically stopped and will not be "
        "restarted after completion.",
        "<< It sets the following channel variables upon completion:",
        "<< <variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text "
        "string.",
        "<<     <value>SUCCESS</value>", "<<     <value>FAILED</value>",
        "<< 520 End of proper usage.",
        ">> GET VARIABLE", usage,
        "<< Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. "
        "Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set and "
        "returns the variable in parentheses.",
        "<< Example return code: 200 result=1 (testvariable)",
        "<< 520 End of proper usage.",
        ">> ", "<< 510 Invalid or unknown command",
        ">> noop lower case", "<< 200 result=0",
        ">> EXEC NoSuchApp foo", "<< 200 result=-2",
        ">> NOOP", "<< 200 result=0"]
    assert trace.agi_status == ["SUCCESS"]


def test_10_hangup_command(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["ANSWER", "WAIT FOR DIGIT 3000", "SET VARIABLE CALL_ID 123",
                               "HANGUP", "NOOP", 'STREAM FILE beep ""'],
                    CallerScript(keys=["7"], caller_id_num="5551234",
                                 caller_id_name="Caller Name"))
    assert exchange(trace) == [
        ">> ANSWER", "<< 200 result=0", ">> WAIT FOR DIGIT 3000", "<< 200 result=55",
        ">> SET VARIABLE CALL_ID 123", "<< 200 result=1",
        ">> HANGUP", "<< 200 result=1", "<< HANGUP",
        ">> NOOP", "<< 200 result=0", '>> STREAM FILE beep ""', f"<< {DEAD}"]
    assert trace.agi_status == ["HANGUP"]
    assert trace.variables["CALL_ID"] == "123"


def test_exec_confbridge_in_agi_returns_0_then_hangup(tmp_path: Path) -> None:
    _, trace = call(tmp_path, ["EXEC ConfBridge call-124", "NOOP"], CallerScript(stay_s=0.01))
    assert exchange(trace) == [">> EXEC ConfBridge call-124", "<< 200 result=0", "<< HANGUP",
                               ">> NOOP", "<< 200 result=0"]
    assert trace.room == "call-124"


def test_time_scale_lets_a_hangup_cut_a_prompt_short(tmp_path: Path) -> None:
    async def main():
        async with FakeAgiServer(['STREAM FILE demo-congrats ""', "NOOP"]) as server:
            pbx = make_pbx(tmp_path, time_scale=0.05)  # 30 s prompt -> 1.5 s of real time
            ch = await pbx.start_call("agi-test", "s", CallerScript(
                variables={"AGI_URL": f"{server.url}/x"}))
            while not any(c.startswith("STREAM") for c in ch.trace.transcripts[0].commands):
                await asyncio.sleep(0.01)
            await pbx.hangup(ch.name)
            return ch.trace
    trace = asyncio.run(main())
    lines = exchange(trace)
    assert lines[1].startswith("<< 200 result=-1 endpos=") and lines[2] == "<< HANGUP"
    assert lines[3:] == [">> NOOP", "<< 200 result=0"]
