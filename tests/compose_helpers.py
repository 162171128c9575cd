"""Compose's reading of docker-compose.yml and docker-compose.ha.yml, for the tests of the
multi-machine topology (tests/test_compose_ha*.py).

Docker isn't available here, so the two files are read with PyYAML and put together the way
Compose documents it: the files merged (mappings key by key, sequences appended, `command`
replaced), then the services of the active profiles kept (a service without `profiles` is
always kept), then `${VAR}` interpolated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "docker-compose.yml"
HA = ROOT / "docker-compose.ha.yml"
ENTRYPOINT = ROOT / "asterisk" / "entrypoint.sh"
KAMAILIO_PY = ROOT / "localpbx" / "kamailio.py"

SINGLE_BOX = {"redis", "postgres", "agi", "dispatcher", "worker", "web", "asterisk", "prompts"}
SENTINELS = ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")
NODES = ("asterisk-a", "asterisk-b")
HA_SERVICES = {"redis", "redis-replica", *SENTINELS, "postgres", "prompts", "agi", "agi-2",
               "dispatcher", "dispatcher-2", "worker", "web", *NODES, "kamailio"}
APP_PROCESSES = ("agi", "agi-2", "dispatcher", "dispatcher-2", "worker", "web", "prompts")
DISPATCHERS = ("dispatcher", "dispatcher-2")
RECORDINGS = "/var/lib/peoples-response/recordings"
# What a site running the line sets (docker-compose.yml refuses to start without these two).
SITE_ENV = {"PR_AMI_SECRET": "a" * 32, "PR_WEB_SECRET_KEY": "b" * 64}
# The same site with every address of the private network moved (a clash on its host).
MOVED_ENV = {**SITE_ENV, "PR_HA_SUBNET": "10.77.0.0/24", "PR_HA_DYNAMIC_RANGE": "10.77.0.128/25",
             "PR_KAMAILIO_ADDRESS": "10.77.0.20", "PR_NODE_A_ADDRESS": "10.77.0.21",
             "PR_NODE_B_ADDRESS": "10.77.0.22"}


def _normalize(service: dict) -> dict:
    """Short forms as their long ones (Compose merges "the expanded form")."""
    service = dict(service)
    if isinstance(service.get("depends_on"), list):
        service["depends_on"] = {name: {"condition": "service_started"}
                                 for name in service["depends_on"]}
    if isinstance(service.get("environment"), list):
        service["environment"] = dict(item.split("=", 1) for item in service["environment"])
    return service


def _merge(base: Any, over: Any, key: str = "") -> Any:
    """reference/compose-file/merge: a mapping is merged by adding missing entries and merging
    conflicting ones; a sequence by appending; command, entrypoint and healthcheck's test are
    replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for name, value in over.items():
            merged[name] = _merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(over, list) and key not in {"command", "entrypoint", "test"}:
        return base + over
    return over


def model(*files: Path) -> dict:
    merged: dict = {}
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["services"] = {n: _normalize(s) for n, s in data.get("services", {}).items()}
        merged = _merge(merged, data)
    return merged


def enabled(data: dict, *profiles: str) -> dict[str, dict]:
    """profiles: "Services without a profiles attribute are always enabled"; the others only
    when one of theirs is active."""
    return {name: s for name, s in data["services"].items()
            if not s.get("profiles") or set(s["profiles"]) & set(profiles)}


_VAR = re.compile(r"\$(?:\$|\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR:+other}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        have = env.get(name)
        empty = have is None or (op.startswith(":") and have == "")
        if op.endswith("-"):
            return arg if empty else have
        if op.endswith("?"):
            assert not empty, f"Compose would refuse to start: {name} is required ({arg})"
            return have
        if op.endswith("+"):
            return "" if empty else arg
        return have or ""

    return _VAR.sub(one, value)


def ha(env: dict[str, str] | None = None) -> dict[str, dict]:
    """What `docker compose -f docker-compose.yml -f docker-compose.ha.yml --profile ha up`
    starts, as Compose hands it to Docker."""
    return interpolate(enabled(model(BASE, HA), "ha"), SITE_ENV if env is None else env)


def raw_ha() -> dict[str, dict]:
    return enabled(model(BASE, HA), "ha")


def env_of(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


PORT_RE = re.compile(r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+(?:-\d+)?):)?"
                     r"(?P<container>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp))?")


def _span(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def published(service: dict) -> list[tuple[str, str, int, int]]:
    """(host address, protocol, host port, container port) for every published port."""
    out = []
    for port in service.get("ports", []):
        assert isinstance(port, str), f"quote ports ({port!r}): YAML reads 5060:5060 as base 60"
        m = PORT_RE.fullmatch(port)
        assert m, f"bad port {port!r}"
        container = _span(m.group("container"))
        host = _span(m.group("host")) if m.group("host") else container
        assert len(host) == len(container), f"{port}: ranges differ in length"
        out += [(m.group("ip") or "0.0.0.0", m.group("proto") or "tcp", h, c)
                for h, c in zip(host, container, strict=True)]
    return out


def shell_script(service: dict) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-c"], command
    return command[2]
