"""Our FastAGI reader against the replies a real Asterisk 22.10.1 sent (asterisk-captures/),
and the library defects it exists to avoid (LIBRARIES.md)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agi.app import AgiApp
from agi.protocol import Headers, parse_reply, quote, read_headers
from agi.server import AgiServer
from agi.session import AgiSession, CallerHungUp, PlaybackFailed


@pytest.mark.parametrize(
    ("line", "result", "data", "endpos"),
    [
        ("200 result=0", "0", None, None),
        ("200 result=50 endpos=25760", "50", None, 25760),
        ("200 result=-1 endpos=0", "-1", None, 0),
        ("200 result=02121", "02121", None, None),
        ("200 result= (timeout)", "", "timeout", None),  # the marker both libraries lose
        ("200 result=12 (timeout)", "12", "timeout", None),
        ("200 result=", "", None, None),
        ("200 result=35 (dtmf) endpos=21986", "35", "dtmf", 21986),
        ("200 result=4571 (timeout) endpos=30946", "4571", "timeout", 30946),
        ("200 result=-1 (hangup) endpos=23586", "-1", "hangup", 23586),
        ("200 result=1 ((paren) and ) inside)", "1", "(paren) and ) inside", None),
        ("200 result=1 ()", "1", "", None),
        ('200 result=1 ("" <>)', "1", '"" <>', None),
    ],
)
def test_replies_recorded_from_asterisk_parse(line, result, data, endpos):
    reply = parse_reply(line)
    assert (reply.result, reply.data, reply.endpos) == (result, data, endpos)


def test_quote_never_lets_a_value_become_a_second_command():
    hostile = 'x"\nEXEC Dial PJSIP/911\r\\'
    quoted = quote(hostile)
    assert "\n" not in quoted and "\r" not in quoted
    assert quoted == '"x\\" EXEC Dial PJSIP/911 \\\\"'


async def _feed(lines: list[str]) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data("".join(line + "\n" for line in lines).encode())
    reader.feed_eof()
    return reader


async def test_headers_keep_unknown_agi_lines_and_split_the_query():
    reader = await _feed(["agi_network: yes", "agi_network_script: intake?source=911",
                          "agi_new_thing: 42", "not a header", "agi_arg_1: a", ""])
    headers = await read_headers(reader, 1.0)
    assert headers.script == "intake" and headers.query == {"source": "911"}
    assert headers.get("agi_new_thing") == "42" and headers.args == ["a"]


class FakeWriter:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    async def drain(self) -> None:
        return None


async def test_unsolicited_hangup_line_is_a_flag_not_a_reply():
    # Real order (fastagi_08a): the interrupted command's reply, then HANGUP, then 511.
    reader = await _feed(["200 result=-1", "HANGUP", "511 Command Not Permitted on a dead channel"
                          " or intercept routine"])
    session = AgiSession(reader, FakeWriter(), Headers())  # type: ignore[arg-type]
    with pytest.raises(CallerHungUp):
        await session.get_data("x", 1000, 5)
    assert session.hung_up
    with pytest.raises(CallerHungUp):  # refused locally: nothing more is sent
        await session.stream_file("y")


async def test_minus_one_on_a_live_channel_is_a_missing_prompt_not_a_hang_up():
    reader = await _feed(["200 result=-1 endpos=0", "200 result=6"])
    session = AgiSession(reader, FakeWriter(), Headers())  # type: ignore[arg-type]
    with pytest.raises(PlaybackFailed):
        await session.stream_file("no-such-file")
    assert not session.hung_up


async def test_a_peer_that_closes_or_stalls_mid_headers_freezes_nothing(settings):
    """panoramisk 1.4 spins at 100 % CPU here; our reader gives up and serves others."""
    app = AgiApp.from_settings(dataclasses.replace(settings, agi_header_timeout_s=0.5))
    server = AgiServer(app)
    await server.start("127.0.0.1", 0)
    try:
        _, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        w1.write(b"agi_network: yes\nagi_network_scr")
        await w1.drain()
        w1.close()
        _, w2 = await asyncio.open_connection("127.0.0.1", server.port)  # stalls, sends nothing
        r3, w3 = await asyncio.open_connection("127.0.0.1", server.port)
        w3.write(b"agi_network: yes\nagi_network_script: no-such-script\n\n")
        await w3.drain()
        # Unknown script: AGISTATUS=FAILURE and the dialplan falls back, told first that this
        # server took the call and gave up (no other server is asked: [pr-agi]).
        line = await asyncio.wait_for(r3.readline(), 2)
        assert line == b'SET VARIABLE "PR_AGI_GAVE_UP" "1"\n'
        w3.write(b"200 result=1\n")
        await w3.drain()
        line = await asyncio.wait_for(r3.readline(), 2)
        assert line == b"failure\n"
        w2.close()
        w3.close()
    finally:
        await server.close()
        await app.close()
