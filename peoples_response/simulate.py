"""``peoples-response simulate call``: one scripted call, one JSON object on stdout.

The call runs through our real dialplan (interpreted by the stand-in PBX) and the real
FastAGI server it names; what the caller heard comes from the stand-in's trace, what was
decided comes from the call's record in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import redis

from crisisline.config import ROOT, Settings
from crisisline.stores.calls import EVENTS, call_key
from peoples_response.up import read_runtime
from standin.caller import CallerScript, parse_keys
from standin.pbx import StandinPBX

CORE_SOUNDS = ["/usr/share/asterisk/sounds"]
EXTENSIONS = {"direct": "6175550100", "911": "911000", "988": "988000"}


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"simulate: --var takes NAME=VALUE, got {pair!r}")
        out[name.strip()] = value
    return out


def _agi_address(args: argparse.Namespace, settings: Settings) -> str:
    if args.agi:
        host, sep, port = args.agi.rpartition(":")
        if not sep or not port.isdigit():
            raise SystemExit(f"simulate: --agi takes HOST:PORT, got {args.agi!r}")
        return f"{host}:{port}"
    return read_runtime(settings).get("agi") or f"{settings.agi_host}:{settings.agi_port}"


def build_pbx(settings: Settings, agi: str) -> StandinPBX:
    return StandinPBX(ROOT / "dialplan" / "extensions.conf",
                      globals_overrides={"PR_AGI": f"agi://{agi}"},
                      sounds_dirs=CORE_SOUNDS, prompts_dir=settings.prompts_path,
                      prompts_prefix=settings.asterisk_prompts_path)


def script_from_args(args: argparse.Namespace) -> CallerScript:
    return CallerScript(keys=parse_keys(args.keys), hangup_after=args.hangup_after,
                        caller_id_num=args.caller_id or None,
                        caller_id_name=args.caller_name or None,
                        variables=_parse_vars(args.var), stay_s=args.stay)


def _events_for(client: redis.Redis, call_id: str) -> list[dict[str, str]]:
    out = []
    for _, body in client.xrange(EVENTS):
        fields = {k.decode(): v.decode() for k, v in body.items()}
        if fields.get("call_id") == call_id:
            out.append(fields)
    return out


def trace_dict(trace: Any) -> dict[str, Any]:
    """The stand-in's CallTrace as the plain dict the stand-in's AMI sends as JSON."""
    return {"channel": trace.channel, "prompts": list(trace.prompts),
            "keys": [list(k) for k in trace.keys], "variables": dict(trace.variables),
            "agi_status": list(trace.agi_status), "room": trace.room,
            "fallback_dialed": trace.fallback_dialed}


def _rung(events: list[dict[str, str]], created: float) -> list[dict[str, Any]]:
    rung: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        key = (e.get("responder", ""), e.get("wave", ""))
        if e["type"] == "offer_ringing":
            rung[key] = {"responder": e["responder"], "wave": int(e.get("wave") or 0),
                         "offered_at": round(float(e["at"]) - created, 3), "result": "ringing"}
        elif e["type"] in ("offer_passed", "accepted"):
            for (rid, _), row in rung.items():
                if rid == e.get("responder") and row["result"] == "ringing":
                    row["result"] = "accepted" if e["type"] == "accepted" else e.get("reason", "passed")
    return list(rung.values())


def describe(trace: dict[str, Any], settings: Settings, client: redis.Redis, source: str,
             call_id: str | None = None) -> dict[str, Any]:
    """The JSON a user sees; documented in README."""
    variables = trace.get("variables", {})
    call_id = call_id or variables.get("PR_CALL_ID") or None
    record = {k.decode(): v.decode() for k, v in client.hgetall(call_key(call_id)).items()} \
        if call_id else {}
    prefix = settings.asterisk_prompts_path.rstrip("/") + "/"
    prompts = [p[len(prefix):] if p.startswith(prefix) else p for p in trace.get("prompts", [])]
    queued = variables.get("PR_QUEUED") == "1" or bool(record.get("queued_at"))
    events = _events_for(client, call_id) if call_id else []
    created = float(record.get("created_at") or 0)
    state = record.get("state", "")
    if record.get("accepted_by"):
        outcome = "bridged"
    elif record.get("callback_number") or state == "callback":
        outcome = "callback"
    elif trace.get("fallback_dialed") or state == "fallback":
        outcome = "fallback"
    elif queued and state in ("waiting", "dispatching"):
        outcome = "waiting"
    else:
        outcome = "abandoned"
    tth = record.get("time_to_human_s")
    return {
        "call_id": call_id,
        "source": record.get("source", source),
        "language": record.get("language") or variables.get("PR_LANGUAGE"),
        "neighborhood": record.get("neighborhood") or None,
        "zip_code": record.get("zip_code") or None,
        "priority": int(record["priority"]) if record.get("priority") else settings.priority_for(source),
        "queued": queued,
        "consented_to_message": record.get("consented_to_message") == "1",
        "prompts": prompts,
        "keys": [answer for _, answer in trace.get("keys", [])],
        "rung": _rung(events, created),
        "answered_by": record.get("accepted_by") or None,
        "time_to_human_s": float(tth) if tth else None,
        "outcome": outcome,
        "state": state or None,
        "hung_up_at": record.get("end_step") or None,
        "agistatus": trace["agi_status"][0] if trace.get("agi_status") else None,
        "room": trace.get("room"),
        "events": [e["type"] for e in events],
    }


async def simulate(settings: Settings, agi: str, source: str, script: CallerScript) -> Any:
    """Issue #2's path: an in-process stand-in, the caller alone (no dispatcher)."""
    pbx = build_pbx(settings, agi)
    return await pbx.place_call(f"from-{source}", EXTENSIONS[source], script)


def _find_call(client: redis.Redis, channel: str) -> str | None:
    for key in client.scan_iter(f"{call_key('')}*", count=500):
        if client.hget(key, "channel") == channel.encode():
            return key.decode().rsplit(":", 1)[-1]
    return None


async def simulate_through_pbx(settings: Settings, runtime: dict[str, str], args: argparse.Namespace,
                               client: redis.Redis) -> tuple[dict[str, Any], str | None]:
    """Issue #3's path: the stand-in PBX that `up` runs, with the dispatcher ringing responders.

    The caller stays until a responder is with them (then talks ``--talk`` seconds and hangs
    up), or until they hang up by script, or until the call ends some other way.
    """
    from peoples_response.ami_client import AmiClient

    host, _, port = runtime["ami"].rpartition(":")
    ami = await AmiClient.connect(host, int(port), settings.ami_user,
                                  settings.ami_secret or runtime.get("ami_secret", ""))
    try:
        if args.responders:
            await ami.request(_phones(args.responders))
        headers = [("Action", "StandinPlaceCall"), ("Source", args.source), ("Keys", args.keys),
                   ("CallerID", args.caller_id or ""), ("Stay", "")]
        if args.hangup_after:
            headers.append(("HangupAfter", str(args.hangup_after)))
        headers += [("Var", v) for v in args.var]
        action_id = ami.send(headers)
        messages: list[dict[str, str]] = []

        async def read_all() -> dict[str, str]:
            while True:
                message = await ami.read_message()
                messages.append(message)
                if message.get("Event") == "StandinCallEnded" and message.get("ActionID") == action_id:
                    return message

        ended = asyncio.ensure_future(read_all())
        loop = asyncio.get_running_loop()
        placed = call_id = None
        deadline = loop.time() + settings.max_wait_s + 60
        talk_until: float | None = None
        while not ended.done() and loop.time() < deadline:
            await asyncio.sleep(0.1)
            if placed is None:
                reply = next((m for m in messages if m.get("ActionID") == action_id
                              and "Response" in m), None)
                if reply is not None and reply.get("Response") != "Success":
                    raise SystemExit(f"simulate: the stand-in refused the call: {reply.get('Message')}")
                placed = reply.get("Channel") if reply else None
            if call_id is None and placed:
                call_id = _find_call(client, placed)
            if call_id is None:
                continue
            state = (client.hget(call_key(call_id), "state") or b"").decode()
            if state == "bridged" and talk_until is None:
                talk_until = loop.time() + args.talk
            if talk_until is not None and loop.time() >= talk_until:
                ami.send([("Action", "Hangup"), ("Channel", placed)])
                talk_until = float("inf")
        trace = json.loads((await asyncio.wait_for(ended, 30)).get("Trace", "{}"))
        return trace, call_id
    finally:
        await ami.close()


def _phones(spec: str) -> list[tuple[str, str]]:
    """--responders "answer:2" or "ana=decline,ben=never" (others answer)."""
    headers = [("Action", "StandinPhones")]
    if "=" not in spec:
        return [*headers, ("Default", spec.strip())]
    headers.append(("Default", "answer:1"))
    for pair in spec.split(","):
        name, _, behaviour = pair.partition("=")
        headers.append(("Phone", f"{name.strip()}={behaviour.strip()}"))
    return headers


def run(args: argparse.Namespace, settings: Settings) -> int:
    agi = _agi_address(args, settings)
    redis_url = settings.redis_url or read_runtime(settings).get("redis_url") \
        or settings.effective_redis_url
    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.ConnectionError:
        print(f"simulate: no Redis at {redis_url}; is `peoples-response up` running?",
              file=sys.stderr)
        return 2
    runtime = read_runtime(settings)
    if runtime.get("ami") and not args.agi:
        from peoples_response.ami_client import AmiError

        try:
            trace, call_id = asyncio.run(simulate_through_pbx(settings, runtime, args, client))
        except (AmiError, OSError, TimeoutError, redis.RedisError) as exc:
            # `up` stopped (or its PBX went away) mid-call: a reason, not a traceback.
            print(f"simulate: lost the PBX at {runtime['ami']} ({exc or type(exc).__name__}); "
                  "is `peoples-response up` still running?", file=sys.stderr)
            return 1
    else:
        trace = trace_dict(asyncio.run(simulate(settings, agi, args.source, script_from_args(args))))
        call_id = None
    print(json.dumps(describe(trace, settings, client, args.source, call_id)))
    return 0
