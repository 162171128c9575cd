"""The multi-machine topology in containers (docs/compose-ha.md), what the nodes and the
app processes share: both FastAGI servers, Redis behind the sentinels, one PostgreSQL, one
recordings volume; the services' shell scripts, the second FastAGI server and dispatcher as
copies of the first ones, and no secret in the file. The two Compose files are read as
tests/compose_helpers.py says.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from crisisline import config
from tests.compose_helpers import (
    APP_PROCESSES,
    BASE,
    HA,
    NODES,
    RECORDINGS,
    SENTINELS,
    env_of,
    ha,
    interpolate,
    model,
    raw_ha,
    shell_script,
)

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
