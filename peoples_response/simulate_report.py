"""What a simulated call became: the JSON ``peoples-response simulate call`` prints (README
documents its fields), read from the PBX's trace of the call and the call's record and events
in Redis."""

from __future__ import annotations

from typing import Any

import redis

from crisisline.config import Settings
from crisisline.stores.calls import EVENTS, call_key

OPEN_REQUEST = ("requested", "pending", "calling")


def read_record(client: redis.Redis, call_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(call_key(call_id)).items()}


# Following a request through its tries is worth it only when they come soon: with the
# default 10 minutes between tries, simulate reports the first try and stops.
FOLLOW_RETRY_S = 60.0


def following(record: dict[str, str], retry_s: float = 0.0) -> bool:
    """After the caller's own channel ended: is there still something to see (a callback
    being worked, or a caller called back and now with a responder)?"""
    if record.get("cb_state") == "pending" and int(record.get("cb_attempts") or 0) >= 1 \
            and retry_s > FOLLOW_RETRY_S:
        return False  # tried, and the next try is a long way off
    if record.get("cb_state") in OPEN_REQUEST:
        return True
    return record.get("cb_outcome") == "bridged" and record.get("state") == "bridged"


def callback_json(record: dict[str, str]) -> dict[str, Any] | None:
    """The callback part of the JSON (None when no callback was requested)."""
    if not record.get("cb_state"):
        return None
    safe = record.get("cb_safe_here", "")
    outcome = record.get("cb_outcome") or None
    if outcome is None and record.get("cb_state") in ("requested", "pending", "calling"):
        # Still open when simulate stopped following it: what its last try met, when that
        # is worth saying (a machine), or where it stands.
        last = record.get("cb_result", "")
        outcome = last if last in ("machine_hung_up", "message_left") else record["cb_state"]
    tth = record.get("cb_time_to_human_s")
    return {"requested": True, "safe_to_call": None if safe == "" else safe == "1",
            "message_allowed": record.get("cb_message") == "1",
            "attempts": int(record.get("cb_attempts") or 0), "outcome": outcome,
            "last_attempt": record.get("cb_result") or None,
            "time_to_human_s": float(tth) if tth else None}


def _events_for(client: redis.Redis, call_id: str) -> list[dict[str, str]]:
    out = []
    for _, body in client.xrange(EVENTS):
        fields = {k.decode(): v.decode() for k, v in body.items()}
        if fields.get("call_id") == call_id:
            out.append(fields)
    return out


def trace_dict(trace: Any) -> dict[str, Any]:
    """A PBX's call trace (stand-in CallTrace or the real harness's RealTrace) as a dict."""
    return {"channel": trace.channel, "prompts": list(trace.prompts),
            "keys": [list(k) for k in trace.keys], "variables": dict(trace.variables),
            "agi_status": list(trace.agi_status), "room": trace.room,
            "fallback_dialed": trace.fallback_dialed}


def rings(events: list[dict[str, str]], created: float) -> list[dict[str, Any]]:
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
    if record.get("time_to_human_s") or (record.get("accepted_by") and
                                         record.get("cb_state") != "calling"):
        outcome = "bridged"
    elif record.get("cb_state") or state in ("callback", "callback_failed", "cancelled"):
        outcome = "callback"
    elif trace.get("fallback_dialed") or state == "fallback":
        outcome = "fallback"
    elif queued and state in ("waiting", "dispatching"):
        outcome = "waiting"
    else:
        outcome = "abandoned"
    tth = record.get("time_to_human_s")
    rung = rings(events, created)
    return {
        "call_id": call_id,
        "source": record.get("source", source),
        "language": record.get("language") or variables.get("PR_LANGUAGE"),
        "neighborhood": record.get("neighborhood") or None,
        "pbx_node": record.get("pbx_node") or None,  # with `up --nodes N`
        "zip_code": record.get("zip_code") or None,
        "priority": int(record["priority"]) if record.get("priority") else settings.priority_for(source),
        "queued": queued,
        "consented_to_message": record.get("consented_to_message") == "1",
        "prompts": prompts,
        "keys": [answer for _, answer in trace.get("keys", [])],
        "rung": rung,
        "answered_by": record.get("accepted_by") or None,
        "first_ring_s": min((r["offered_at"] for r in rung), default=None),
        "time_to_human_s": float(tth) if tth else None,
        "outcome": outcome,
        "state": state or None,
        "hung_up_at": record.get("end_step") or None,
        "agistatus": trace["agi_status"][0] if trace.get("agi_status") else None,
        "room": trace.get("room"),
        "events": [e["type"] for e in events],
        "callback": callback_json(record),
    }
