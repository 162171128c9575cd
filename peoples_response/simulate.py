"""``peoples-response simulate call``: one scripted call, one JSON object on stdout.

Against what `up` runs: the real Asterisk (a SIP caller from the world Asterisk pressing
RFC 4733 DTMF, phones the PBX really rings) or the stand-in (its own scripted caller and
phones); without `up`, an in-process stand-in and the caller alone (--agi). What the caller
heard comes from the PBX (AMI), what was decided from the call's record in Redis, found by
the id the IVR gave it (PR_CALL_ID on the caller's channel).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import redis

from crisisline.config import ROOT, Settings
from crisisline.nodes import split
from crisisline.stores import sync_redis
from crisisline.stores.calls import call_key
from peoples_response.simulate_report import describe, following, read_record, trace_dict
from peoples_response.up import read_runtime
from standin.caller import CallerScript, parse_keys
from standin.pbx import StandinPBX

CORE_SOUNDS = ["/usr/share/asterisk/sounds"]
EXTENSIONS = {"direct": "6175550100", "911": "911000", "988": "988000"}
DEFAULT_PHONES = "answer:2"


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


def _audio(path: str | None, what: str, settings: Settings) -> Path | None:
    """A WAV the caller plays into the call, as 8 kHz mono 16-bit (what Asterisk plays)."""
    if not path:
        return None
    src = Path(path)
    if not src.is_file():
        raise SystemExit(f"simulate: {what} {path}: no such file")
    import subprocess

    out = settings.var_path / "run" / "simulate" / f"{src.stem}-8k.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-b", "16",
                           "-e", "signed-integer", str(out)], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        raise SystemExit(f"simulate: {what} {path} is not audio sox can read: "
                         f"{done.stderr.strip()[:200]}")
    return out.resolve()


def build_pbx(settings: Settings, agi: str) -> StandinPBX:
    return StandinPBX(ROOT / "dialplan" / "extensions.conf",
                      globals_overrides={"PR_AGI": f"agi://{agi}"},
                      sounds_dirs=CORE_SOUNDS, prompts_dir=settings.prompts_path,
                      prompts_prefix=settings.asterisk_prompts_path)


def script_from_args(args: argparse.Namespace, settings: Settings) -> CallerScript:
    message = _audio(getattr(args, "message", None), "--message", settings)
    return CallerScript(keys=parse_keys(args.keys), hangup_after=args.hangup_after,
                        caller_id_num=args.caller_id or None,
                        caller_id_name=args.caller_name or None,
                        variables=_parse_vars(args.var), stay_s=args.stay,
                        say=_audio(getattr(args, "say", None), "--say", settings),
                        speech=message, record_end="silence" if message else "dtmf",
                        callback_keys=parse_keys(getattr(args, "callback_keys", "") or ""),
                        leave_after="callback_confirmed"
                        if getattr(args, "leave_after_callback", False) else None)


def callback_numbers(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The numbers the line may call back for this caller: their caller ID and any number
    they type at the callback questions (their phones answer as --callback-answer says)."""
    from crisisline import destinations

    candidates = [args.caller_id or ""]
    candidates += [t.rstrip("#") for t in (getattr(args, "callback_keys", "") or "").split()
                   if len(t.rstrip("#")) >= 7]
    out = []
    for number in candidates:
        e164 = destinations.to_e164(number, settings.region) if number else None
        if e164 and e164 not in out:
            out.append(e164)
    return out


async def simulate(settings: Settings, agi: str, source: str, script: CallerScript) -> Any:
    """Without `up`: an in-process stand-in, the caller alone (no dispatcher)."""
    pbx = build_pbx(settings, agi)
    script.stay_s = script.stay_s or 0.0
    return await pbx.place_call(f"from-{source}", EXTENSIONS[source], script)


class Talk:
    """When to hang up: once a responder is with the caller and ``talk`` seconds passed,
    or after ``stay`` seconds of waiting, or when the caller's script says so."""

    def __init__(self, client: redis.Redis, talk: float, stay: float | None) -> None:
        self.client, self.talk, self.stay = client, talk, stay
        self.talk_until: float | None = None
        self.waiting_since: float | None = None

    def due(self, call_id: str, now: float) -> bool:
        state = (self.client.hget(call_key(call_id), "state") or b"").decode()
        connected = self.client.hget(call_key(call_id), "connected_at")
        if connected and self.talk_until is None:
            self.talk_until = now + self.talk
        if self.talk_until is not None:
            return now >= self.talk_until
        if state in ("waiting", "dispatching") and self.stay is not None:
            self.waiting_since = self.waiting_since or now
            return now - self.waiting_since >= self.stay
        return False


def switch_due(record: dict[str, str], args: argparse.Namespace) -> bool:
    """Whether --responders-after-callback applies now: once the callback is requested, or
    with --leave-after-callback once the caller has left (else a phone answering while they
    confirm takes the call there and then, and no callback is ever made)."""
    state = record.get("cb_state") or ""
    if getattr(args, "leave_after_callback", False):
        return state not in ("", "requested")
    return bool(state)


def follow_limit(settings: Settings) -> float:
    """How long simulate follows a callback request after its caller hung up."""
    per_attempt = settings.callback_retry_s + settings.callback_ring_s + settings.wave_timeout_s * 4
    return settings.callback_attempts * per_attempt + 120


def node_address(runtime: dict[str, str], node: str) -> str:
    """The AMI address of the stand-in to place the call on: ``node`` of `up --nodes N`
    (as Kamailio would have sent the call there), else the first."""
    if not node:
        return runtime["ami"]
    nodes = dict(pair.split("=", 1) for pair in runtime.get("nodes", "").split(",") if "=" in pair)
    if node not in nodes:
        raise SystemExit(f"simulate: no node {node!r} (up runs: {', '.join(nodes) or 'one PBX'})")
    return nodes[node]


async def simulate_standin(settings: Settings, runtime: dict[str, str], args: argparse.Namespace,
                           client: redis.Redis) -> tuple[dict[str, Any], str | None]:
    """The stand-in PBX that `up` runs, with the dispatcher ringing responders."""
    from peoples_response.ami_client import AmiClient
    from peoples_response.cli import CALLBACK_ANSWERS

    host, _, port = node_address(runtime, getattr(args, "node", "") or "").rpartition(":")
    ami = await AmiClient.connect(host, int(port), settings.ami_user,
                                  settings.ami_secret or runtime.get("ami_secret", ""))
    script = script_from_args(args, settings)
    called_back = {n: CALLBACK_ANSWERS[args.callback_answer] for n in callback_numbers(args, settings)}
    phones_set = bool(args.responders or called_back)
    ended: asyncio.Future | None = None
    try:
        if phones_set:
            reply = await ami.request(_phones(args.responders, called_back))
            if reply.get("Response") != "Success":
                raise SystemExit(f"simulate: --responders: {reply.get('Message')}")
        headers = [("Action", "StandinPlaceCall"), ("Source", args.source), ("Keys", args.keys),
                   ("CallerID", args.caller_id or ""), ("Stay", ""),
                   ("CallbackKeys", " ".join(script.callback_keys)),
                   ("LeaveAfter", script.leave_after or "")]
        if args.hangup_after:
            headers.append(("HangupAfter", str(args.hangup_after)))
        if script.say:
            headers.append(("Say", str(script.say)))
        if script.speech:
            headers.append(("Message", str(script.speech)))
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
        talk = Talk(client, args.talk, args.stay)
        switched = following_since = None
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            if placed is None:
                reply = next((m for m in messages if m.get("ActionID") == action_id
                              and "Response" in m), None)
                if reply is not None and reply.get("Response") != "Success":
                    raise SystemExit(f"simulate: the stand-in refused the call: {reply.get('Message')}")
                placed = reply.get("Channel") if reply else None
            if call_id is None and placed:
                # The id the IVR gave this call, as it set it on the caller's channel.
                call_id = next((m.get("Value") for m in messages if m.get("Event") == "VarSet"
                                and m.get("Channel") == placed
                                and m.get("Variable") == "PR_CALL_ID" and m.get("Value")), None)
            record = read_record(client, call_id) if call_id else {}
            if args.responders_after_callback and not switched and switch_due(record, args):
                switched = True  # from now on the phones do this
                ami.send(_phones(args.responders_after_callback, called_back))
            if call_id and talk.due(call_id, loop.time()):
                # The caller's channel now: the one that called in, or the one called back.
                channel = split(record.get("channel") or "")[1]  # "<node>|<channel>" on several
                ami.send([("Action", "Hangup"), ("Channel", channel or placed or "")])
                talk.talk_until = talk.stay = float("inf")
            if ended.done():
                if not call_id or not following(record, settings.callback_retry_s):
                    break
                if following_since is None:  # the caller left with a request: follow it
                    following_since = loop.time()
                    deadline = loop.time() + follow_limit(settings)
        trace = json.loads((await asyncio.wait_for(ended, 30)).get("Trace", "{}"))
        return trace, call_id
    finally:
        if ended is not None and not ended.done():
            ended.cancel()  # one reader at a time on the AMI connection
        if phones_set or args.responders_after_callback:  # for this call only
            await ami.request([("Action", "StandinPhones"), ("Default", DEFAULT_PHONES)])
        await ami.close()


async def simulate_real(settings: Settings, runtime: dict[str, str], args: argparse.Namespace,
                        client: redis.Redis) -> tuple[dict[str, Any], str | None]:
    """The real Asterisk that `up` runs: a SIP caller from the world Asterisk."""
    from localpbx.harness import RealLine
    from localpbx.runtime import DEFAULT_PHONE, DESK_PHONE
    from peoples_response.cli import CALLBACK_ANSWERS

    if getattr(args, "node", ""):
        # Behind Kamailio, the proxy chooses (the record's pbx_node says which it chose).
        raise SystemExit("simulate: --node places a call on a stand-in node; the real "
                         "nodes of `up --nodes N` get their calls from Kamailio")
    script = script_from_args(args, settings)
    script.stay_s = None
    line = await RealLine.attach(runtime, settings.prompts_path, settings.asterisk_prompts_path)
    called_back = {n: CALLBACK_ANSWERS[args.callback_answer] for n in callback_numbers(args, settings)}
    phones_set = bool(args.responders or called_back)

    async def set_phones(spec: str) -> None:
        default, entries = _responder_table(spec, settings) if spec else (DEFAULT_PHONE, {})
        await line.set_phones(default, {**entries, **called_back, "fallback-desk": DESK_PHONE})

    try:
        if phones_set:
            await set_phones(args.responders)
        call = await line.call(script, args.source)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.max_wait_s + 60
        talk = Talk(client, args.talk, args.stay)
        switched = following_since = None
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            call_id = call.trace.variables.get("PR_CALL_ID")
            record = read_record(client, call_id) if call_id else {}
            if args.responders_after_callback and not switched and switch_due(record, args):
                switched = True
                await set_phones(args.responders_after_callback)
            if call_id and talk.due(call_id, loop.time()):
                why = "after talking" if talk.talk_until else "after --stay"
                if call.finished.is_set() and record.get("channel"):
                    # The caller called back: their new channel is the one to end.
                    await line.hangup_channel(record["channel"])
                else:
                    await call.hangup(why)
                talk.talk_until = talk.stay = float("inf")
            if call.finished.is_set():
                if not call_id or not following(record, settings.callback_retry_s):
                    break
                if following_since is None:
                    following_since = loop.time()
                    deadline = loop.time() + follow_limit(settings)
        if not call.finished.is_set():
            await call.hangup("simulate gave up waiting")
        await call.wait_finished(15)
        await asyncio.sleep(1.0)  # the h extension's report
        return trace_dict(call.trace), call.trace.variables.get("PR_CALL_ID")
    finally:
        if phones_set or args.responders_after_callback:
            await line.set_phones(DEFAULT_PHONE, {"fallback-desk": DESK_PHONE})
        await line.close()


def _responder_table(spec: str, settings: Settings) -> tuple[str, dict[str, str]]:
    """--responders for the world's phones: by number (it only knows what is dialled)."""
    from standin.phones import Behaviour

    def checked(text: str) -> str:
        try:
            return str(Behaviour.parse(text))
        except ValueError as exc:
            raise SystemExit(f"simulate: --responders: {exc}") from None

    if "=" not in spec:
        return checked(spec), {}
    from crisisline.roster.commands import snapshot

    phones = {r.id: r.phone for r in snapshot(settings).responders}
    entries = {}
    for pair in spec.split(","):
        name, _, behaviour = pair.partition("=")
        name = name.strip()
        number = phones.get(name, name).removeprefix("PJSIP/")
        entries[number] = checked(behaviour.strip())
    return DEFAULT_PHONES, entries


def _phones(spec: str, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """--responders "answer:2" or "ana=decline,ben=never" (others answer); ``extra``: more
    phones by number (the caller's own, when the line calls them back)."""
    headers = [("Action", "StandinPhones")]
    extra_headers = [("Phone", f"{number}={behaviour}") for number, behaviour in (extra or {}).items()]
    if not spec.strip():
        return [*headers, ("Default", DEFAULT_PHONES), *extra_headers]
    if "=" not in spec:
        return [*headers, ("Default", spec.strip()), *extra_headers]
    headers.append(("Default", "answer:1"))
    for pair in spec.split(","):
        name, _, behaviour = pair.partition("=")
        headers.append(("Phone", f"{name.strip()}={behaviour.strip()}"))
    return [*headers, *extra_headers]


def run(args: argparse.Namespace, settings: Settings) -> int:
    agi = _agi_address(args, settings)
    redis_url = (settings.redis_sentinels and settings.effective_redis_url) \
        or settings.redis_url or read_runtime(settings).get("redis_url") \
        or settings.effective_redis_url
    client = sync_redis(redis_url)
    try:
        client.ping()
    except redis.ConnectionError:
        print(f"simulate: no Redis at {redis_url}; is `peoples-response up` running?",
              file=sys.stderr)
        return 2
    runtime = read_runtime(settings)
    if runtime and not args.agi and (runtime.get("ami") or runtime.get("pbx") == "real"):
        from localpbx.ami import AmiError as PbxAmiError
        from peoples_response.ami_client import AmiError

        how = simulate_real if runtime.get("pbx") == "real" else simulate_standin
        try:
            trace, call_id = asyncio.run(how(settings, runtime, args, client))
        except (AmiError, PbxAmiError, OSError, TimeoutError, redis.RedisError) as exc:
            # `up` stopped (or its PBX went away) mid-call: a reason, not a traceback.
            print(f"simulate: lost the PBX at {runtime['ami']} ({exc or type(exc).__name__}); "
                  "is `peoples-response up` still running?", file=sys.stderr)
            return 1
    else:
        script = script_from_args(args, settings)
        trace = trace_dict(asyncio.run(simulate(settings, agi, args.source, script)))
        call_id = None
    print(json.dumps(describe(trace, settings, client, args.source, call_id)))
    return 0
