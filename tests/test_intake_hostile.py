"""Bad input from Asterisk's side: hostile caller IDs, unknown headers, error replies, a
connection that dies mid-command. None may crash the server, inject a command, or leave a
call stuck, and other calls carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from standin.caller import CallerScript
from tests.intake_helpers import Redis, call, pbx_for, running_agi

# Every command our IVR may send; anything else in a transcript would be an injection.
OUR_COMMANDS = ("ANSWER", "STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "SET VARIABLE",
                "GET VARIABLE", "CHANNEL STATUS", "RECORD FILE", "failure",
                "GET FULL VARIABLE \"${SHARED(PR_MOVED)}\"")


def commands_sent(trace) -> list[str]:
    return [c for t in trace.transcripts for c in t.commands]


@pytest.mark.parametrize("name", ['Doe, \\"JJ\\" John', "x" * 10_000, "(paren) and ) inside"])
async def test_hostile_caller_id_names_change_nothing(live_settings, redis_url, name):
    script = CallerScript(keys="1 02121 1", stay_s=0, raw_calleridname=name,
                          caller_id_num='617"555 0123')
    async with running_agi(live_settings) as server:
        trace = await call(pbx_for(live_settings, server.port), "direct", script)
    assert trace.room is not None and not trace.fallback_dialed
    assert all(c.startswith(OUR_COMMANDS) for c in commands_sent(trace)), commands_sent(trace)
    assert Redis(redis_url).call(trace.variables["PR_CALL_ID"])["caller_number"] == ""


@pytest.mark.parametrize("name", [
    "Doe\nEXEC Dial PJSIP/911".replace("\\n", "\n"),
    '"\n\n\nHANGUP\n200 result=1',
    "\n\n",
])
async def test_a_newline_in_the_header_block_never_injects_or_strands(live_settings, redis_url,
                                                                     name):
    """A raw newline ends header lines early and puts junk where replies are expected. The
    caller must still reach a person (waiting room or fallback group), nothing we send may
    carry the junk, nothing may stay waiting, and the server must take the next call."""
    db = Redis(redis_url)
    async with running_agi(live_settings) as server:
        pbx = pbx_for(live_settings, server.port)
        trace = await call(pbx, "direct", CallerScript(keys="1 02121 1", stay_s=0,
                                                       raw_calleridname=name))
        assert trace.room is not None or trace.fallback_dialed
        assert all(c.startswith(OUR_COMMANDS) for c in commands_sent(trace)), commands_sent(trace)
        assert not any("911" in c for c in commands_sent(trace))
        assert db.waiting() == [] and db.claimed() == []
        after = await call(pbx, "direct", CallerScript(keys="2 02121 1", stay_s=0))
        assert after.room is not None


async def test_unknown_agi_lines_are_ignored(live_settings, redis_url):
    script = CallerScript(keys="2 02128 2", stay_s=0, extra_agi_env={
        "agi_future_field": "1", "agi_x_weird": "a: b: c", "agi_": ""})
    async with running_agi(live_settings) as server:
        trace = await call(pbx_for(live_settings, server.port), "direct", script)
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert trace.room is not None and record["neighborhood"] == "East Boston", [
        c for t in trace.transcripts for c in t.lines]


class Proxy:
    """Sits between the stand-in and our server and tampers with one reply."""

    def __init__(self, target_port: int, tamper: Callable[[str, str], str | None]) -> None:
        self.target_port = target_port
        self.tamper = tamper  # (command, reply) -> reply to pass on, or None to cut the line
        self.server: asyncio.Server | None = None
        self.done = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, pbx_r: asyncio.StreamReader, pbx_w: asyncio.StreamWriter) -> None:
        srv_r, srv_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        last_command = ""

        async def to_server() -> None:
            while line := await pbx_r.readline():
                reply = line.decode().rstrip("\n")
                if last_command and not self.done and reply.startswith(("200", "HANGUP")):
                    changed = self.tamper(last_command, reply)
                    if changed != reply:
                        self.done = True
                        if changed is None:
                            srv_w.close()
                            pbx_w.close()
                            return
                        line = (changed + "\n").encode()
                srv_w.write(line)
                await srv_w.drain()
            srv_w.close()

        async def to_pbx() -> None:
            nonlocal last_command
            while line := await srv_r.readline():
                last_command = line.decode().rstrip("\n")
                pbx_w.write(line)
                await pbx_w.drain()
            pbx_w.close()

        await asyncio.gather(to_server(), to_pbx(), return_exceptions=True)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def on(command: str, new_reply: str | None) -> Callable[[str, str], str | None]:
    return lambda cmd, reply: new_reply if cmd.startswith(command) else reply


@pytest.mark.parametrize(("tamper", "expected_state", "caller_ends_in"), [
    (on("GET DATA", "510 Invalid or unknown command"), "fallback", "fallback group"),
    (on("GET DATA", "520 Invalid command syntax.  Proper usage not available."), "fallback",
     "fallback group"),
    (on("GET DATA", "511 Command Not Permitted on a dead channel or intercept routine"),
     "abandoned", "fallback group"),
    (on("GET DATA", None), "fallback", "fallback group"),  # connection closes mid-command
    (on("STREAM FILE", "I am not Asterisk"), "fallback", "fallback group"),
    # A 200 with an unreadable result reads as "no key": the IVR goes on, nothing is lost.
    (on("STREAM FILE", "200 result=garbage (((("), "abandoned", "waiting room"),
], ids=["510", "520", "511", "closed", "not-agi", "garbage-200"])
async def test_broken_replies_end_with_a_person_not_a_stuck_call(
        live_settings, redis_url, tamper, expected_state, caller_ends_in):
    db = Redis(redis_url)
    async with running_agi(live_settings) as server:
        proxy = Proxy(server.port, tamper)
        port = await proxy.start()
        broken, healthy = await asyncio.gather(
            call(pbx_for(live_settings, port), "direct", CallerScript(keys="2 02121 1", stay_s=0)),
            call(pbx_for(live_settings, server.port), "direct",
                 CallerScript(keys="1 02128 1", stay_s=None)))
        await proxy.close()
        assert proxy.done, "the tamper rule never fired"
        # The caller of the broken session rings the fallback group: a person, not silence.
        if caller_ends_in == "fallback group":
            assert broken.fallback_dialed and broken.room is None
        else:
            assert broken.room is not None and not broken.fallback_dialed
        record = db.call(broken.variables["PR_CALL_ID"])
        assert record["state"] == expected_state
        # The other call carried on, and the server still takes new calls.
        assert healthy.room is not None and db.waiting() == [healthy.variables["PR_CALL_ID"]]
        again = await call(pbx_for(live_settings, server.port), "direct",
                           CallerScript(keys="1 - 2", stay_s=0))
        assert again.room is not None
    assert broken.variables["PR_CALL_ID"] not in db.waiting()
