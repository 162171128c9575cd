"""Redis behind Sentinel (PR_REDIS_SENTINELS, PR_REDIS_SERVICE): real redis-servers, a primary
and a replica, and three real sentinels of the test's own. The primary is killed -9; the
sentinels promote the replica, and the line carries on through it: what was written before
is there, and a caller who phones after the failover reaches a responder."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crisisline import config
from crisisline.stores import SentinelTarget, async_redis, sync_redis
from tests.dispatch_helpers import running_system, team_roster

SERVICE = "pr-test"
ROSTER = team_roster(("ana", "dot", "en,es", False), ("ben", "dot", "en,es", False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port}")


class SentinelSet:
    """A primary, a replica and three sentinels (quorum 2) on free loopback ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    def _server(self, port: int, *extra: str) -> None:
        self.procs[port] = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port",
             str(port), "--save", "", "--appendonly", "no", "--dir", str(self.folder), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(port)

    def start(self) -> None:
        self._server(self.primary)
        self._server(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        for port in self.sentinels:
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self.procs[port] = subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(port)
        # The replica has caught up and every sentinel knows both servers.
        client = sync_redis(f"redis://127.0.0.1:{self.replica}/0")
        self._until(lambda: client.info("replication").get("master_link_status") == "up")
        for port in self.sentinels:
            s = sync_redis(f"redis://127.0.0.1:{port}/0")
            self._until(lambda s=s: int(s.sentinel_master(SERVICE)["num-slaves"]) == 1)

    @staticmethod
    def _until(check, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.1)
        raise RuntimeError("the Redis set did not settle")

    def kill_primary(self) -> None:
        proc = self.procs.pop(self.primary)
        proc.kill()
        proc.wait(5)

    def primary_port(self, sentinel: int) -> int:
        s = sync_redis(f"redis://127.0.0.1:{sentinel}/0")
        _, port = s.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def wait_promoted(self, seconds: float = 30) -> None:
        """Every sentinel names the replica as the primary."""
        self._until(lambda: all(self.primary_port(s) == self.replica for s in self.sentinels),
                    seconds)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(5)


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/setup installs it)")
    group = SentinelSet(tmp_path)
    group.start()
    try:
        yield group
    finally:
        group.stop()


def sentinel_settings(base: config.Settings, group: SentinelSet) -> config.Settings:
    env = {"PR_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in group.sentinels),
           "PR_REDIS_SERVICE": SERVICE, "PR_REDIS_URL": "redis://unused.invalid:6379/0"}
    loaded = config.load(env=env)
    return dataclasses.replace(base, redis_url=loaded.redis_url,
                               redis_sentinels=loaded.redis_sentinels,
                               redis_service=loaded.redis_service)


def test_the_settings_name_the_sentinels_and_bad_ones_are_refused():
    settings = config.load(env={"PR_REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26379,"
                                                      "10.0.0.3:26379",
                                "PR_REDIS_SERVICE": "line", "PR_REDIS_URL": "redis://:s3@x/2"})
    target = SentinelTarget.parse(settings.effective_redis_url)
    assert target is not None
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379))
    assert (target.service, target.db, target.password) == ("line", 2, "s3")
    with pytest.raises(config.ConfigError, match="redis_sentinels: 'nohost' is not HOST:PORT"):
        config.load(env={"PR_REDIS_SENTINELS": "nohost"})
    with pytest.raises(config.ConfigError, match="redis_service"):
        config.load(env={"PR_REDIS_SENTINELS": "a:1", "PR_REDIS_SERVICE": "bad name"})
    # One box configures nothing new: no sentinels, the plain URL as before.
    assert config.load(env={}).effective_redis_url == "redis://127.0.0.1:6379/0"


async def test_a_client_carries_on_through_the_promoted_replica(sentinels, settings):
    url = sentinel_settings(settings, sentinels).effective_redis_url
    client = async_redis(url)
    try:
        await client.set("pr:test:before", "kept")
        await client.execute_command("WAIT", 1, 2000)  # on the replica before the kill
        sentinels.kill_primary()
        await asyncio.to_thread(sentinels.wait_promoted)
        # The same client, no restart: its next commands find the new primary.
        await client.set("pr:test:after", "written")
        assert await client.get("pr:test:before") == b"kept"
        assert await client.get("pr:test:after") == b"written"
        assert sync_redis(url).get("pr:test:after") == b"written"
    finally:
        await client.aclose()


async def test_a_caller_after_the_failover_reaches_a_responder(sentinels, live_settings):
    settings = sentinel_settings(live_settings, sentinels)
    async with running_system(settings, ROSTER, wave_timeout_s=1.0,
                              default_phone="answer:1") as system:
        first = await system.call("2 02121 2")
        first_id = await system.wait_call_id(first)
        assert await system.wait_state(first_id, {"bridged"}) == "bridged"
        system.db.client.execute_command("WAIT", 1, 2000)
        sentinels.kill_primary()
        await asyncio.to_thread(sentinels.wait_promoted)
        # Nothing written before the failover is lost, and the line goes on.
        assert system.db.call(first_id)["accepted_by"] in ("ana", "ben")
        second = await system.call("2 02121 2", caller_id_num="6175550177")
        second_id = await system.wait_call_id(second, timeout=20)
        assert await system.wait_state(second_id, {"bridged"}, timeout=30) == "bridged"
        assert system.db.call(second_id)["accepted_by"] != system.db.call(first_id)["accepted_by"]
        await system.pbx.hangup(first.name)
        await system.pbx.hangup(second.name)
