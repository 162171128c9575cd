"""``peoples-response up``: the whole system on this machine, in the foreground.

Embedded defaults: a local redis-server when no Redis is configured, SQLite for SQL, and a
PBX: the real Asterisk when scripts/install-asterisk installed it (PR_ASTERISK=auto, the
default; "real" insists on it), with our configuration rendered by asterisk/entrypoint.sh
on loopback and a world Asterisk for simulated callers and phones; the stand-in otherwise
("standin"); none with "external" (an Asterisk of your own). Each part runs as its own
process (as it would in production); a part that dies is restarted, and Ctrl-C stops them
all. What ``up`` started is written to ``var/run/up.json`` so that ``simulate`` finds it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from crisisline.config import Settings

# The Redis `up` starts when none is configured; its own port, so a system Redis is untouched.
UP_REDIS_PORT = int(os.environ.get("PR_UP_REDIS_PORT", "6390"))


@dataclass
class Part:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def runtime_file(settings: Settings) -> Path:
    return settings.var_path / "run" / "up.json"


def read_runtime(settings: Settings) -> dict[str, str]:
    """What a running ``up`` told us (empty when none is running)."""
    try:
        data = json.loads(runtime_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    try:
        os.kill(int(data.get("pid", 0)), 0)
    except (OSError, ValueError):
        return {}
    return data


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, proc: subprocess.Popen, what: str, seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _reachable(host, port):
            return
        if proc.poll() is not None:
            raise SystemExit(f"peoples-response up: {what} exited at start (code {proc.returncode});"
                             f" see {what}'s log under var/log/")
        time.sleep(0.1)
    raise SystemExit(f"peoples-response up: {what} did not listen on {host}:{port} in {seconds:g} s")


def _start_redis(settings: Settings, logs: Path) -> tuple[str, subprocess.Popen | None]:
    if settings.redis_sentinels:
        return settings.effective_redis_url, None  # the processes read PR_REDIS_SENTINELS too
    if settings.redis_url:
        return settings.redis_url, None
    if _reachable("127.0.0.1", UP_REDIS_PORT):
        return f"redis://127.0.0.1:{UP_REDIS_PORT}/0", None
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("peoples-response up: no Redis configured and no redis-server installed;"
                         " install it (apt-get install redis-server) or set PR_REDIS_URL")
    data = settings.var_path / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(UP_REDIS_PORT), "--dir", str(data),
         "--appendonly", "yes", "--save", "", "--logfile", str(logs / "redis.log")],
        stdin=subprocess.DEVNULL)
    _wait_port("127.0.0.1", UP_REDIS_PORT, proc, "redis-server")
    return f"redis://127.0.0.1:{UP_REDIS_PORT}/0", proc


def pbx_mode(settings: Settings) -> str:
    """"real", "standin" or "external" for this machine and these settings."""
    if settings.asterisk != "auto":
        return settings.asterisk
    from localpbx.install import installed

    return "real" if installed() is not None else "standin"


def parts_for(settings: Settings, exe: list[str], mode: str | None = None,
              local: object | None = None, nodes: list[Part] | None = None) -> list[Part]:
    """The processes of the system, with the PBX ``mode`` asks for; ``nodes``: the PBX
    nodes, FastAGI servers and dispatchers of `up --nodes N` (up_nodes.plan) instead."""
    mode = mode or pbx_mode(settings)
    if nodes:
        parts = list(nodes)
    else:
        parts = [Part("agi", [*exe, "agi"])]
        if mode == "standin":
            parts.append(Part("standin", [*exe, "standin"]))
        elif mode == "real" and local is not None:
            parts += [Part("asterisk", local.argv("asterisk")),  # type: ignore[attr-defined]
                      Part("world", local.argv("world"))]  # type: ignore[attr-defined]
        parts.append(Part("dispatcher", [*exe, "dispatcher"]))
    parts += [Part("worker", [*exe, "worker"]), Part("web", [*exe, "web"])]
    # The text line: the public chat app, and the SMS provider's stand-in when none is set.
    parts.append(Part("chat", [*exe, "chat"]))
    if not settings.sms_api_url:
        parts.append(Part("sms-standin", [*exe, "sms-standin"]))
    return parts


def _prepare_sql(settings: Settings) -> None:
    """Migrate, and load the example roster into an empty database so a call is answered."""
    from crisisline import db
    from crisisline.config import ROOT
    from crisisline.roster.commands import ensure_loaded

    db.upgrade(settings)
    loaded = ensure_loaded(settings, ROOT / "examples" / "roster.csv")
    if loaded is not None:
        print(f"roster: loaded the example roster ({loaded.summary()})", flush=True)


def _spawn(part: Part, env: dict[str, str], logs: Path) -> None:
    part.log = logs / f"{part.name}.log"
    with open(part.log, "ab") as out:
        part.proc = subprocess.Popen(part.argv, env={**env, **part.extra_env}, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop_parts(parts: list[Part], redis_proc: subprocess.Popen | None) -> None:
    for part in parts:
        if part.proc is not None and part.proc.poll() is None:
            part.proc.terminate()
    for part in parts:
        if part.proc is not None:
            try:
                part.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                part.proc.kill()
    if redis_proc is not None:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def run(args: argparse.Namespace, settings: Settings) -> int:
    logs = settings.var_path / "log"
    logs.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "peoples_response.cli"]
    # SQL first: rendering reads the reviewers' texts from it.
    _prepare_sql(settings)
    if not getattr(args, "no_render", False):
        from peoples_response import prompts_cmd

        prompts_cmd.render_missing(settings)
    mode = pbx_mode(settings)
    count = int(getattr(args, "nodes", 1) or 1)
    if count > 1 and mode == "external":
        raise SystemExit("peoples-response up: --nodes starts its own PBX nodes; with "
                         "PR_ASTERISK=external, list yours in PR_PBX_NODES instead")
    redis_url, redis_proc = _start_redis(settings, logs)
    env = {**os.environ, "PR_VAR_DIR": str(settings.var_path)}
    if not settings.redis_sentinels:
        env["PR_REDIS_URL"] = redis_url
    if mode in ("standin", "real") and not settings.ami_secret:
        # The PBX and the dispatcher share a secret made for this run only.
        env["PR_AMI_SECRET"] = secrets.token_hex(16)
    from smsstandin.serve import standin_env

    env.update(standin_env(settings))  # the provider stand-in's address, account and token
    local = None
    if mode == "real" and count == 1:
        from localpbx.runtime import NotInstalled, prepare

        try:
            local = prepare(var=settings.var_path, prompts=settings.prompts_path,
                            prompts_name=settings.asterisk_prompts_path,
                            agi_url=f"agi://{settings.agi_host}:{settings.agi_port}",
                            ami_secret=env.get("PR_AMI_SECRET") or settings.ami_secret,
                            ami_port=settings.ami_port, reassure_s=settings.reassure_s)
        except NotInstalled as exc:
            raise SystemExit(f"peoples-response up: {exc}") from None
    node_parts: list[Part] = []
    node_info: dict[str, str] = {}
    if count > 1:
        from localpbx.runtime import NotInstalled
        from peoples_response.up_nodes import plan

        try:
            node_parts, node_info, local = plan(settings, exe, count, Part, mode,
                                                env.get("PR_AMI_SECRET", ""))
        except NotInstalled as exc:
            raise SystemExit(f"peoples-response up: {exc}") from None
    parts = parts_for(settings, exe, mode, local, node_parts)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for part in parts:
        _spawn(part, env, logs)
    try:
        assert parts[0].proc is not None
        _wait_port(settings.agi_host, settings.agi_port, parts[0].proc, "agi")
        if local is not None:
            failed = local.wait_started()  # type: ignore[attr-defined]
            if failed:
                raise SystemExit(f"peoples-response up: the {failed} Asterisk did not "
                                 f"start; see {logs / (failed + '.log')}")
            from localpbx.runtime import set_default_phones

            set_default_phones(local.world)
    except BaseException:
        # Whatever failed at start, nothing we started may outlive us (an Asterisk left
        # running holds its ports and rings phones for nobody).
        _stop_parts(parts, redis_proc)
        raise

    runtime = runtime_file(settings)
    runtime.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "redis_url": redis_url, "pbx": mode,
            "agi": f"{settings.agi_host}:{settings.agi_port}",
            "ami": f"{settings.ami_host}:{settings.ami_port}" if mode == "standin" else "",
            "ami_secret": env.get("PR_AMI_SECRET", "") if mode == "standin" else "",
            "web": f"http://{settings.web_host}:{settings.web_port}/",
            "chat": settings.chat_url,
            "sms_standin": "" if settings.sms_api_url else env["PR_SMS_API_URL"]}
    if local is not None:
        info.update(local.runtime())
    info.update(node_info)
    runtime.write_text(json.dumps(info))
    runtime.chmod(0o600)  # it holds the run's AMI secrets
    pbx = {"real": "Asterisk 22 (real)", "standin": "the Asterisk stand-in",
           "external": "an external Asterisk"}[mode]
    if count > 1:
        kind = "real Asterisk nodes behind Kamailio " + info["proxy"] if mode == "real" \
            else "stand-in nodes"
        pbx = f"{count} {kind} ({node_info['nodes']}), FastAGI {node_info['agi_servers']}"
    print(f"People's Response is up: PBX {pbx}, FastAGI {settings.agi_host}:{settings.agi_port}, "
          f"panel http://{settings.web_host}:{settings.web_port}/, Redis {redis_url}, "
          f"logs in {logs}", flush=True)
    print(f"Text line: chat page {settings.chat_url}/", flush=True)
    print("First panel account: peoples-response user add NAME --role admin", flush=True)
    print("Try: peoples-response simulate call --keys \"2 02121 1\"   (Ctrl-C stops everything)",
          flush=True)
    try:
        while not stopping:
            time.sleep(0.2)
            for part in parts:
                if part.proc is not None and part.proc.poll() is not None and not stopping:
                    code = part.proc.returncode
                    part.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** min(part.restarts, 6))
                    print(f"peoples-response up: {part.name} exited ({code}); restarting in "
                          f"{delay:g} s (see {part.log})", file=sys.stderr, flush=True)
                    part.proc = None
                    part.next_start = time.monotonic() + delay
                if part.proc is None and not stopping and time.monotonic() >= part.next_start:
                    _spawn(part, env, logs)
    finally:
        _stop_parts(parts, redis_proc)
        runtime.unlink(missing_ok=True)
        print("People's Response stopped.", flush=True)
    return 0
