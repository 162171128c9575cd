"""``peoples-response up --nodes N``: the line as it runs on several machines, on this one.

N stand-in Asterisk nodes (``standin --node a``, ``b``, …, each its own AMI port), two
FastAGI servers that every node tries in turn, and two dispatchers each holding an AMI
session to every node (PR_PBX_NODES). ``simulate call --node b`` places a call on a chosen
node (as Kamailio would have sent it there). Redis stays one server unless PR_REDIS_SENTINELS
names a Sentinel group (see docs/scaling.md). The real Asterisk behind Kamailio is the same
topology (tests/test_kamailio.py); `up` does not start it yet."""

from __future__ import annotations

import socket
import string

from crisisline.config import Settings

MAX_NODES = 8


def node_names(n: int) -> list[str]:
    if not 2 <= n <= MAX_NODES:
        raise SystemExit(f"peoples-response up: --nodes takes 2 to {MAX_NODES} (got {n})")
    return list(string.ascii_lowercase[:n])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan(settings: Settings, exe: list[str], n: int, part: type) -> tuple[list, dict[str, str]]:
    """The parts (``part`` is up.Part) and what simulate needs to know of them."""
    names = node_names(n)
    agi_ports = [settings.agi_port, _free_port()]
    ami_ports = [settings.ami_port] + [_free_port() for _ in names[1:]]
    agi_urls = ",".join(f"agi://{settings.agi_host}:{p}" for p in agi_ports)
    pbx_nodes = ",".join(f"{name}=127.0.0.1:{port}" for name, port in zip(names, ami_ports,
                                                                         strict=True))
    parts = [part(f"agi-{i + 1}", [*exe, "agi"], extra_env={"PR_AGI_PORT": str(port)})
             for i, port in enumerate(agi_ports)]
    parts += [part(f"standin-{name}", [*exe, "standin", "--node", name, "--agi", agi_urls],
                   extra_env={"PR_AMI_PORT": str(port), "PR_AMI_HOST": "127.0.0.1"})
              for name, port in zip(names, ami_ports, strict=True)]
    parts += [part(f"dispatcher-{i + 1}", [*exe, "dispatcher"],
                   extra_env={"PR_PBX_NODES": pbx_nodes}) for i in range(2)]
    return parts, {"nodes": pbx_nodes, "agi_servers": agi_urls}
