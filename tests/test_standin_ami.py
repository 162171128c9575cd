"""The stand-in's AMI server against the recorded Asterisk 22.10.1 exchanges
(/work/shared/reference/asterisk-captures/ami_*.txt), over real sockets, with a raw
asyncio client and with panoramisk 1.4's Manager (the dispatcher's library).

A tiny FastAGI server here plays our IVR: ``intake`` queues the caller (PR_QUEUED=1,
PR_CALL_ID), ``whisper`` sets PR_ACCEPTED=1 when the responder pressed 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from panoramisk import Manager

from standin.ami import AmiServer
from standin.pbx import StandinPBX
from standin.phones import Behaviour, phones_for

DIALPLAN = Path(__file__).resolve().parent.parent / "dialplan" / "extensions.conf"
CALL_ID = "c42"


class FakeIvr:
    """FastAGI: intake queues the call, whisper accepts on 1, anything else just closes."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.port = 0

    async def start(self) -> FakeIvr:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _cmd(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   line: str) -> str:
        writer.write(line.encode() + b"\n")
        while True:
            reply = (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")
            if reply != "HANGUP":
                return reply

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = {}
        while (line := (await reader.readline()).decode().rstrip("\n")):
            key, _, value = line.partition(": ")
            env[key] = value
        script = env.get("agi_network_script", "").partition("?")[0]
        self.scripts.append(script)
        try:
            if script == "intake":
                await self._cmd(reader, writer, f"SET VARIABLE PR_CALL_ID {CALL_ID}")
                await self._cmd(reader, writer,
                                f"SET VARIABLE PR_ATTENDED_UNTIL {int(time.time()) + 600}")
                await self._cmd(reader, writer, "SET VARIABLE PR_QUEUED 1")
            elif script == "whisper":
                await self._cmd(reader, writer, "ANSWER")
                await self._cmd(reader, writer, 'STREAM FILE beep ""')
                got = await self._cmd(reader, writer, "GET DATA beep 8000 1")
                if got == "200 result=1":
                    await self._cmd(reader, writer, "SET VARIABLE PR_ACCEPTED 1")
        except (ConnectionError, TimeoutError):
            pass
        writer.close()


class Client:
    """A raw AMI client: blocks as lists of (key, value), every block kept in ``seen``."""

    async def connect(self, port: int) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.banner = (await self.reader.readline()).decode()
        self.seen: list[list[tuple[str, str]]] = []
        self.crlf_only = True
        return self

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n")

    async def block(self, timeout: float = 5) -> list[tuple[str, str]] | None:
        pairs = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                return None
            self.crlf_only &= raw.endswith(b"\r\n")
            line = raw.decode().rstrip("\r\n")
            if not line:
                self.seen.append(pairs)
                return pairs
            key, _, value = line.partition(": ")
            pairs.append((key, value))

    async def wait_for(self, **want: str) -> dict[str, str]:
        """The next block whose headers include ``want`` (Cause_txt -> Cause-txt)."""
        want = {k.replace("_", "-") if k == "Cause_txt" else k: v for k, v in want.items()}
        while True:
            pairs = await self.block()
            assert pairs is not None, f"EOF while waiting for {want}"
            d = dict(pairs)
            if all(d.get(k) == v for k, v in want.items()):
                return d

    async def login(self, secret: str = "s3cret") -> dict[str, str]:
        self.send(("Action", "Login"), ("ActionID", "login-1"), ("Username", "pr"),
                  ("Secret", secret))
        return dict(await self.block() or [])

    def events(self, name: str) -> list[dict[str, str]]:
        return [dict(p) for p in self.seen if dict(p).get("Event") == name]


@pytest.fixture
async def ivr():
    server = await FakeIvr().start()
    yield server
    server.server.close()


@pytest.fixture
async def ami(ivr: FakeIvr):
    pbx = StandinPBX(DIALPLAN, {"PR_AGI": f"agi://127.0.0.1:{ivr.port}"}, time_scale=0.01)
    server = await AmiServer(pbx, username="pr", secret="s3cret", port=0,
                             auth_fail_delay_s=0.05).start()
    yield server
    await server.close()
    await asyncio.wait_for(pbx.close(), 10)


async def client(server: AmiServer, login: bool = True) -> Client:
    c = await Client().connect(server.port)
    if login:
        assert (await c.login())["Message"] == "Authentication accepted"
    return c


def originate(c: Client, dial: str, action_id: str, *extra: tuple[str, str]) -> None:
    c.send(("Action", "Originate"), ("ActionID", action_id), ("Channel", dial),
           ("Context", "pr-responder"), ("Exten", "s"), ("Priority", "1"), ("Async", "true"),
           ("Variable", f"PR_CALL_ID={CALL_ID}"), ("Variable", "PR_RESPONDER=r1"), *extra)


async def test_banner_login_ping_logoff(ami: AmiServer) -> None:
    c = await Client().connect(ami.port)
    assert c.banner == "Asterisk Call Manager/11.0.0\r\n"  # capture 10a
    resp = await c.login()
    assert resp == {"Response": "Success", "ActionID": "login-1",
                    "Message": "Authentication accepted"}
    assert (await c.block())[:2] == [("Event", "FullyBooted"), ("Privilege", "system,all")]
    assert dict(await c.block())["Event"] == "SuccessfulAuth"
    c.send(("Action", "Ping"), ("ActionID", "p1"))
    pong = await c.block()
    assert pong[:3] == [("Response", "Success"), ("ActionID", "p1"), ("Ping", "Pong")]
    assert float(dict(pong)["Timestamp"]) > 0
    c.send(("Action", "Logoff"), ("ActionID", "bye"))
    assert await c.block() == [("Response", "Goodbye"), ("ActionID", "bye"),
                               ("Message", "Thanks for all the fish.")]
    assert await c.block() is None and c.crlf_only


async def test_login_failure_waits_then_closes(ami: AmiServer) -> None:
    c = await client(ami, login=False)
    start = asyncio.get_running_loop().time()
    assert await c.login("wrong") == {"Response": "Error", "ActionID": "login-1",
                                      "Message": "Authentication failed"}
    assert asyncio.get_running_loop().time() - start >= 0.05  # capture 10b: after a delay
    assert await c.block() is None


async def test_refusals_before_login_and_unknown_actions(ami: AmiServer) -> None:
    c = await client(ami, login=False)
    c.send(("Action", "Ping"), ("ActionID", "x"))
    assert dict(await c.block())["Message"] == "Permission denied"
    await c.login()
    c.send(("Action", "Frobnicate"), ("ActionID", "u"))
    resp = await c.wait_for(ActionID="u")
    assert resp["Response"] == "Error"
    assert resp["Message"].startswith("Invalid/unknown command: Frobnicate.")


async def test_event_classes_at_login_and_by_the_events_action(ami: AmiServer) -> None:
    """manager.c: Login's Events and the Events action's EventMask choose the classes
    delivered; an event arrives only if the mask holds all its classes."""
    c = await Client().connect(ami.port)
    c.send(("Action", "Login"), ("ActionID", "l"), ("Username", "pr"), ("Secret", "s3cret"),
           ("Events", "call,user"))
    assert dict(await c.block())["Message"] == "Authentication accepted"
    phones_for(ami.pbx).set("resp-1", "decline")
    originate(c, "PJSIP/resp-1", "o1", ("Timeout", "300"))
    await c.wait_for(Event="OriginateResponse")
    await c.wait_for(Event="Hangup")
    privileges = {dict(p).get("Privilege") for p in c.seen if dict(p).get("Event")}
    # call and user (the dialplan's UserEvents) only: no FullyBooted (system), no VarSet (dialplan)
    assert privileges <= {"call,all", "user,all"} and "call,all" in privileges
    assert ("Event", "FullyBooted") not in [p[0] for p in c.seen if p]
    for mask, answer in (("off", "Off"), ("system,call", "On"), ("on", "On"), ("0", "Off")):
        c.send(("Action", "Events"), ("ActionID", mask), ("EventMask", mask))
        assert (await c.wait_for(ActionID=mask))["Events"] == answer
    c.send(("Action", "Events"), ("ActionID", "empty"), ("EventMask", ""))
    assert await c.wait_for(ActionID="empty") == {"Response": "Error", "ActionID": "empty",
                                                  "Message": "Invalid event mask"}
    # Off: nothing at all arrives, though a whole call rings and hangs up meanwhile.
    c.send(("Action", "Events"), ("ActionID", "quiet"), ("EventMask", "off"))
    await c.wait_for(ActionID="quiet")
    everyone = await client(ami)
    originate(everyone, "PJSIP/resp-1", "o2", ("Timeout", "300"))
    await everyone.wait_for(Event="OriginateResponse", ActionID="o2")
    await everyone.wait_for(Event="Hangup")
    assert everyone.events("VarSet")  # the default mask is every class
    c.send(("Action", "Ping"), ("ActionID", "p"))
    assert [dict(p).get("Event") for p in [await c.block()]] == [None]


@pytest.mark.parametrize(("behaviour", "response", "reason"), [
    ("answer:0.1", "Success", "4"), ("decline", "Success", "4"),
    ("voicemail:0.2", "Success", "4"), ("hangup-in-whisper", "Success", "4"),
    ("never", "Failure", "3"), ("busy", "Failure", "5"),
])
async def test_originate_each_phone_behaviour(ami: AmiServer, behaviour: str, response: str,
                                              reason: str) -> None:
    c = await client(ami)
    phones_for(ami.pbx).set("resp-1", behaviour)
    originate(c, "PJSIP/resp-1", "o1", ("Timeout", "300"))
    assert (await c.wait_for(ActionID="o1"))["Message"] == "Originate successfully queued"
    ev = await c.wait_for(Event="OriginateResponse")
    assert (ev["ActionID"], ev["Response"], ev["Reason"]) == ("o1", response, reason)
    if response == "Failure":  # capture 11b: the dial string, no uniqueid
        assert (ev["Channel"], ev["Uniqueid"]) == ("PJSIP/resp-1", "<unknown>")
        cause = {"3": ("19", "User alerting, no answer"), "5": ("17", "User busy")}[reason]
        hup = await c.wait_for(Event="Hangup")
        assert (hup["Cause"], hup["Cause-txt"]) == cause
    else:
        assert ev["Channel"].startswith("PJSIP/resp-1-") and ev["Context"] == "pr-responder"
        if behaviour.startswith("answer"):  # pressed 1: bridged, until we hang it up
            await c.wait_for(Event="ConfbridgeJoin", Channel=ev["Channel"])
            c.send(("Action", "Hangup"), ("Channel", ev["Channel"]))
        await c.wait_for(Event="Hangup", Channel=ev["Channel"])
    names = [e for (k, e), *_ in c.seen if k == "Event"]
    assert names.index("Newchannel") < names.index("DialBegin") < names.index(
        "OriginateResponse")  # capture 11a order
    joined = bool(c.events("ConfbridgeJoin"))
    assert joined == behaviour.startswith("answer") and not phones_for(ami.pbx).violations


async def test_originate_application_variables_channel_id_getvar(ami: AmiServer) -> None:
    c = await client(ami)
    phones_for(ami.pbx).set("+16175550100", "answer:0")
    # A supervisor joining a room: Application form; ConfBridge keeps the channel up.
    c.send(("Action", "Originate"), ("ActionID", "o1"), ("Async", "yes"),
           ("Channel", "PJSIP/+16175550100@direct-trunk"), ("Application", "ConfBridge"),
           ("Data", "call-sup"), ("ChannelId", "leg-1"), ("Variable", f"PR_CALL_ID={CALL_ID}"),
           ("Variable", "PR_RESPONDER=r1"), ("Variable", "A=1,B=2"))
    ev = await c.wait_for(Event="OriginateResponse")
    assert ev["Uniqueid"] == "leg-1" and ev["Channel"].startswith("PJSIP/direct-trunk-")
    assert (ev["Application"], ev["Data"]) == ("ConfBridge", "call-sup")
    await c.wait_for(Event="ConfbridgeJoin", Conference="call-sup")
    varsets = {(e["Variable"], e["Value"]) for e in c.events("VarSet")}
    assert {("PR_CALL_ID", CALL_ID), ("PR_RESPONDER", "r1"), ("A", "1"), ("B", "2")} <= varsets
    c.send(("Action", "Getvar"), ("ActionID", "g"), ("Channel", ev["Channel"]),
           ("Variable", "PR_CALL_ID"))
    assert await c.wait_for(ActionID="g") == {"Response": "Success", "ActionID": "g",
                                              "Variable": "PR_CALL_ID", "Value": CALL_ID}
    c.send(("Action", "ConfbridgeKick"), ("ActionID", "k"), ("Conference", "call-sup"),
           ("Channel", ev["Channel"]))
    assert (await c.wait_for(ActionID="k"))["Message"] == "User kicked"
    for name in ("ConfbridgeLeave", "BridgeLeave", "ConfbridgeEnd", "BridgeDestroy", "Hangup"):
        await c.wait_for(Event=name)  # capture 12 order


async def test_shutdown_event_then_close(ami: AmiServer) -> None:
    c = await client(ami)
    await ami.close()
    assert (await c.wait_for(Event="Shutdown"))["Shutdown"] == "Cleanly"  # capture 14
    assert await c.block() is None


async def test_serve_refuses_without_secret_and_serves_with_one(tmp_path: Path) -> None:
    import socket

    from crisisline import config
    from standin import serve

    with pytest.raises(SystemExit):
        await serve.serve(config.load(env={}, var_dir=str(tmp_path), ami_secret=""))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = config.load(env={}, var_dir=str(tmp_path), ami_secret="pw", ami_user="pr",
                           ami_port=port)
    ready: asyncio.Future[AmiServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve.serve(settings, ready=ready))
    server = await asyncio.wait_for(ready, 5)
    c = await Client().connect(server.port)
    assert (await c.login("pw"))["Response"] == "Success"
    task.cancel()
    await c.wait_for(Event="Shutdown")
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_duplicate_channel_id_fails_with_that_id(ami: AmiServer) -> None:
    c = await client(ami)
    phones_for(ami.pbx).set_default("never")
    originate(c, "PJSIP/resp-1", "o1", ("ChannelId", "leg-1"))
    await c.wait_for(Event="Newchannel")
    ringing = (await c.wait_for(Event="Newstate", ChannelStateDesc="Ringing"))["Channel"]
    originate(c, "PJSIP/resp-2", "o2", ("ChannelId", "leg-1"))
    ev = await c.wait_for(Event="OriginateResponse", ActionID="o2")
    assert (ev["Response"], ev["Reason"], ev["Uniqueid"]) == ("Failure", "0", "leg-1")
    c.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", ringing), ("Cause", "16"))
    assert (await c.wait_for(ActionID="h"))["Message"] == "Channel Hungup"
    ev = await c.wait_for(Event="OriginateResponse", ActionID="o1")  # cancelled: reason 1
    assert (ev["Response"], ev["Reason"], ev["Uniqueid"]) == ("Failure", "1", "leg-1")


async def test_sync_originate_holds_events_until_answer(ami: AmiServer) -> None:
    c = await client(ami)
    phones_for(ami.pbx).set_default("answer:20")  # 0.2 s at scale 0.01
    c.send(("Action", "Originate"), ("ActionID", "sync"), ("Channel", "PJSIP/sup-1"),
           ("Application", "Wait"), ("Data", "1"))
    first = await c.wait_for(ActionID="sync")  # capture 16: the Response, then the burst
    assert first["Message"] == "Originate successfully queued" and not c.events("Newchannel")
    assert dict(await c.block())["Event"] == "Newchannel"
    await c.wait_for(Event="Hangup")
    assert not c.events("OriginateResponse")


async def test_caller_responder_confbridge_redirect_and_hangup(ami: AmiServer,
                                                               ivr: FakeIvr) -> None:
    c = await client(ami)
    c.send(("Action", "ConfbridgeList"), ("ActionID", "l0"), ("Conference", "call-x"))
    assert (await c.wait_for(ActionID="l0"))["Message"] == "No active conferences."
    c.send(("Action", "StandinPlaceCall"), ("ActionID", "call"), ("Source", "direct"),
           ("CallerID", '"Pat" <6175550123>'), ("Var", "X_NOTE=hi"))
    placed = await c.wait_for(ActionID="call", Response="Success")
    caller = placed["Channel"]
    await c.wait_for(Event="ConfbridgeJoin", Channel=caller, Conference=f"call-{CALL_ID}")
    names = [e for (k, e), *_ in c.seen if k == "Event"]
    assert names.index("ConfbridgeStart") < names.index("BridgeEnter") < names.index(
        "ConfbridgeJoin")  # capture 12
    c.send(("Action", "StandinPhones"), ("ActionID", "ph"), ("Default", "never"),
            ("Phone", "resp-1=answer:0.1"))
    assert (await c.wait_for(ActionID="ph"))["Response"] == "Success"
    originate(c, "PJSIP/resp-1", "o1", ("ChannelId", "leg-1"))
    await c.wait_for(Event="OriginateResponse", Response="Success", Uniqueid="leg-1")
    join = await c.wait_for(Event="ConfbridgeJoin", Uniqueid="leg-1")
    assert join["Conference"] == f"call-{CALL_ID}" and ivr.scripts[:2] == ["intake", "whisper"]
    c.send(("Action", "ConfbridgeList"), ("ActionID", "l1"), ("Conference", f"call-{CALL_ID}"))
    ack = await c.wait_for(ActionID="l1")
    assert (ack["EventList"], ack["Message"]) == ("start", "Confbridge user list will follow")
    members = [await c.wait_for(Event="ConfbridgeList") for _ in range(2)]
    assert [m["Channel"] for m in members] == [caller, join["Channel"]]
    assert all(m["ActionID"] == "l1" for m in members)
    done = await c.wait_for(Event="ConfbridgeListComplete")
    assert (done["ActionID"], done["ListItems"]) == ("l1", "2")
    c.send(("Action", "ConfbridgeList"), ("ActionID", "l2"), ("Conference", "call-nope"))
    assert (await c.wait_for(ActionID="l2"))["Message"] == "No Conference by that name found."

    # The caller is the room's marked user: moving them out (a Redirect) removes the
    # responder, who is end_marked (tests/captures/ami_confbridge_caller_leaves.txt).
    c.send(("Action", "Redirect"), ("ActionID", "r"), ("Channel", caller),
           ("Context", "pr-connect"), ("Exten", "s"), ("Priority", "1"))
    assert (await c.wait_for(ActionID="r"))["Message"] == "Redirect successful"
    await c.wait_for(Event="ConfbridgeLeave", Channel=caller)
    wanted = {("ConfbridgeLeave", join["Channel"]), ("ConfbridgeJoin", caller)}
    seen: dict[tuple[str, str], dict[str, str]] = {}
    while not wanted <= set(seen):
        block = dict(await c.block() or [])
        seen[(block.get("Event", ""), block.get("Channel", ""))] = block
    assert seen[("ConfbridgeJoin", caller)]["Context"] == "pr-connect"

    c.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", caller))
    assert (await c.wait_for(ActionID="h"))["Message"] == "Channel Hungup"
    ended = await c.wait_for(Event="StandinCallEnded", ActionID="call")
    trace = json.loads(ended["Trace"])
    assert trace["room"] == f"call-{CALL_ID}" and trace["variables"]["X_NOTE"] == "hi"
    assert [e["Conference"] for e in c.events("ConfbridgeEnd")][-1] == f"call-{CALL_ID}"
    c.send(("Action", "Hangup"), ("ActionID", "h3"), ("Channel", caller))
    assert (await c.wait_for(ActionID="h3"))["Message"] == "No such channel"


async def test_panoramisk_manager_is_a_working_client(ami: AmiServer) -> None:
    phones_for(ami.pbx).set_default("answer:0.1")
    manager = Manager(host="127.0.0.1", port=ami.port, username="pr", secret="s3cret",
                      ping_delay=60, loop=asyncio.get_running_loop())
    joins: list[str] = []
    manager.register_event("ConfbridgeJoin", lambda mgr, ev: joins.append(ev.channel))
    await manager.connect()
    try:
        for _ in range(100):
            if manager.authenticated:
                break
            await asyncio.sleep(0.01)
        assert manager.authenticated
        pong = await manager.send_action({"Action": "Ping"})
        assert pong.ping == "Pong"
        placed = await manager.send_action({"Action": "StandinPlaceCall", "Source": "911"})
        assert placed.success and placed.channel
        # Async Originate: the future resolves with the OriginateResponse (LIBRARIES.md).
        res = await asyncio.wait_for(manager.send_action({
            "Action": "Originate", "Channel": "PJSIP/resp-9", "Context": "pr-responder",
            "Exten": "s", "Priority": "1", "Async": "true",
            "Variable": [f"PR_CALL_ID={CALL_ID}", "PR_RESPONDER=r9"]}), 5)
        assert [m.response for m in res] == ["Success", "Success"]
        assert res[1].event == "OriginateResponse" and res[1].reason == "4"
        for _ in range(200):
            if len(joins) == 2:
                break
            await asyncio.sleep(0.01)
        assert joins[0] == placed.channel and joins[1].startswith("PJSIP/resp-9-")
        listing = await manager.send_action({"Action": "ConfbridgeList",
                                             "Conference": f"call-{CALL_ID}"})
        assert [m.event for m in listing[1:]] == ["ConfbridgeList", "ConfbridgeList",
                                                  "ConfbridgeListComplete"]
        missing = await manager.send_action({"Action": "ConfbridgeList", "Conference": "x"})
        assert missing.response == "Error"
    finally:
        manager.close()


def test_behaviours_parse() -> None:
    assert str(Behaviour.parse("answer:3")) == "answer:3"
    assert Behaviour.parse("voicemail").seconds == 5.0
    for bad in ("answer", "ring", "busy:3", "decline:x"):
        with pytest.raises(ValueError):
            Behaviour.parse(bad)
