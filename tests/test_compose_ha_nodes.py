"""The multi-machine topology in containers (docs/compose-ha.md), its Asterisk nodes,
dispatchers and Kamailio: the dispatchers know every node by its name, the nodes take calls
from Kamailio only, Kamailio sends calls to the nodes' SIP ports and reads every setting it
is given, and each node is the single box's Asterisk behind the proxy. The two Compose files
are read as tests/compose_helpers.py says.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crisisline import config
from tests.compose_helpers import (
    BASE,
    DISPATCHERS,
    ENTRYPOINT,
    HA,
    KAMAILIO_PY,
    MOVED_ENV,
    NODES,
    ROOT,
    SITE_ENV,
    env_of,
    ha,
    interpolate,
    model,
    published,
    raw_ha,
)

# ---- Asterisk nodes, dispatchers and Kamailio ------------------------------------------------


def test_dispatchers_know_every_node_by_its_name() -> None:
    services = ha()
    names = {env_of(services[n])["PR_NODE_NAME"]: n for n in NODES}
    assert len(names) == len(NODES)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name)  # the entrypoint's check
    for dispatcher in DISPATCHERS:
        settings = config.load(env=env_of(services[dispatcher]))
        assert set(settings.pbx_nodes) == set(names), dispatcher
        for name, address in settings.pbx_nodes.items():
            assert address == f"{names[name]}:5038", f"{dispatcher}: node {name} is {address}"
    # The panel, the worker and the FastAGI servers don't ring anyone: no AMI of their own.
    for name in ("agi", "agi-2", "worker", "web"):
        assert "PR_PBX_NODES" not in env_of(services[name])


@pytest.mark.parametrize("site_env", [SITE_ENV, MOVED_ENV], ids=["default", "moved"])
def test_nodes_take_calls_from_kamailio_only(site_env: dict[str, str]) -> None:
    services = ha(site_env)
    network = model(BASE, HA)["networks"]["default"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(interpolate(network["subnet"], site_env))
    dynamic = ipaddress.ip_network(interpolate(network["ip_range"], site_env))
    assert dynamic.subnet_of(subnet)
    kamailio = services["kamailio"]
    proxy = kamailio["networks"]["default"]["ipv4_address"]
    fixed = [proxy] + [services[n]["networks"]["default"]["ipv4_address"] for n in NODES]
    assert len(set(fixed)) == len(fixed)
    for address in map(ipaddress.ip_address, fixed):
        # Given to no other container: outside the range Docker hands out.
        assert address in subnet and address not in dynamic and address != subnet[1]
    k_env = env_of(kamailio)
    assert k_env["PR_KAMAILIO_LISTEN"] == f"{proxy}:5060"
    for node in NODES:
        assert env_of(services[node])["PR_SIP_PROXY"] == proxy, node
    if site_env is SITE_ENV:
        # The nodes treat it as local (PR_LOCAL_NET's default), and the AMI lets dispatchers in.
        assert subnet.subnet_of(ipaddress.ip_network("172.16.0.0/12"))
        manager = (ROOT / "asterisk" / "manager.conf").read_text(encoding="utf-8")
        assert "permit = 172.16.0.0/255.240.0.0" in manager


def test_kamailio_sends_calls_to_the_nodes_sip_ports() -> None:
    services = ha()
    k_env = env_of(services["kamailio"])
    listed = k_env["PR_SIP_NODES"].split(",")
    assert [entry.rpartition(":")[0] for entry in listed] == list(NODES)
    for entry in listed:
        node, _, port = entry.rpartition(":")
        n_env = env_of(services[node])
        assert n_env["PR_SIP_BIND"] == f"0.0.0.0:{port}"
        # Published too: phones register to every node, and the carrier's requests for calls a
        # node placed come straight back to it (docs/kamailio.md).
        ports = {(proto, h) for _, proto, h, _ in published(services[node])}
        assert {("udp", int(port)), ("tcp", int(port))} <= ports
        assert ("udp", 5060) not in ports
    assert published(services["kamailio"]) == [("0.0.0.0", "udp", 5060, 5060)]
    assert services["kamailio"]["command"] == ["python3", "-m", "localpbx.kamailio"]


def test_kamailio_reads_every_setting_it_is_given(tmp_path: Path) -> None:
    """Each name is one localpbx/kamailio.py reads, the trunks are the nodes' own settings, and
    the renderer (with `kamailio -c`) takes the values as the container would."""
    services = ha()
    k_env = env_of(services["kamailio"])
    source = KAMAILIO_PY.read_text(encoding="utf-8")
    for name in k_env:
        trunk = re.fullmatch(r"PR_(DIRECT|911|988)_TRUNK_(MATCH|HOST)", name)
        assert name in source or trunk, f"kamailio: {name} is not read by localpbx/kamailio.py"
    raw_k, raw_node = env_of(raw_ha()["kamailio"]), env_of(raw_ha()["asterisk-a"])
    for name in raw_k:
        if "TRUNK" in name:
            assert raw_k[name] == raw_node[name], name
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PR_")}, **k_env,
           "PR_KAMAILIO_STATE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "localpbx.kamailio", "--render-only"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    site = (tmp_path / "pr-site.cfg").read_text()
    assert f"#!define PR_LISTEN udp:{k_env['PR_KAMAILIO_LISTEN']}\n" in site
    nodes = (tmp_path / "dispatcher.list").read_text()
    for entry in k_env["PR_SIP_NODES"].split(","):
        assert f"1 sip:{entry} 0 0" in nodes


def test_kamailio_image_holds_the_renderer_and_its_template() -> None:
    from localpbx import kamailio

    dockerfile = (ROOT / "kamailio" / "Dockerfile").read_text(encoding="utf-8")
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    # The renderer looks for the template beside its package.
    template = kamailio.TEMPLATE.relative_to(ROOT)
    assert f"COPY {template} {template}" in dockerfile
    assert "COPY localpbx/ localpbx/" in dockerfile
    assert workdir.startswith("/")
    assert re.search(r"apt-get install [^\n]*\bkamailio python3\b", dockerfile)
    assert re.search(r"^USER kamailio$", dockerfile, re.M)
    state = re.search(r"PR_KAMAILIO_STATE=(\S+)", dockerfile).group(1)
    assert f"chown kamailio:kamailio {state}" in dockerfile


def test_nodes_are_the_single_box_asterisk_behind_the_proxy() -> None:
    """The same image, volumes and settings as docker-compose.yml's `asterisk`, plus what makes
    one node of several; every setting is one the entrypoint reads."""
    base = model(BASE)["services"]["asterisk"]
    base_env = env_of(base)
    entrypoint = ENTRYPOINT.read_text(encoding="utf-8")
    services = raw_ha()
    ranges = []
    for node in NODES:
        service = services[node]
        n_env = env_of(service)
        assert service["build"] == base["build"]
        assert service["volumes"] == base["volumes"]
        assert set(base_env) <= set(n_env), f"{node} lacks {set(base_env) - set(n_env)}"
        for name, value in base_env.items():
            if name != "PR_AGI_URL":
                assert n_env[name] == value, f"{node}: {name}"
        assert set(n_env) - set(base_env) == {"PR_NODE_NAME", "PR_SIP_PROXY", "PR_SIP_BIND",
                                              "PR_RTP_START", "PR_RTP_END"}
        for name in n_env:
            trunk = re.fullmatch(r"PR_(DIRECT|911|988)_TRUNK_\w+", name)
            assert name in entrypoint or trunk, f"{node}: {name} is not read by entrypoint.sh"
        assert n_env["PR_AMI_BINDADDR"] == "auto"
        start, end = int(n_env["PR_RTP_START"]), int(n_env["PR_RTP_END"])
        rtp = range(start, end + 1)
        assert {(p, h) for _, p, h, _ in published(service) if h in rtp} == {("udp", h) for h in rtp}
        ranges.append(rtp)
    assert not set(ranges[0]) & set(ranges[1])

