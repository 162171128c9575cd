"""Redis behind Sentinel for benchmarks: a primary, a replica and three sentinels (quorum 2),
real redis-server processes on free loopback ports, all of their own (nothing touches the
machine's Redis at 6379). As tests/test_redis_sentinel.py's SentinelSet, plus what a soak
needs: the primary as the sentinels name it now (after one failover the replica is the
primary), kill -9 of whichever that is, and the killed server started again as a replica
of the new primary, so that a second failover has somewhere to go.

Blocking calls (subprocess, sockets): run them in a thread from an event loop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.measure import free_port
from crisisline.stores import sync_redis


def wait_listening(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port}")


def until(check: Callable[[], bool], seconds: float = 20, what: str = "the Redis set") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet, or mid-failover
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not settle in {seconds:g} s")


class Sentinels:
    """Two data servers and three sentinels; ``service`` is the name they monitor."""

    def __init__(self, folder: Path, service: str = "pr-bench",
                 down_after_ms: int = 1000, plain: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (scripts/setup installs it)")
        self.folder = folder
        self.service = service
        self.down_after_ms = down_after_ms
        self.servers = [free_port(), free_port()]  # the first starts as the primary
        self.sentinels = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}
        self.plain = plain  # one server and no sentinels: a baseline without Sentinel

    @property
    def url(self) -> str:
        """PR_REDIS_URL: the primary's (plain), or one whose host Sentinel replaces."""
        host = f"127.0.0.1:{self.servers[0]}" if self.plain else "sentinel-names-it.invalid:6379"
        return f"redis://{host}/0"

    @property
    def addresses(self) -> str:
        """PR_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinels)

    def _server(self, port: int, *extra: str) -> None:
        folder = self.folder / f"redis-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(folder), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_listening(port)

    def start(self) -> None:
        primary, replica = self.servers
        self._server(primary)
        if self.plain:
            return
        self._server(replica, "--replicaof", "127.0.0.1", str(primary))
        for port in self.sentinels:
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n")
            self.procs[port] = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            wait_listening(port)
        client = sync_redis(f"redis://127.0.0.1:{replica}/0")
        until(lambda: client.info("replication").get("master_link_status") == "up")
        self.wait_known(replica)

    def wait_known(self, replica: int, seconds: float = 30) -> None:
        """Every sentinel knows the replica (num-slaves 1) and names the same primary."""
        def settled() -> bool:
            primaries = set()
            for port in self.sentinels:
                s = sync_redis(f"redis://127.0.0.1:{port}/0")
                if int(s.sentinel_master(self.service)["num-slaves"]) < 1:
                    return False
                primaries.add(self.primary_port(port))
            return len(primaries) == 1 and replica not in primaries
        until(settled, seconds)

    def primary_port(self, sentinel: int | None = None) -> int:
        s = sync_redis(f"redis://127.0.0.1:{sentinel or self.sentinels[0]}/0")
        _, port = s.sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def kill_primary(self) -> int:
        """kill -9 the server the sentinels name the primary now; its port."""
        port = self.primary_port()
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(5)
        return port

    def wait_promoted(self, killed: int, seconds: float = 30) -> int:
        """Every sentinel names another server than ``killed`` as the primary; its port."""
        until(lambda: all(self.primary_port(s) != killed for s in self.sentinels), seconds,
              "the failover")
        return self.primary_port()

    def restart_as_replica(self, port: int, seconds: float = 30) -> None:
        """The killed server back, empty, replicating from the primary of now."""
        primary = self.primary_port()
        self._server(port, "--replicaof", "127.0.0.1", str(primary))
        client = sync_redis(f"redis://127.0.0.1:{port}/0")
        until(lambda: client.info("replication").get("master_link_status") == "up", seconds,
              "the restarted replica")
        self.wait_known(port, seconds)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
