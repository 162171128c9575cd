"""``peoples-response up --nodes N``: the line as it runs on several machines, on this one.

N Asterisk nodes, two FastAGI servers that every node tries in turn, and two dispatchers each
holding an AMI session to every node (PR_PBX_NODES). With the real Asterisk installed (and
Debian's kamailio), the nodes are real, each on its own loopback address, behind Kamailio,
with the world Asterisk's trunks sending every call to Kamailio (localpbx/cluster.py); with
the stand-in, they are ``standin --node a``, ``b``, …, and ``simulate call --node b`` places
a call on a chosen node (as Kamailio would have sent it there). Redis stays one server unless
PR_REDIS_SENTINELS names a Sentinel group (see docs/scaling.md)."""

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


def plan(settings: Settings, exe: list[str], n: int, part: type, mode: str = "standin",
         ami_secret: str = "") -> tuple[list, dict[str, str], object | None]:
    """The parts (``part`` is up.Part), what simulate needs to know of them, and for real
    nodes their rendered configuration (localpbx.cluster.LocalNodes: `up` waits for it)."""
    names = node_names(n)
    agi_ports = [settings.agi_port, _free_port()]
    agi_urls = ",".join(f"agi://{settings.agi_host}:{p}" for p in agi_ports)
    parts = [part(f"agi-{i + 1}", [*exe, "agi"], extra_env={"PR_AGI_PORT": str(port)})
             for i, port in enumerate(agi_ports)]
    local = None
    if mode == "real":
        from localpbx.cluster import prepare_nodes

        local = prepare_nodes(var=settings.var_path, prompts=settings.prompts_path,
                              prompts_name=settings.asterisk_prompts_path, names=names,
                              agi_urls=agi_urls, ami_secret=ami_secret or settings.ami_secret,
                              reassure_s=settings.reassure_s)
        pbx_nodes = local.pbx_nodes
        parts += [part(which, local.argv(which)) for which in local.part_names()]
    else:
        ami_ports = [settings.ami_port] + [_free_port() for _ in names[1:]]
        pbx_nodes = ",".join(f"{name}=127.0.0.1:{port}" for name, port in zip(names, ami_ports,
                                                                             strict=True))
        parts += [part(f"standin-{name}", [*exe, "standin", "--node", name, "--agi", agi_urls],
                       extra_env={"PR_AMI_PORT": str(port), "PR_AMI_HOST": "127.0.0.1"})
                  for name, port in zip(names, ami_ports, strict=True)]
    parts += [part(f"dispatcher-{i + 1}", [*exe, "dispatcher"],
                   extra_env={"PR_PBX_NODES": pbx_nodes}) for i in range(2)]
    return parts, {"nodes": pbx_nodes, "agi_servers": agi_urls}, local
