"""``peoples-response``: one command, a subcommand per job.

Imports are inside each command so that ``peoples-response check`` doesn't load Vosk and
``peoples-response agi`` doesn't load SQLAlchemy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from crisisline import config
from crisisline.nodes import valid_node

Command = Callable[[argparse.Namespace, config.Settings], int]


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run, on uvloop where it is installed: the dispatcher's event loop is a
    tenth of its CPU at 500 callers, and uvloop's is cheaper (bench/bench_dispatch.py)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _settings(args: argparse.Namespace) -> config.Settings:
    return config.load(getattr(args, "config", None))


def cmd_agi(args: argparse.Namespace, settings: config.Settings) -> int:
    from agi import serve

    if args.classic:
        return asyncio.run(serve.classic(settings))
    asyncio.run(serve.serve(settings, args.host or settings.agi_host, args.port or settings.agi_port))
    return 0


def cmd_check(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import check

    return check.run(settings, sys.stdout)


# --callback-answer: the phone behaviour of the number the line calls back (standin/phones.py).
CALLBACK_ANSWERS = {"answer": "person:3", "busy": "busy", "no-answer": "never",
                    "machine": "voicemail:3"}


def cmd_simulate_call(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import simulate

    return simulate.run(args, settings)


def cmd_simulate_text(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import simulate_text

    return simulate_text.run(args, settings)


def cmd_chat(args: argparse.Namespace, settings: config.Settings) -> int:
    from textline.serve import serve

    return serve(settings)


def cmd_sms_standin(args: argparse.Namespace, settings: config.Settings) -> int:
    from smsstandin.serve import serve

    return serve(settings)


def cmd_up(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import up

    return up.run(args, settings)


def cmd_prompts_render(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import prompts_cmd

    return prompts_cmd.render(args, settings)


def cmd_prompts_status(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import prompts_cmd

    return prompts_cmd.status(args, settings)


def cmd_prompts_export(args: argparse.Namespace, settings: config.Settings) -> int:
    from peoples_response import prompts_cmd

    return prompts_cmd.export(args, settings)


def cmd_roster_import(args: argparse.Namespace, settings: config.Settings) -> int:
    from crisisline.roster import commands

    result = commands.import_csv(settings, args.file)
    if isinstance(result, list):
        print(f"roster import: {args.file} not imported ({len(result)} problem(s)); "
              "nothing was written:", file=sys.stderr)
        for error in result:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(result.summary())
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0


def cmd_roster_export(args: argparse.Namespace, settings: config.Settings) -> int:
    from crisisline.roster import commands

    commands.export_csv(settings, sys.stdout)
    return 0


def cmd_roster_oncall(args: argparse.Namespace, settings: config.Settings) -> int:
    from crisisline.roster import commands

    try:
        at = commands.parse_at(args.at, settings.zone) if args.at else None
    except ValueError as exc:
        print(f"roster oncall: {exc}", file=sys.stderr)
        return 2
    print(commands.oncall_text(settings, at))
    return 0


def cmd_dispatcher(args: argparse.Namespace, settings: config.Settings) -> int:
    from workers.dispatcher import service
    from workers.dispatcher.recording import RecorderChild

    recorder = RecorderChild(args.config, args.verbose)
    run(service.serve(settings, recorder=recorder))
    return 0


def cmd_recorder(args: argparse.Namespace, settings: config.Settings) -> int:
    from workers.dispatcher import recording

    run(recording.serve(settings))
    return 0


def cmd_standin(args: argparse.Namespace, settings: config.Settings) -> int:
    from standin import serve

    agi = [u.strip() for u in (args.agi or "").split(",") if u.strip()] or None
    if args.node and not valid_node(args.node):
        raise SystemExit(f"standin: --node {args.node!r} is not a node name (letters, digits, _ -)")
    asyncio.run(serve.serve(settings, node=args.node or "", agi_urls=agi))
    return 0


def cmd_worker(args: argparse.Namespace, settings: config.Settings) -> int:
    from workers.worker import run_worker

    return int(run_worker(settings, burst=args.burst) or 0)


def cmd_transcribe(args: argparse.Namespace, settings: config.Settings) -> int:
    from crisisline.speech.cli import transcribe_command

    return transcribe_command(settings, args.file, args.language)


def cmd_web(args: argparse.Namespace, settings: config.Settings) -> int:
    from web.cli import serve

    serve(settings)
    return 0


def cmd_user_add(args: argparse.Namespace, settings: config.Settings) -> int:
    from web.cli import user_add

    return user_add(settings, args.name, args.role, sys.stdin, languages=args.languages)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peoples-response",
                                description="People's Response line: phone system for a "
                                            "community crisis response program")
    p.add_argument("--config", help="TOML settings file (default: $PR_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agi = sub.add_parser("agi", help="serve FastAGI (the IVR)")
    agi.add_argument("--host", help="address to listen on (default $PR_AGI_HOST or 127.0.0.1)")
    agi.add_argument("--port", type=int, help="port (default $PR_AGI_PORT or 4573)")
    agi.add_argument("--classic", action="store_true",
                     help="one call over stdin/stdout, as Asterisk's AGI(script) runs it")
    agi.set_defaults(func=cmd_agi)

    check = sub.add_parser("check", help="validate the configuration; non-zero on any problem")
    check.set_defaults(func=cmd_check)

    up = sub.add_parser("up", help="start the whole system here, in the foreground")
    up.add_argument("--no-render", action="store_true", help="don't render missing prompts")
    up.add_argument("--nodes", type=int, default=1,
                    help="run the line as on several machines: N PBX nodes, two FastAGI "
                         "servers, two dispatchers (stand-in nodes; docs/scaling.md)")
    up.set_defaults(func=cmd_up)

    sim = sub.add_parser("simulate", help="scripted calls through the PBX `up` runs")
    sim_sub = sim.add_subparsers(dest="simulate_command", required=True, metavar="WHAT")
    call = sim_sub.add_parser("call", help="place one scripted call; prints one JSON object")
    call.add_argument("--source", choices=["direct", "911", "988"], default="direct")
    call.add_argument("--node", default="", help="with `up --nodes N`: the node the call "
                                                 "arrives on (a, b, ...; default the first)")
    call.add_argument("--keys", default="",
                      help='one answer per question, space-separated; "-" = press nothing '
                           '(e.g. "2 02121 1": Spanish, ZIP 02121, yes); KEYS@SECONDS presses '
                           "them that many seconds into the next prompt")
    call.add_argument("--caller-id", default="", help="caller ID number (default: none)")
    call.add_argument("--caller-name", default="", help="caller ID name")
    call.add_argument("--hangup-after", type=int, metavar="N",
                      help="hang up after the Nth prompt heard")
    call.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                      help="channel variable a 911/988 transfer carries "
                           "(TRANSFER_LANGUAGE, TRANSFER_ZIP, TRANSFER_NOTE); repeatable")
    call.add_argument("--agi", metavar="HOST:PORT",
                      help="FastAGI server (default: the one settings name)")
    call.add_argument("--stay", type=float, default=None, metavar="SECONDS",
                      help="seconds the caller waits for a person before hanging up (default: "
                           "until one takes the call; without `up`, 0)")
    call.add_argument("--say", metavar="FILE.wav",
                      help="what the caller says at the language menu (a spoken choice)")
    call.add_argument("--message", metavar="FILE.wav",
                      help="what the caller says when they leave a message (after a yes)")
    call.add_argument("--responders", default="",
                      help='responder phones: BEHAVIOUR for all, or "ID=BEHAVIOUR,..." (others '
                           "answer); BEHAVIOUR is answer:SECONDS, decline, never, voicemail, "
                           "hangup-in-whisper")
    call.add_argument("--talk", type=float, default=1.0, metavar="SECONDS",
                      help="once a responder is with the caller, seconds before hanging up")
    call.add_argument("--callback-keys", default="",
                      help='answers at the callback offer and its safety questions, e.g. "1 1 2": '
                           "call me back, this number is safe, no message ('-' = nothing; "
                           '"1 2 6175550199# 1": another number, a message may be left)')
    call.add_argument("--responders-after-callback", default="", metavar="BEHAVIOUR",
                      help="the responder phones' behaviour once a callback is requested "
                           "(with --leave-after-callback: once the caller has left; until "
                           "then --responders applies)")
    call.add_argument("--callback-answer", choices=sorted(CALLBACK_ANSWERS), default="answer",
                      help="what the caller's phone does when the line calls back")
    call.add_argument("--leave-after-callback", action="store_true",
                      help="the caller hangs up once the callback is confirmed")
    call.set_defaults(func=cmd_simulate_call)
    text = sim_sub.add_parser("text", help="one scripted text conversation; prints one JSON object")
    text.add_argument("--channel", choices=["sms", "chat"], default="sms")
    text.add_argument("--messages", default="",
                      help='the texter\'s messages, separated by "|", each sent after the line\'s '
                           'reply (e.g. "2|hola, necesito hablar con alguien": Spanish, then words)')
    text.add_argument("--from", dest="sender", default="",
                      help="the texter's number (SMS; default: a made-up 555-01XX number)")
    text.add_argument("--responders", default="",
                      help='responders\' phones, as for calls: BEHAVIOUR for all, or '
                           '"ID=BEHAVIOUR,..." (others answer)')
    text.add_argument("--talk", type=float, default=1.0, metavar="SECONDS",
                      help="once a responder has it, seconds before the conversation ends")
    text.add_argument("--wait", type=float, metavar="SECONDS",
                      help="longest wait for a responder (default: max_wait_s)")
    text.set_defaults(func=cmd_simulate_text)

    prompts = sub.add_parser("prompts", help="the prompt catalog and its audio")
    prompts_sub = prompts.add_subparsers(dest="prompts_command", required=True, metavar="WHAT")
    render = prompts_sub.add_parser("render", help="render prompts to audio (espeak-ng + sox)")
    render.add_argument("--force", action="store_true", help="render again even if unchanged")
    render.add_argument("--language", action="append", help="only this language (repeatable)")
    render.set_defaults(func=cmd_prompts_render)
    status = prompts_sub.add_parser("status", help="per language: reviewed, draft, missing audio")
    status.set_defaults(func=cmd_prompts_status)
    export = prompts_sub.add_parser("export", help="reviewed texts (catalog YAML) and panel "
                                    "recordings to a folder")
    export.add_argument("out", nargs="?", default="prompts-export",
                        help="folder to write catalog.yaml and recordings/ into "
                             "(default: ./prompts-export)")
    export.set_defaults(func=cmd_prompts_export)
    disp = sub.add_parser("dispatcher", help="ring responders for waiting calls (AMI client)")
    disp.set_defaults(func=cmd_dispatcher)
    rec = sub.add_parser("recorder", help="copy the call events into SQL (the dispatcher starts "
                         "one itself; this runs one on its own)")
    rec.set_defaults(func=cmd_recorder)

    standin = sub.add_parser("standin", help="the Asterisk stand-in PBX (AMI on $PR_AMI_PORT)")
    standin.add_argument("--node", default="", help="its name on a line of several nodes "
                                                     "(as a real node's PR_NODE_NAME)")
    standin.add_argument("--agi", default="", help="FastAGI servers tried in order, "
                                                   "comma-separated (default: PR_AGI_HOST:PORT)")
    standin.set_defaults(func=cmd_standin)

    worker = sub.add_parser("worker", help="RQ worker: transcription and retention jobs")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(func=cmd_worker)

    tr = sub.add_parser("transcribe", help="transcribe one WAV file; prints one JSON object")
    tr.add_argument("file")
    tr.add_argument("--language", required=True, help="language code, e.g. ko")
    tr.set_defaults(func=cmd_transcribe)

    web = sub.add_parser("web", help="the supervisor and oversight panel")
    web.set_defaults(func=cmd_web)

    chat = sub.add_parser("chat", help="the public text line: chat page, SMS webhook, "
                                       "responders' one-time links ($PR_CHAT_PORT, 8090)")
    chat.set_defaults(func=cmd_chat)
    sms = sub.add_parser("sms-standin", help="the SMS provider stand-in (its REST API at "
                                             "$PR_SMS_API_URL)")
    sms.set_defaults(func=cmd_sms_standin)

    user = sub.add_parser("user", help="panel accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="WHAT")
    add = user_sub.add_parser("add", help="create an account; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", required=True,
                     choices=["supervisor", "admin", "oversight", "reviewer"])
    add.add_argument("--languages", metavar="CODES",
                     help="reviewers only: the languages they review, e.g. ht,kea")
    add.set_defaults(func=cmd_user_add)

    roster = sub.add_parser("roster", help="teams, responders and on-call schedules")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True, metavar="WHAT")
    imp = roster_sub.add_parser("import", help="replace the roster with a CSV file "
                                "(docs/roster-csv.md); nothing is written unless all of it is valid")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_roster_import)
    exp = roster_sub.add_parser("export", help="the roster as CSV on standard output")
    exp.set_defaults(func=cmd_roster_export)
    oncall = roster_sub.add_parser("oncall", help="who is on call, per team")
    oncall.add_argument("--at", help='a time in the program\'s zone, e.g. "2026-12-24 22:00" '
                        "(default: now)")
    oncall.set_defaults(func=cmd_roster_oncall)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else
                        getattr(logging, os.environ.get("PR_LOG_LEVEL", "INFO").upper(), 20),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Migrations run on every SQL command; their progress is noise unless asked for.
    logging.getLogger("alembic").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        settings = _settings(args)
    except config.ConfigError as exc:
        print(f"peoples-response: configuration problem: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `roster export | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
