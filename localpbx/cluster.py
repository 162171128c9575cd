"""The real Asterisk as ``peoples-response up --nodes N`` runs it on this machine: N nodes
rendered from our configuration, each on its own loopback address, Kamailio in front of
them, and the world Asterisk whose trunks send every call to Kamailio (docs/kamailio.md).
The same topology as tests/test_kamailio.py, as `up`'s parts: restarted if they die,
stopped with it.

Addresses: Kamailio 127.0.0.10, the nodes 127.0.0.11 and up (Linux answers on all of
127/8 without set-up); the world keeps its own (localpbx.world). Every node gets the same
settings but its name (PR_NODE_NAME: its uniqueids and the call records say which node a
caller is on), its address and its ports; the fallback desk registers with every node."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from localpbx import kamailio
from localpbx.install import installed
from localpbx.render import PbxLayout, free_port, render_pbx
from localpbx.runtime import NotInstalled, wait_fully_booted
from localpbx.world import TRUNK_ADDRESSES, WorldLayout, render_world, trunk_env

PROXY_HOST = "127.0.0.10"
FIRST_NODE = 11  # 127.0.0.11, .12, …


@dataclass
class LocalNodes:
    install: Path
    nodes: dict[str, PbxLayout]  # name -> its layout
    world: WorldLayout
    proxy: kamailio.KamailioLayout
    desk_secret: str

    def argv(self, which: str) -> list[str]:
        """``asterisk-<node>``, ``world`` or ``kamailio``."""
        if which == "kamailio":
            exe = kamailio.binary() or "kamailio"
            return [exe, "-DD", "-E", "-f", str(self.proxy.cfg)]
        conf = self.world.conf if which == "world" else self.nodes[which.split("-", 1)[1]].conf
        return [str(self.install / "sbin" / "asterisk"), "-f", "-n", "-g", "-C", str(conf)]

    def part_names(self) -> list[str]:
        return [*(f"asterisk-{name}" for name in self.nodes), "world", "kamailio"]

    @property
    def pbx_nodes(self) -> str:
        """PR_PBX_NODES for the dispatchers: every node's AMI."""
        return ",".join(f"{name}={layout.host}:{layout.ami_port}"
                        for name, layout in self.nodes.items())

    def runtime(self) -> dict[str, str]:
        """What `up` writes to var/run/up.json for `simulate` (the file is 0600)."""
        first = next(iter(self.nodes.values()))
        return {"pbx": "real", "ami": f"{first.host}:{first.ami_port}",
                "ami_secret": first.ami_secret, "observer_secret": first.observer_secret,
                "nodes": self.pbx_nodes, "proxy": self.proxy.sip,
                "world_ami": f"127.0.0.1:{self.world.ami_port}", "world_secret": self.world.secret,
                "pbx_state": str(first.state), "world_state": str(self.world.state)}

    def wait_started(self, timeout: float = 30) -> str | None:
        """Every Asterisk fully booted; the name of the first that didn't, or None."""
        for name, layout in self.nodes.items():
            if not wait_fully_booted(self.install, layout.conf, timeout):
                return f"asterisk-{name}"
        if not wait_fully_booted(self.install, self.world.conf, timeout):
            return "world"
        return None


def prepare_nodes(*, var: Path, prompts: Path, prompts_name: str, names: list[str],
                  agi_urls: str, ami_secret: str, reassure_s: int) -> LocalNodes:
    """Render the nodes', the world's and Kamailio's configuration; nothing starts."""
    install = installed()
    if install is None:
        raise NotInstalled("Asterisk is not installed here: run scripts/install-asterisk, "
                           "or set PR_ASTERISK=standin")
    if kamailio.binary() is None:
        raise NotInstalled("kamailio is not installed here (scripts/setup installs Debian's), "
                           "or set PR_ASTERISK=standin")
    hosts = [f"127.0.0.{FIRST_NODE + i}" for i in range(len(names))]
    sip_ports = [free_port(host, udp_too=True) for host in hosts]
    proxy_port = free_port(PROXY_HOST, udp_too=True)
    desk_secret = secrets.token_hex(12)
    observer_secret = secrets.token_hex(16)
    world = render_world(install=install, state=var / "asterisk" / "world", pbx_host=hosts[0],
                         pbx_sip_port=sip_ports[0], secret=secrets.token_hex(16),
                         desk_secret=desk_secret, sounds=prompts,
                         trunk_target=f"{PROXY_HOST}:{proxy_port}", pbx_match=",".join(hosts),
                         desk_on=[f"{h}:{p}" for h, p in zip(hosts, sip_ports, strict=True)])
    env = {**trunk_env(world), "PR_SIP_PROXY": PROXY_HOST,
           "PR_FALLBACK_DESK_SECRET": desk_secret, "PR_REASSURE_S": str(reassure_s)}
    nodes = {}
    for name, host, port in zip(names, hosts, sip_ports, strict=True):
        nodes[name] = render_pbx(install=install, state=var / "asterisk" / f"node-{name}",
                                 prompts=prompts, prompts_name=prompts_name, agi_url=agi_urls,
                                 ami_secret=ami_secret, observer_secret=observer_secret,
                                 host=host, sip_port=port, ami_port=free_port(host),
                                 extra_env={**env, "PR_NODE_NAME": name})
    proxy = kamailio.render_kamailio(state=var / "kamailio", host=PROXY_HOST, port=proxy_port,
                                     nodes=[layout.sip for layout in nodes.values()],
                                     trunks=TRUNK_ADDRESSES, ping_interval_s=1)
    kamailio.check_config(proxy)
    proxy.ctl_socket.unlink(missing_ok=True)
    return LocalNodes(install, nodes, world, proxy, desk_secret)
