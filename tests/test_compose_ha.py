"""The multi-machine topology in containers: docker-compose.ha.yml merged over
docker-compose.yml, run with `--profile ha` (docs/compose-ha.md).

Docker isn't available here, so the two files are read with PyYAML and put together the way
Compose documents it: the files merged (mappings key by key, sequences appended, `command`
replaced), then the services of the active profiles kept (a service without `profiles` is
always kept), then `${VAR}` interpolated. What is checked is what a site would notice if it
were wrong: a service missing or started twice, a port taken twice, a node the dispatchers
or Kamailio don't know, a node that takes calls from the wrong address, a process on plain
Redis instead of the sentinels, a recording one process can't see, a secret in the file.
The settings are read by the project's own readers where there is one (crisisline.config,
localpbx.kamailio's renderer and `kamailio -c`, the FastAGI command line).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crisisline import config

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


# ---- Compose's reading of the files --------------------------------------------------------


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


# ---- what runs ------------------------------------------------------------------------------


def test_plain_compose_is_the_single_box() -> None:
    """docker-compose.yml alone is untouched by the ha topology: `docker compose up`, and even
    `docker compose --profile ha up` without the second file, start the single box."""
    base = model(BASE)
    assert not any(s.get("profiles") for s in base["services"].values())
    assert set(enabled(base)) == SINGLE_BOX
    assert set(enabled(base, "ha")) == SINGLE_BOX


def test_the_ha_profile_runs_the_topology_and_nothing_else() -> None:
    data = model(BASE, HA)
    assert set(enabled(data, "ha")) == HA_SERVICES
    for name in HA_SERVICES:
        assert "ha" in data["services"][name]["profiles"], name
    # The single box's Asterisk never runs with the second file: it holds 5060, Kamailio's.
    assert "asterisk" not in enabled(data, "ha")
    # Without --profile ha the second file starts nothing (never half a line).
    assert enabled(data) == {}


def test_every_dependency_runs() -> None:
    """Compose refuses a project where a service depends on one that is not enabled."""
    services = raw_ha()
    for name, service in services.items():
        for target, how in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}, which doesn't run"
            assert how["condition"] in {"service_started", "service_healthy",
                                        "service_completed_successfully"}
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no health check"


def test_images_build_from_what_exists() -> None:
    for name, service in raw_ha().items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = (ROOT / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            copy = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
            if copy:
                for source in copy.group(1).split():
                    if not source.startswith("--") and source.strip("./"):
                        assert list(context.glob(source)), f"{dockerfile}: COPY {source}: none"


# ---- ports ------------------------------------------------------------------------------------


def test_no_host_port_is_published_twice() -> None:
    """Every service that runs under the profile, the single box's included: two containers
    can't bind one host port (the single box's Asterisk and Kamailio both want 5060/udp)."""
    seen: dict[tuple[str, int], str] = {}
    for name, service in ha().items():
        for _ip, proto, port, _ in published(service):
            assert (proto, port) not in seen, f"{name} and {seen[proto, port]} both publish {port}/{proto}"
            seen[proto, port] = name
    base_asterisk = model(BASE)["services"]["asterisk"]
    assert ("udp", 5060) in {(p, h) for _, p, h, _ in published(base_asterisk)}
    assert seen["udp", 5060] == "kamailio"


def test_only_sip_rtp_and_the_panel_leave_the_host() -> None:
    for name, service in ha().items():
        for ip, _proto, port, container in published(service):
            assert port not in {4573, 5038, 5432, 6379, 26379}, f"{name} publishes {port}"
            assert port == container, f"{name}: {port}->{container} (SDP and Contact carry the port)"
            if name == "web":
                assert ip == "127.0.0.1"
    assert ha()["web"]["ports"] == ["127.0.0.1:8080:8080"]


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


# ---- FastAGI, Redis, SQL, recordings ---------------------------------------------------------


def test_nodes_try_both_fastagi_servers() -> None:
    from peoples_response import cli

    services = ha()
    agi_services = {n for n, s in services.items()
                    if s.get("command") and s["command"][0] == "agi"}
    assert agi_services == {"agi", "agi-2"}
    parser = cli.build_parser()
    for node in NODES:
        servers = env_of(services[node])["PR_AGI_URL"].split(",")
        assert [s.split("//")[1].split(":")[0] for s in servers] == ["agi", "agi-2"]
        for server in servers:
            host, port = server.removeprefix("agi://").split(":")
            args = parser.parse_args(services[host]["command"])
            assert args.host == "0.0.0.0" and args.port == int(port)
        assert set(services[node]["depends_on"]) == agi_services


def test_every_process_finds_redis_through_the_sentinels_and_shares_one_database() -> None:
    services = ha()
    sentinel_services = {n for n, s in raw_ha().items()
                         if "--sentinel" in " ".join(map(str, s.get("command") or []))}
    assert sentinel_services == set(SENTINELS)
    urls = set()
    for name in APP_PROCESSES:
        settings = config.load(env=env_of(services[name]))
        assert settings.redis_sentinels == tuple(f"{s}:26379" for s in SENTINELS), name
        assert settings.redis_service == "peoples-response"
        assert settings.effective_redis_url == (
            "redis+sentinel://" + ",".join(f"{s}:26379" for s in SENTINELS) + "/peoples-response/0")
        urls.add(settings.database_url)
    assert len(urls) == 1
    url = urls.pop()
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    assert services["postgres"]["image"].startswith("postgres:")
    for name in APP_PROCESSES:
        if name != "prompts":  # SQL only, never Redis
            for sentinel in SENTINELS:
                assert services[name]["depends_on"][sentinel]["condition"] == "service_healthy"


def test_the_sentinels_watch_the_primary_with_a_quorum_of_two(tmp_path: Path) -> None:
    """Each sentinel's start script, run with the image's entrypoint replaced by a stand-in
    that prints what it would start: the file it writes names the service the processes ask
    for, the primary's service, quorum 2, and the sentinel's own name."""
    services = ha()
    primary = services["redis"]
    assert "--replicaof" not in shell_script(primary)
    assert "--replicaof redis 6379" in shell_script(services["redis-replica"])
    for name in ("redis", "redis-replica"):
        script = shell_script(services[name])
        # Live state only: nothing on disk, replication included.
        for setting in ("--save ''", "--appendonly no", "--repl-diskless-sync yes",
                        "--repl-diskless-load swapdb", f"--replica-announce-ip {name}"):
            assert setting in script, f"{name}: {setting}"
        # Back later than the sentinels notice a dead primary (down-after-milliseconds).
        assert int(re.search(r"^sleep (\d+)$", script, re.M).group(1)) * 1000 > 3 * 3000
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "docker-entrypoint.sh"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\ncat "$2"\n')
    stand_in.chmod(0o755)
    for name in SENTINELS:
        service = services[name]
        data = tmp_path / name
        data.mkdir()
        script = shell_script(service).replace("/data/", f"{data}/")
        env = {**os.environ, **env_of(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                             timeout=10, check=True).stdout
        assert out.startswith(f"redis-server\n{data}/sentinel.conf\n--sentinel\n"), out
        lines = out.splitlines()
        assert "sentinel monitor peoples-response redis 6379 2" in lines
        assert f"sentinel announce-ip {name}" in lines
        assert "sentinel resolve-hostnames yes" in lines
        assert lines.index("sentinel resolve-hostnames yes") < lines.index(
            "sentinel monitor peoples-response redis 6379 2")
        assert "sentinel down-after-milliseconds peoples-response 3000" in lines
        # A second start keeps what Sentinel rewrote (the primary after a failover).
        (data / "sentinel.conf").write_text("sentinel monitor peoples-response redis-replica 6379 2\n")
        again = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                               timeout=10, check=True).stdout
        assert again.endswith("sentinel monitor peoples-response redis-replica 6379 2\n")
        assert service["healthcheck"]["test"][-3:] == ["-p", "26379", "ping"]
        assert set(service["depends_on"]) == {"redis", "redis-replica"}


def test_shell_scripts_parse_and_escape_dollars_for_compose() -> None:
    """Compose substitutes $NAME itself; a script's own variables are written $$NAME."""
    raw = yaml.safe_load(HA.read_text(encoding="utf-8"))
    for name, service in model(BASE, HA)["services"].items():
        command = service.get("command")
        if not command or command[:2] != ["sh", "-c"]:
            continue
        text = raw["services"].get(name, {}).get("command", command)[2]
        assert not re.search(r"(?<!\$)\$(?!\$)", text.replace("$$", "")), f"{name}: unescaped $"
        check = subprocess.run(["sh", "-n", "-c", interpolate(text, {})], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"


def test_second_fastagi_server_and_dispatcher_are_the_first_ones_again() -> None:
    """agi-2 and dispatcher-2 repeat docker-compose.yml's settings (a second file can't name
    its x-app): they must stay what the merged `agi` and `dispatcher` are."""
    services = raw_ha()
    for first, second in (("agi", "agi-2"), ("dispatcher", "dispatcher-2")):
        a, b = services[first], services[second]
        for key in ("build", "environment", "volumes", "command", "restart", "depends_on"):
            assert a.get(key) == b.get(key), f"{second}.{key} differs from {first}'s"


def test_recordings_are_one_volume_for_nodes_ivr_and_worker() -> None:
    services = ha()
    data = model(BASE, HA)
    for name in (*NODES, "agi", "agi-2", "dispatcher", "dispatcher-2", "worker"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(RECORDINGS) == "recordings", name
    assert {"prompts", "recordings", "sql"} <= set(data["volumes"])


def test_no_secret_is_written_in_the_file() -> None:
    """Secrets come from the environment only: required (`:?`) or empty by default. The one
    default is docker-compose.yml's own PostgreSQL password (private network), unchanged."""
    secret = re.compile(r"SECRET|PASSWORD")
    base = model(BASE)["services"]
    for name, service in raw_ha().items():
        for key, value in env_of(service).items():
            if value == env_of(base.get(name, {})).get(key):
                continue  # docker-compose.yml's own, unchanged (its tests check it)
            if secret.search(key):
                m = re.fullmatch(r"\$\{(\w+)(:\?[^}]*|:-)?\}", value)
                assert m, f"{name}: {key} has a literal value"
                if key == "PR_AMI_SECRET":
                    assert m.group(2).startswith(":?"), f"{name}: PR_AMI_SECRET must be required"
            if key == "PR_DATABASE_URL":
                assert value == env_of(model(BASE)["services"]["agi"])["PR_DATABASE_URL"]
    ha_text = HA.read_text(encoding="utf-8")
    assert "requirepass" not in ha_text and "POSTGRES_PASSWORD" not in ha_text
