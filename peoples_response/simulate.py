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


def describe(trace: Any, settings: Settings, client: redis.Redis, source: str) -> dict[str, Any]:
    """The JSON a user sees; documented in README."""
    variables = trace.variables
    call_id = variables.get("PR_CALL_ID") or None
    record = {k.decode(): v.decode() for k, v in client.hgetall(call_key(call_id)).items()} \
        if call_id else {}
    prefix = settings.asterisk_prompts_path.rstrip("/") + "/"
    prompts = [p[len(prefix):] if p.startswith(prefix) else p for p in trace.prompts]
    queued = variables.get("PR_QUEUED") == "1" and trace.room is not None
    if trace.fallback_dialed:
        outcome = "fallback"
    elif queued:
        outcome = "waiting"
    else:
        outcome = "abandoned"
    events = _events_for(client, call_id) if call_id else []
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
        "keys": [answer for _, answer in trace.keys],
        "outcome": outcome,
        "state": record.get("state"),
        "hung_up_at": record.get("end_step") or None,
        "agistatus": trace.agi_status[0] if trace.agi_status else None,
        "room": trace.room,
        "events": [e["type"] for e in events],
    }


async def simulate(settings: Settings, agi: str, source: str, script: CallerScript) -> Any:
    pbx = build_pbx(settings, agi)
    return await pbx.place_call(f"from-{source}", EXTENSIONS[source], script)


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
    trace = asyncio.run(simulate(settings, agi, args.source, script_from_args(args)))
    print(json.dumps(describe(trace, settings, client, args.source)))
    return 0
