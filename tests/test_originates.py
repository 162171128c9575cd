"""Originates in flight (workers/dispatcher/originate.py): what Asterisk is sent, which reply
ends which Originate, and what a dropped AMI session does to them: a phone is never rung twice,
and no Originate is left without an end (the offer it rings for would wait for good)."""

from __future__ import annotations

import asyncio

import pytest

from crisisline.config import load
from workers.dispatcher.ami import AmiGateway, _Protocol
from workers.dispatcher.originate import Originates, originate_text


class Wire:
    """A session's transport: what was written to Asterisk."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def action_ids(self) -> list[str]:
        return [line.split(": ", 1)[1] for data in self.written
                for line in data.decode().split("\r\n") if line.startswith("ActionID: ")]


def fields(channel_id: str = "pr-c1-0-1-r1") -> list[tuple[str, str]]:
    return [("Channel", "PJSIP/r1"), ("Context", "pr-responder"), ("Exten", "s"),
            ("Priority", "1"), ("Async", "true"), ("Timeout", "20000"),
            ("ChannelId", channel_id), ("Variable", "PR_CALL_ID=c1")]


def run(coro):
    return asyncio.run(coro)


def test_an_originate_is_what_asterisk_reads_and_ends_with_its_originate_response():
    async def go() -> None:
        results: list[tuple[str, dict]] = []
        wire = Wire()
        o = Originates(lambda cid, r: results.append((cid, r)))
        o.send(wire, "pr-c1-0-1-r1", fields(), 20)
        text = wire.written[0].decode()
        assert text.startswith("Action: Originate\r\nActionID: pr-originate-")
        assert "\r\nChannelId: pr-c1-0-1-r1\r\n" in text and "\r\nVariable: PR_CALL_ID=c1\r\n" in text
        assert text.endswith("\r\n\r\n") and text.count("\r\n\r\n") == 1
        (aid,) = wire.action_ids()
        o.answer({"Response": "Success", "ActionID": aid, "Message": "Originate successfully queued"})
        assert results == [] and len(o) == 1  # queued: it rings
        o.answer({"Event": "OriginateResponse", "ActionID": aid, "Response": "Failure", "Reason": "3"})
        assert results == [("pr-c1-0-1-r1", {"Event": "OriginateResponse", "ActionID": aid,
                                             "Response": "Failure", "Reason": "3"})]
        assert len(o) == 0
        o.answer({"Event": "OriginateResponse", "ActionID": aid, "Response": "Success"})
        assert len(results) == 1  # a late or repeated answer ends nothing twice
    run(go())


def test_an_originate_asterisk_refuses_ends_at_once():
    async def go() -> None:
        results: list = []
        wire = Wire()
        o = Originates(lambda cid, r: results.append(r))
        o.send(wire, "pr-c1-0-1-r1", fields(), 20)
        o.answer({"Response": "Error", "ActionID": wire.action_ids()[0],
                  "Message": "Originate failed"})
        assert [r["Response"] for r in results] == ["Error"] and len(o) == 0
    run(go())


def test_a_line_break_in_a_field_is_refused_and_the_offer_still_ends():
    with pytest.raises(ValueError, match="line break"):
        originate_text("x", [("Channel", "PJSIP/r1\r\nAction: Hangup")])

    async def go() -> None:
        results: list = []
        wire = Wire()
        o = Originates(lambda cid, r: results.append((cid, r)))
        o.send(wire, "pr-c1-0-1-r1", [("Channel", "PJSIP/r1\nChannel: PJSIP/r2")], 20)
        await asyncio.sleep(0)
        assert wire.written == [] and len(o) == 0
        assert results[0][0] == "pr-c1-0-1-r1" and results[0][1]["Response"] == "Failure"
    run(go())


def test_a_dropped_session_sends_again_only_what_asterisk_never_answered():
    async def go() -> None:
        results: list = []
        first = Wire()
        o = Originates(lambda cid, r: results.append((cid, r)))
        o.send(first, "pr-c1-0-1-r1", fields("pr-c1-0-1-r1"), 20)
        o.send(first, "pr-c1-0-1-r2", fields("pr-c1-0-1-r2"), 20)
        queued, unanswered = first.action_ids()
        o.answer({"Response": "Success", "ActionID": queued, "Message": "Originate successfully queued"})
        first.closing = True  # the session drops here
        o.send(first, "pr-c1-0-1-r3", fields("pr-c1-0-1-r3"), 20)  # not written to a closing one
        assert len(first.written) == 2
        o.send(None, "pr-c1-0-1-r4", fields("pr-c1-0-1-r4"), 20)  # none at all
        second = Wire()
        o.resend(second)
        again = second.written
        assert len(again) == 3 and not any(b"pr-c1-0-1-r1" in w for w in again)  # rings already
        assert {unanswered} <= set(second.action_ids())
        assert results == []
    run(go())


def test_an_originate_whose_answer_never_comes_ends_as_failed(monkeypatch):
    monkeypatch.setattr("workers.dispatcher.originate.SLACK_S", 0.0)

    async def go() -> None:
        results: list = []
        o = Originates(lambda cid, r: results.append((cid, r)))
        wire = Wire()
        o.send(wire, "pr-c1-0-1-r1", fields(), 0.05)
        o.answer({"Response": "Success", "ActionID": wire.action_ids()[0]})
        await asyncio.sleep(0.15)
        assert [(cid, r["Response"]) for cid, r in results] == [("pr-c1-0-1-r1", "Failure")]
        assert len(o) == 0
    run(go())


def test_the_gateway_picks_its_originates_answers_out_of_the_stream_and_writes_once_per_session():
    """The AMI protocol hands our replies to the Originates (a reply split across reads too),
    and a second FullyBooted on the same session writes nothing again."""
    async def go() -> None:
        gateway = AmiGateway(load(env={}))
        results: list = []

        async def result(cid: str, r: dict) -> None:
            results.append((cid, r))
        gateway.originate_results.append(result)
        gateway.originate("pr-c1-0-1-r1", "PJSIP/r1", "pr-responder", {"PR_CALL_ID": "c1"}, 20)

        class Manager:
            protocol = type("P", (), {"transport": Wire()})()
        wire = Manager.protocol.transport
        gateway._booted(Manager, None)  # type: ignore[arg-type]
        gateway._booted(Manager, None)  # type: ignore[arg-type]
        assert len(wire.written) == 1
        (aid,) = wire.action_ids()

        proto = _Protocol.__new__(_Protocol)
        proto.queue = __import__("collections").deque()
        proto.version = "11.0.0"
        proto.responses = {}
        proto.factory = type("F", (), {"pr_gateway": gateway})()
        reply = (f"Response: Success\r\nActionID: {aid}\r\nMessage: Originate successfully "
                 f"queued\r\n\r\nEvent: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {aid}"
                 f"\r\nResponse: Success\r\nChannel: PJSIP/r1-00000001\r\nReason: 4\r\n"
                 f"Uniqueid: pr-c1-0-1-r1\r\n\r\n").encode()
        proto.data_received(reply[:70])
        proto.data_received(reply[70:])
        await asyncio.sleep(0.01)
        assert [(cid, r["Response"], r["Reason"]) for cid, r in results] == \
            [("pr-c1-0-1-r1", "Success", "4")]
        gateway.close()
    run(go())
