"""The real Asterisk in a private network namespace (localpbx.netns) when the tests run as
root: nothing it listens on is reachable from the machine's own loopback, our FastAGI
server and dispatcher reach it over the veth pair, and the namespace goes when the line
stops, or, if the test process was killed, when the next one starts."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import time

import pytest

from crisisline.roster.model import Responder, RosterSnapshot, Shift, Team
from localpbx import netns
from tests.real_helpers import REAL, real_system

ROOT_HERE = netns.available()


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _roster() -> RosterSnapshot:
    team = (Team("dot", "Dorchester team", frozenset({"Dorchester"})),)
    people = (Responder("ana", "Ana", "+16175550101", frozenset({"en", "es"}), "dot"),)
    return RosterSnapshot(team, people, tuple(Shift("ana", d, time(0), time(0))
                                              for d in range(7)))


def _refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


@pytest.mark.skipif(not ROOT_HERE, reason="network namespaces need root (CI runs as root); "
                    "without it the real Asterisk runs on free loopback ports")
async def test_the_real_pbx_runs_in_a_namespace_of_its_own(settings, tmp_path) -> None:
    if not REAL:
        pytest.fail("Asterisk is not installed: scripts/install-asterisk (scripts/test runs it)")
    async with real_system(settings, _roster(), tmp_path) as system:
        line = system.line
        assert line.network is not None and line.pbx_proc is not None
        name = line.network.name
        assert name in _namespaces()
        ours = os.readlink("/proc/self/ns/net")
        assert os.readlink(f"/proc/{line.pbx_proc.pid}/ns/net") != ours
        assert os.readlink(f"/proc/{line.world_proc.pid}/ns/net") != ours
        # Its AMI answers on the namespace's side only, not on our loopback.
        assert line.layout.host == line.network.pbx_address
        assert not _refused(line.network.pbx_address, line.layout.ami_port)
        assert _refused("127.0.0.1", line.layout.ami_port)
        # And the line works across it: a caller reaches a responder.
        call = await system.call("2 02121 2")
        call_id = await system.wait_call_id(call)
        assert await system.wait_state(call_id, {"bridged"}, 30) == "bridged"
        await call.hangup()
    assert name not in _namespaces()


@pytest.mark.skipif(not ROOT_HERE, reason="network namespaces need root")
def test_a_namespace_left_by_a_killed_test_is_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = f"{netns.PREFIX}{dead.pid}-1"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    try:
        network = netns.open_private_network()
        assert network is not None
        try:
            assert orphan not in _namespaces()
            assert network.name in _namespaces()
        finally:
            network.close()
    finally:
        subprocess.run(["ip", "netns", "del", orphan], capture_output=True)


def test_turned_off_it_runs_on_loopback(monkeypatch) -> None:
    monkeypatch.setenv("PR_TEST_NETNS", "off")
    assert netns.open_private_network() is None
