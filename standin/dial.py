"""Dial() to a phone, as app_dial does it for the options our dialplan uses.

The fallback group's Dial stays in the PBX (who answers it is a test's switch); this is the
other one: a responder's leg calling a caller back ([pr-callback-call]). The phone at the
number behaves as ``pbx.phones`` says (standin/phones.py): ``answer:S`` a person who picks
up after S seconds, ``voicemail:S`` an answering machine, ``never``, ``busy``,
``congestion``, ``unregistered``.

- DIALSTATUS: ANSWER, NOANSWER (rang out the timeout), BUSY, CONGESTION, CHANUNAVAIL,
  CANCEL (the dialling channel hung up first).
- ``G(context^exten^priority)``: on answer, the dialling channel goes to that place and the
  called one to priority + 1; each runs on by itself. With G, a U option is never run (as
  app_dial.c does: G is handled first and returns).
- ``U(context^arg1^arg2...)`` (without G): on answer, the called channel runs
  Gosub(context,s,1(args)) before the bridge; GOSUB_RESULT ``CONTINUE`` hangs up the called
  channel and the caller goes on at its next priority with DIALSTATUS=ANSWER; ``ABORT``
  hangs up both.
- Variables set with ``__`` (or ``_``) on the dialling channel are inherited (``_`` once).
- New channels are named as chan_pjsip names an outbound trunk leg
  (``PJSIP/direct-trunk-0000000b``).

AMD() and WaitForSilence() decide from what answered (``Channel.answered_by``): a machine's
greeting is ``MACHINE_GREETING_S`` long, a person says a short hello.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from standin.caller import CallerScript
from standin.channel import STATE_RINGING, STATE_UP, Channel
from standin.dialplan import separate_args
from standin.phones import OriginateRequest, _new_channel, _pbx_sleep, phones_for

if TYPE_CHECKING:
    from standin.pbx import StandinPBX

MACHINE_GREETING_S = 4.0  # a voicemail greeting, up to its beep
AMD_DECIDES_S = {"MACHINE": 1.6, "HUMAN": 1.5}  # greeting > 1500 ms; hello + 800 ms silence
_RETURNED = "__dial_u_returned__"


def parse_options(text: str) -> dict[str, str]:
    """``U(x^y)G(a^b^1)`` -> {"U": "x^y", "G": "a^b^1"}; letters without arguments -> ""."""
    out: dict[str, str] = {}
    for letter, _, arg in re.findall(r"([A-Za-z])(\(([^)]*)\))?", text):
        out[letter] = arg
    return out


async def dial(pbx: StandinPBX, ch: Channel, dest: str, timeout_s: float, options: str) -> int:
    opts = parse_options(options)
    behaviour = phones_for(pbx).lookup(dest)
    callee = _new_channel(pbx, OriginateRequest(dest, context="", exten="s"), CallerScript())
    callee.answered_by = behaviour.kind
    pbx.dialled.append(callee)
    for name, forever in ch.inheritable.items():
        if name in ch.variables:
            callee.variables[name] = ch.variables[name]
            if forever:
                callee.inheritable[name] = True
    pbx.channels[callee.name] = callee
    pbx.emit({"Event": "Newchannel", "Privilege": "call,all", **callee.snapshot()})
    dest_headers = {f"Dest{k}": v for k, v in callee.snapshot().items()}
    pbx.emit({"Event": "DialBegin", "Privilege": "call,all", **ch.snapshot(), **dest_headers,
              "DialString": dest.partition("/")[2]})

    def end(status: str, cause: int) -> int:
        ch.set_variable("DIALSTATUS", status)
        pbx.emit({"Event": "DialEnd", "Privilege": "call,all", **ch.snapshot(), **dest_headers,
                  "DialStatus": status})
        if status != "ANSWER":
            callee.state = 0
            pbx.emit({"Event": "Hangup", "Privilege": "call,all", **callee.snapshot(),
                      "Cause": str(cause), "Cause-txt": "Normal Clearing"})
            pbx.channels.pop(callee.name, None)
            callee.finished.set()
        return -1 if ch.hung_up else 0

    failures = {"busy": ("BUSY", 17), "congestion": ("CONGESTION", 34),
                "unregistered": ("CHANUNAVAIL", 20)}
    if behaviour.kind in failures:
        await asyncio.sleep(0)
        return end(*failures[behaviour.kind])
    callee.state = STATE_RINGING
    ring_for = min(behaviour.seconds, timeout_s) if timeout_s > 0 else behaviour.seconds
    # The dialling channel hanging up (a responder giving up) ends the ringing: CANCEL.
    caller_gone = await _pbx_sleep(pbx, ch, ring_for)
    if caller_gone or ch.hung_up:
        return end("CANCEL", 16)
    if timeout_s > 0 and behaviour.seconds > timeout_s:
        return end("NOANSWER", 19)
    callee.state = STATE_UP
    pbx.emit({"Event": "Newstate", "Privilege": "call,all", **callee.snapshot()})
    end("ANSWER", 16)
    if "G" in opts:
        # app_dial.c (22.10.1, dial_exec_full): G is acted on before U, and returns; a U
        # given with it never runs (checked against the real Asterisk:
        # tests/test_callbacks_real.py).
        place = opts["G"].replace("^", ",")
        context, exten, prio = [*separate_args(place), "", "", ""][:3]
        pbx.interp.jump(callee, f"{context},{exten},{prio}")
        callee.priority += 1
        callee.task = asyncio.create_task(pbx._run(callee), name=callee.name)
        return 0 if pbx.interp.jump(ch, f"{context},{exten},{prio}") else -1
    if "U" in opts:
        parts = opts["U"].split("^")
        result = await _gosub(pbx, callee, parts[0], parts[1:])
        if result in ("CONTINUE", "ABORT") or callee.hung_up:
            callee.request_hangup("dialplan", at="Dial U()")
            callee.task = asyncio.create_task(pbx._finish(callee), name=callee.name)
            if result == "ABORT":
                ch.request_hangup("dialplan", at="Dial U() ABORT")
                return -1
            return 0
    # A plain bridge: both stay until one leaves.
    done = {asyncio.ensure_future(ch.hangup_event.wait()),
            asyncio.ensure_future(callee.hangup_event.wait())}
    _, pending = await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    callee.request_hangup("dialplan", at="Dial bridge ended")
    callee.task = asyncio.create_task(pbx._finish(callee), name=callee.name)
    return -1 if ch.hung_up else 0


async def _gosub(pbx: StandinPBX, callee: Channel, context: str, args: list[str]) -> str:
    """Run Gosub(context,s,1(args)) on the called channel until it returns; its
    GOSUB_RESULT."""
    callee.context, callee.exten, callee.priority = context, "s", 1
    callee.stack.append((_RETURNED, "s", 1))
    for n, arg in enumerate(args, 1):
        callee.variables[f"ARG{n}"] = arg
    await pbx.interp.run(callee)
    return callee.variables.get("GOSUB_RESULT", "")


async def app_amd(pbx: StandinPBX, ch: Channel, data: str) -> int:
    """AMD(): MACHINE for an answering machine's greeting, HUMAN for a person's hello."""
    status = "MACHINE" if ch.answered_by == "voicemail" else "HUMAN"
    if await pbx.wait(ch, AMD_DECIDES_S[status]):
        ch.set_variable("AMDSTATUS", "HANGUP")
        return -1 if ch.hung_up else 0
    ch.set_variable("AMDSTATUS", status)
    ch.set_variable("AMDCAUSE", "LONGGREETING-1600-1500" if status == "MACHINE" else
                    "HUMAN-600-800")
    return 0


async def app_waitforsilence(pbx: StandinPBX, ch: Channel, data: str) -> int:
    """WaitForSilence(ms,...): the rest of a machine's greeting (up to its beep), then ms."""
    args = [a.strip() for a in separate_args(data)] + [""]
    ms = int(args[0]) if args[0].isdigit() else 1000
    rest = MACHINE_GREETING_S - AMD_DECIDES_S["MACHINE"] if ch.answered_by == "voicemail" else 0
    if await pbx.wait(ch, max(rest, 0) + ms / 1000):
        return -1 if ch.hung_up else 0
    ch.set_variable("WAITSTATUS", "SILENCE")
    return 0
