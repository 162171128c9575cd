"""The multi-machine topology in containers: docker-compose.ha.yml merged over
docker-compose.yml, run with `--profile ha` (docs/compose-ha.md). Here: which services run
(with and without the profile and the second file), that they build, and the ports they
publish on the host.

Docker isn't available here, so the two files are read with PyYAML and put together the way
Compose documents it (tests/compose_helpers.py): the files merged (mappings key by key,
sequences appended, `command` replaced), then the services of the active profiles kept (a
service without `profiles` is always kept), then `${VAR}` interpolated. What is checked is
what a site would notice if it were wrong: a service missing or started twice, a port taken
twice, a node the dispatchers or Kamailio don't know, a node that takes calls from the wrong
address, a process on plain Redis instead of the sentinels, a recording one process can't
see, a secret in the file (the last ones in tests/test_compose_ha_nodes.py and
tests/test_compose_ha_backends.py). The settings are read by the project's own readers where
there is one (crisisline.config, localpbx.kamailio's renderer and `kamailio -c`, the FastAGI
command line).
"""

from __future__ import annotations

import re

from tests.compose_helpers import (
    BASE,
    HA,
    HA_SERVICES,
    ROOT,
    SINGLE_BOX,
    enabled,
    ha,
    model,
    published,
    raw_ha,
)

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

