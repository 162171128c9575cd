"""A private network namespace for a test's Asterisks (when we are root).

Inside it, both Asterisks (the line and the world) have every port to themselves, so no other
program on the machine (another test worker, a developer's `up`, a stray SIP scanner) can
reach them or collide with them, and nothing they bind is seen outside. A veth pair joins it
to ours: our side (``host_address``) is where the FastAGI server listens for the line, and
the namespace's side (``pbx_address``) is where the line's SIP and AMI and the world's AMI
listen. The world's trunks keep their 127.0.0.2-.5 addresses on the namespace's own loopback.

Not root, no ``ip``, or ``PR_TEST_NETNS=off``: ``open_private_network`` returns None and the
caller runs Asterisk on free loopback ports instead, as before.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "pr-"
# 16,384 /30 networks for concurrent test workers; inside 10/8, which the line's AMI
# permits (asterisk/manager.conf), and rarely used by a developer's own LAN at this depth.
POOL = ipaddress.ip_network("10.213.0.0/16")
LOCK = Path("/run/lock/peoples-response-netns.lock")


class NetnsError(RuntimeError):
    """The namespace could not be made; the message says which command failed and why."""


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")


@dataclass
class PrivateNetwork:
    name: str
    host_address: str  # our side of the veth pair
    pbx_address: str  # the namespace's side: where Asterisk listens

    def wrap(self, argv: list[str]) -> list[str]:
        """The command run inside the namespace. `ip netns exec` execs it, so the PID
        Popen returns is Asterisk's own and stopping by PID still works."""
        return ["ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        """Delete the namespace (its end of the veth pair, and so ours, goes with it)."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


def available() -> bool:
    if os.environ.get("PR_TEST_NETNS", "auto").lower() in ("off", "0", "no", "false"):
        return False
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _owner_alive(name: str) -> bool:
    try:
        pid = int(name.removeprefix(PREFIX).split("-")[0])
    except ValueError:
        return True  # not one of ours by that shape: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _existing() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _used_networks() -> set[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         timeout=10).stdout
    used = set()
    for line in out.split("\n"):
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return used


def _reap_orphans() -> None:
    """Namespaces left by a test process that was killed (its PID is in the name)."""
    for name in _existing():
        if name.startswith(PREFIX) and not _owner_alive(name):
            log.info("removing network namespace %s left by a dead process", name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _create(name: str) -> PrivateNetwork:
    used = _used_networks()
    subnets = list(POOL.subnets(new_prefix=30))
    for net in random.sample(subnets, 64):
        if not any(net.overlaps(u) for u in used):
            break
    else:
        raise NetnsError(f"no free /30 network left in {POOL}")
    ours, theirs = (str(a) for a in list(net.hosts())[:2])
    tag = name.removeprefix(PREFIX)[-9:]
    host_if, ns_if = f"prh{tag}"[:15], f"prn{tag}"[:15]
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{ours}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{theirs}/30", "dev", ns_if, netns=name)
        _ip("link", "set", ns_if, "up", netns=name)
        _ip("link", "set", "lo", "up", netns=name)  # the world's trunks live on it
    except BaseException:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        raise
    return PrivateNetwork(name, ours, theirs)


_serial = 0


def open_private_network() -> PrivateNetwork | None:
    """A new namespace joined to ours, or None where we can't make one (not root, no `ip`,
    turned off). A failure to make one when we should be able to is an error, not a
    silent fall-back: a test run must say which network its PBX ran on."""
    if not available():
        return None
    global _serial
    _serial += 1
    name = f"{PREFIX}{os.getpid()}-{_serial}"
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        # Two test workers choosing a /30 at the same moment must not choose the same one.
        fcntl.flock(lock, fcntl.LOCK_EX)
        _reap_orphans()
        return _create(name)
