"""The AMI actions of the stand-in. Response texts are Asterisk's own: main/manager.c
(action_ping, action_originate, ast_manager_hangup_helper, action_redirect,
action_getvar/setvar, action_userevent, action_coreshowchannels) and
apps/app_confbridge.c (action_confbridgelist, ...listrooms, ...kick,
action_mute_unmute_helper); field order follows the 22.10.1 captures.
StandinPlaceCall and StandinPhones are stand-in extensions (documented in ami.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from standin import ami_perms
from standin.caller import CallerScript, parse_keys
from standin.channel import Channel
from standin.expressions import separate_args
from standin.phones import OriginateRequest, originate, parse_callerid

if TYPE_CHECKING:
    from standin.ami import AmiSession, Message

Handler = Callable[["AmiSession", "Message"], Awaitable[bool | None]]


def _true(value: str) -> bool:
    """ast_true."""
    return value.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def _variables(m: Message, header: str = "Variable") -> list[tuple[str, str]]:
    """astman_get_variables: every Variable header, each split on commas (app args rules)."""
    out = []
    for value in m.get_all(header):
        for item in separate_args(value):
            name, sep, val = item.partition("=")
            if sep and name.strip():
                out.append((name.strip(), val))
    return out


def _channel(s: AmiSession, name: str) -> Channel | None:
    return s.server.pbx.channels.get(name)


async def ping(s: AmiSession, m: Message) -> None:
    s.ack(m, extra=[("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])


async def events(s: AmiSession, m: Message) -> None:
    """action_events: "Events: On" for a mask with any class, "Off" for none, an error for
    an empty one (set_eventmask leaves the mask unchanged then)."""
    mask = ami_perms.strings_to_mask(m.get("EventMask"))
    if mask < 0:
        s.error(m, "Invalid event mask")
        return
    s.event_mask = mask
    s.send([("Response", "Success"), *([("ActionID", m.action_id)] if m.action_id else []),
            ("Events", "On" if mask > 0 else "Off")])


async def originate_action(s: AmiSession, m: Message) -> None:
    """action_originate: the checks in its order, then Async (fast_originate) or not."""
    pbx = s.server.pbx
    name, context, exten = m.get("Channel"), m.get("Context"), m.get("Exten")
    prio_s, timeout_s = m.get("Priority"), m.get("Timeout")
    app = m.get("Application")
    if any(len(m.get(h)) > 150 for h in ("ChannelId", "OtherChannelId")):
        s.error(m, "Uniqueid length exceeds maximum of 150\n")
        return
    if not name:
        s.error(m, "Channel not specified")
        return
    priority = 0
    if prio_s:
        if re.fullmatch(r"\s*[-+]?\d+.*", prio_s):
            priority = int(re.match(r"\s*([-+]?\d+)", prio_s).group(1))  # type: ignore[union-attr]
        else:
            ext = pbx.dialplan.find_extension(context, exten)
            priority = ext.labels.get(prio_s, 0) if ext else 0
            if priority < 1:
                s.error(m, "Invalid priority")
                return
    timeout = 30000
    if timeout_s:
        t = re.match(r"\s*[-+]?\d+", timeout_s)
        if t is None:
            s.error(m, "Invalid timeout")
            return
        timeout = int(t.group())
    if "/" not in name:
        s.error(m, "Invalid channel")
        return
    if exten and context and priority and pbx.dialplan.find_extension(context, exten) is None:
        s.error(m, "Extension does not exist.")
        return
    if not app and not (exten and context and priority):
        s.error(m, "Originate with 'Exten' requires 'Context' and 'Priority'")
        return
    num, cid_name = parse_callerid(m.get("CallerID"))
    req = OriginateRequest(name, context, exten, priority or 1, app, m.get("Data"), timeout,
                           num, cid_name, _variables(m), m.get("ChannelId"), m.action_id)
    if _true(m.get("Async")):
        s.ack(m, "Originate successfully queued")
        s.server.spawn(originate(pbx, req, report=True))
        return
    # Synchronous: the session blocks until the phone answers or the attempt fails, and
    # its events wait meanwhile; no OriginateResponse (capture 16).
    s.held = []
    try:
        res = await originate(pbx, req, report=False)
        if res.success:
            s.ack(m, "Originate successfully queued")
        else:
            s.error(m, "Originate failed")
    finally:
        s.release()


async def hangup(s: AmiSession, m: Message) -> None:
    """ast_manager_hangup_helper: a channel name, or /regex/ for a list."""
    target, cause_s = m.get("Channel"), m.get("Cause")
    if not target:
        s.error(m, "No channel specified")
        return
    cause = int(cause_s) if cause_s.isdigit() and int(cause_s) <= 127 else 0
    if not target.startswith("/"):
        ch = _channel(s, target)
        if ch is None:
            s.error(m, "No such channel")
            return
        ch.request_hangup("ami", at="AMI Hangup", cause=cause)
        s.ack(m, "Channel Hungup")
        return
    if len(target) < 2 or not target.endswith("/"):
        s.error(m, "Regex format invalid, Channel param should be /regex/")
        return
    try:
        rx = re.compile(target[1:-1])
    except re.error:
        s.error(m, f"Regex compile failed on: {target}")
        return
    s.list_ack(m, "Channels hung up will follow")
    count = 0
    for ch in list(s.server.pbx.channels.values()):
        if rx.search(ch.name):
            ch.request_hangup("ami", at="AMI Hangup", cause=cause)
            count += 1
            s.send([("Event", "ChannelHungup"), ("Channel", ch.name),
                    *([("ActionID", m.action_id)] if m.action_id else [])])
    s.list_complete(m, "ChannelsHungupListComplete", count)


def _priority(s: AmiSession, context: str, exten: str, prio: str) -> int:
    if re.match(r"\s*\d+", prio):
        return int(re.match(r"\s*(\d+)", prio).group(1))  # type: ignore[union-attr]
    ext = s.server.pbx.dialplan.find_extension(context, exten)
    return ext.labels.get(prio, 0) if ext else 0


def _async_goto(ch: Channel, context: str, exten: str, priority: int) -> None:
    """ast_async_goto: the channel stops what it is doing (a prompt, an AGI command, a
    room) and goes on at the new place (Channel.move_to)."""
    ch.move_to(context, exten, priority)


async def redirect(s: AmiSession, m: Message) -> None:
    name, context, exten, prio = (m.get(h) for h in ("Channel", "Context", "Exten", "Priority"))
    name2, context2 = m.get("ExtraChannel"), m.get("ExtraContext")
    for value, label in ((name, "Channel"), (context, "Context"), (exten, "Exten"),
                         (prio, "Priority")):
        if not value:
            s.error(m, f"{label} not specified")
            return
    pi = _priority(s, context, exten, prio)
    if pi < 1:
        s.error(m, "Priority is invalid")
        return
    exten2, pi2 = m.get("ExtraExten") or exten, pi
    if name2 and context2:
        pi2 = _priority(s, context2, exten2, m.get("ExtraPriority"))
        if pi2 < 1:
            s.error(m, "ExtraPriority is invalid")
            return
    ch = _channel(s, name)
    if ch is None:
        s.error(m, f"Channel does not exist: {name}")
        return
    if ch.hung_up:
        s.error(m, "Redirect failed, channel not up.")
        return
    ch2 = _channel(s, name2) if name2 else None
    if name2 and ch2 is None:
        s.error(m, f"ExtraChannel does not exist: {name2}")
        return
    _async_goto(ch, context, exten, pi)
    if ch2 is None:
        s.ack(m, "Redirect successful")
        return
    _async_goto(ch2, context2 or context, exten2, pi2)
    s.ack(m, "Dual Redirect successful")


def _variable_target(s: AmiSession, m: Message) -> tuple[bool, Channel | None]:
    """action_getvar/action_setvar's shared checks: (usable, channel or None for globals);
    on a problem the error is already sent."""
    name, var = m.get("Channel"), m.get("Variable")
    if not var:
        s.error(m, "No variable specified")
        return False, None
    ch = _channel(s, name) if name else None
    if name and ch is None:
        s.error(m, "No such channel")
        return False, None
    return True, ch


async def getvar(s: AmiSession, m: Message) -> None:
    ok, ch = _variable_target(s, m)
    if ok:
        var = m.get("Variable")
        value = ch.get_variable(var) if ch else s.server.pbx.interp.globals.get(var)
        s.ack(m, extra=[("Variable", var), ("Value", value or "")])


async def setvar(s: AmiSession, m: Message) -> None:
    ok, ch = _variable_target(s, m)
    if not ok:
        return
    if ch is not None:
        ch.set_variable(m.get("Variable"), m.get("Value"))
    else:
        s.server.pbx.interp.globals[m.get("Variable")] = m.get("Value")
    s.ack(m, "Variable Set")


async def userevent(s: AmiSession, m: Message) -> None:
    """action_userevent: every header but Action and UserEvent is passed on, ActionID too."""
    s.ack(m, "Event Sent")
    body = [tuple(line.split(":", 1)) for line in m.lines
            if not line.lower().startswith(("userevent:", "action:"))]
    s.server.broadcast([("Event", "UserEvent"), ("Privilege", "user,all"),
                        ("UserEvent", m.get("UserEvent")),
                        *((k, v.lstrip()) for k, v in (b for b in body if len(b) == 2))])


async def coreshowchannels(s: AmiSession, m: Message) -> None:
    s.list_ack(m, "Channels will follow")
    chans = list(s.server.pbx.channels.values())
    for ch in chans:
        secs = int(time.monotonic() - s.server.first_seen.get(ch.name, time.monotonic()))
        room = ch.trace.room if ch.trace.room in s.server.pbx.rooms else None
        s.list_item(m, "CoreShowChannel", [
            *ch.snapshot().items(), ("Application", ch.trace.path[-1][3] if ch.trace.path
                                     else "AppDial2"), ("ApplicationData", ""),
            ("Duration", f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"),
            ("BridgeId", s.server.pbx.room(room).bridge_uniqueid if room else "")])
    s.list_complete(m, "CoreShowChannelsComplete", len(chans))


async def pjsipshowcontacts(s: AmiSession, m: Message) -> None:
    """res_pjsip/pjsip_options.c ami_show_contacts: the fallback desk's contact while it
    is registered (StandinPBX.desk_registered); otherwise "No Contacts found"."""
    if not s.server.pbx.desk_registered:
        s.error(m, "No Contacts found\n")
        return
    s.list_ack(m, "A listing of Contacts follows, presented as ContactList events")
    s.list_item(m, "ContactList", [
        ("ObjectType", "contact"),
        ("ObjectName", "fallback-desk;@standin"), ("ViaAddr", "127.0.0.5"), ("ViaPort", "5060"),
        ("Endpoint", "fallback-desk"), ("Uri", "sip:fallback-desk@127.0.0.5:5060"),
        ("Status", "Reachable")])
    s.list_complete(m, "ContactListComplete", 1)


# ---- ConfBridge (apps/app_confbridge.c) ------------------------------------------------------
def _room_or_error(s: AmiSession, m: Message) -> str | None:
    conference = m.get("Conference")
    if not conference:
        s.error(m, "No Conference name provided.")
    elif not s.server.pbx.rooms:
        s.error(m, "No active conferences.")
    elif conference not in s.server.pbx.rooms:
        s.error(m, "No Conference by that name found.")
    else:
        return conference
    return None


async def confbridgelist(s: AmiSession, m: Message) -> None:
    room = _room_or_error(s, m)
    if room is None:
        return
    members = s.server.pbx.rooms[room]
    s.list_ack(m, "Confbridge user list will follow")
    for ch in members:
        secs = int(time.monotonic() - s.server.first_seen.get(ch.name, time.monotonic()))
        muted = "Yes" if (room, ch.name) in s.server.muted else "No"
        s.list_item(m, "ConfbridgeList", [
            ("Conference", room), ("Admin", "No"), ("MarkedUser", "No"), ("WaitMarked", "No"),
            ("EndMarked", "No"), ("EndMarkedAny", "No"), ("Waiting", "No"), ("Muted", muted),
            ("Talking", "No"), ("AnsweredTime", secs), *ch.snapshot().items()])
    s.list_complete(m, "ConfbridgeListComplete", len(members))


async def confbridgelistrooms(s: AmiSession, m: Message) -> None:
    rooms = s.server.pbx.rooms
    if not rooms:
        s.error(m, "No active conferences.")
        return
    s.list_ack(m, "Confbridge conferences will follow")
    for name, members in rooms.items():
        s.list_item(m, "ConfbridgeListRooms", [("Conference", name), ("Parties", len(members)),
                                               ("Marked", 0), ("Locked", "No"), ("Muted", "No")])
    s.list_complete(m, "ConfbridgeListRoomsComplete", len(rooms))


async def confbridgekick(s: AmiSession, m: Message) -> None:
    room = _room_or_error(s, m)
    if room is None:
        return
    channel = m.get("Channel")
    if await s.server.pbx.kick(room, channel):
        s.ack(m, "All participants kicked" if channel == "all" else "User kicked")
    else:
        s.error(m, "No Channel by that name found in Conference.")


async def _mute(s: AmiSession, m: Message, mute: bool) -> None:
    conference, channel = m.get("Conference"), m.get("Channel")
    if not conference:
        s.error(m, "No Conference name provided.")
        return
    if not channel:
        s.error(m, "No channel name provided.")
        return
    room = _room_or_error(s, m)
    if room is None:
        return
    # generic_mute_unmute_helper: "all"/"participants", else a channel-name prefix.
    members = [c for c in s.server.pbx.rooms[room]
               if channel in ("all", "participants") or c.name.startswith(channel)]
    if not members:
        s.error(m, "No Channel by that name found in Conference.")
        return
    for ch in members:
        (s.server.muted.add if mute else s.server.muted.discard)((room, ch.name))
        bridge = s.server.pbx.room(room)
        s.server.broadcast([("Event", "ConfbridgeMute" if mute else "ConfbridgeUnmute"),
                            ("Privilege", "call,all"), ("Conference", room),
                            ("BridgeUniqueid", bridge.bridge_uniqueid if bridge else ""),
                            *ch.snapshot().items(), ("Admin", "No")])
    s.ack(m, "User muted" if mute else "User unmuted")


async def confbridgemute(s: AmiSession, m: Message) -> None:
    await _mute(s, m, True)


async def confbridgeunmute(s: AmiSession, m: Message) -> None:
    await _mute(s, m, False)


# ---- stand-in extensions ----------------------------------------------------------------------
async def standin_place_call(s: AmiSession, m: Message) -> None:
    source = m.get("Source") or "direct"
    context = f"from-{source}"
    if context not in s.server.pbx.dialplan.contexts:
        s.error(m, f"No context {context}")
        return
    hangup_after, stay = m.get("HangupAfter"), m.get("Stay")
    try:
        num, name = parse_callerid(m.get("CallerID"))
        say, message = m.get("Say"), m.get("Message")
        script = CallerScript(keys=parse_keys(m.get("Keys")),
                              hangup_after=int(hangup_after) if hangup_after else None,
                              caller_id_num=num, caller_id_name=name,
                              variables=dict(_variables(m, "Var")),
                              stay_s=float(stay) if stay else None,
                              say=Path(say) if say else None,
                              speech=Path(message) if message else None,
                              record_end="silence" if message else "dtmf",
                              callback_keys=parse_keys(m.get("CallbackKeys") or ""),
                              leave_after=m.get("LeaveAfter") or None)
    except ValueError as exc:
        s.error(m, f"Bad StandinPlaceCall: {exc}")
        return
    ch = await s.server.pbx.start_call(context, m.get("Exten") or "s", script)
    s.ack(m, "Call placed", extra=[("Channel", ch.name), ("Uniqueid", ch.uniqueid)])
    action_id = m.action_id

    async def report_end() -> None:
        await ch.finished.wait()
        trace = json.dumps(dataclasses.asdict(ch.trace), default=str, separators=(",", ":"))
        s.send([("Event", "StandinCallEnded"), *([("ActionID", action_id)] if action_id else []),
                ("Channel", ch.name), ("Uniqueid", ch.uniqueid), ("Trace", trace)])

    s.server.spawn(report_end())


async def standin_phones(s: AmiSession, m: Message) -> None:
    entries = {}
    for value in m.get_all("Phone"):
        match, sep, behaviour = value.rpartition("=")
        if not sep or not match.strip():
            s.error(m, f"Bad Phone header: {value}")
            return
        entries[match.strip()] = behaviour
    try:
        s.server.phones.replace(entries, m.get("Default") or None)
    except ValueError as exc:
        s.error(m, str(exc))
        return
    s.ack(m, "Phones set", extra=[("Phones", len(entries)),
                                  ("Default", str(s.server.phones.default))])


ACTIONS: dict[str, Handler] = {
    "ping": ping, "events": events, "originate": originate_action, "hangup": hangup,
    "redirect": redirect, "getvar": getvar, "setvar": setvar, "userevent": userevent,
    "coreshowchannels": coreshowchannels, "confbridgelist": confbridgelist,
    "pjsipshowcontacts": pjsipshowcontacts,
    "confbridgelistrooms": confbridgelistrooms, "confbridgekick": confbridgekick,
    "confbridgemute": confbridgemute, "confbridgeunmute": confbridgeunmute,
    "standinplacecall": standin_place_call, "standinphones": standin_phones,
}
