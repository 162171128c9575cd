"""Kamailio in front of two or more Asterisk nodes (docs/kamailio.md).

``render_kamailio`` writes ``kamailio/kamailio.cfg`` into a state folder with what differs per
site beside it: ``pr-site.cfg`` (where it listens, the trunks' source networks, timers) and
``dispatcher.list`` (the nodes). ``KamailioProcess`` runs it in the foreground as a child
(inside a network namespace when given one, like ``AsteriskProcess``), is ready when its
control socket answers, and stops by PID. ``python -m localpbx.kamailio`` renders from the
environment (the same ``PR_<T>_TRUNK_MATCH``/``_HOST`` settings as asterisk/entrypoint.sh)
and execs Kamailio: what a container would run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localpbx.install import ROOT

TEMPLATE = ROOT / "kamailio" / "kamailio.cfg"
TRUNKS = ("direct", "911", "988")
# TEST-NET-1 (RFC 5737), as in pjsip.conf: an unconfigured trunk matches nobody.
NOBODY = "192.0.2.1/32"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_PATH = re.compile(r"/[A-Za-z0-9._/+-]+")


class KamailioError(RuntimeError):
    """Kamailio refused its configuration or did not start; the message says why."""


def binary() -> str | None:
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)), None)


def _address(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise KamailioError(f"{what}={value!r} is not an IPv4 address") from None


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or not _HOST.fullmatch(host):
        raise KamailioError(f"{what}={value!r} is not host:port")
    return host, int(port)


def networks(value: str, what: str) -> list[ipaddress.IPv4Network]:
    """A trunk's sources as the entrypoint takes them (PR_<T>_TRUNK_MATCH): addresses,
    networks or host names, by commas. Names are resolved now: Kamailio compares addresses,
    so a carrier that moves needs a new render (and restart)."""
    found: list[ipaddress.IPv4Network] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        item = item.split(":")[0] if "/" not in item else item  # a source port means nothing here
        try:
            found.append(ipaddress.IPv4Network(item, strict=False))
            continue
        except ValueError:
            pass
        if not _HOST.fullmatch(item):
            raise KamailioError(f"{what}: {item!r} is not an address, network or host name")
        try:
            infos = socket.getaddrinfo(item, None, socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise KamailioError(f"{what}: {item!r} does not resolve ({exc})") from None
        found += [ipaddress.IPv4Network(f"{info[4][0]}/32") for info in infos]
    return found


@dataclass
class KamailioLayout:
    """Where a rendered Kamailio lives and listens."""

    state: Path
    host: str
    port: int
    nodes: list[str]
    trunks: dict[str, list[str]] = field(default_factory=dict)

    @property
    def cfg(self) -> Path:
        return self.state / "kamailio.cfg"

    @property
    def site(self) -> Path:
        return self.state / "pr-site.cfg"

    @property
    def dispatcher_list(self) -> Path:
        return self.state / "dispatcher.list"

    @property
    def ctl_socket(self) -> Path:
        return self.state / "kamailio.ctl"

    @property
    def log(self) -> Path:
        return self.state / "kamailio.out"

    @property
    def sip(self) -> str:
        return f"{self.host}:{self.port}"

    def node_uri(self, node: str) -> str:
        return f"sip:{node}"


def render_kamailio(*, state: Path, host: str, port: int, nodes: Sequence[str],
                    trunks: Mapping[str, str], advertise: str | None = None,
                    ping_interval_s: int = 1, invite_timeout_ms: int = 10000,
                    log_level: int = 2, template: Path = TEMPLATE) -> KamailioLayout:
    """Write kamailio.cfg, pr-site.cfg and dispatcher.list into ``state``; nothing starts.

    ``host``/``port``: where it listens (the trunks send here; the nodes see this address,
    which is their PR_SIP_PROXY). ``nodes``: the Asterisk nodes, ``host:port`` each.
    ``trunks``: ``direct``/``911``/``988`` -> the addresses they call from (as
    PR_<T>_TRUNK_MATCH); one source may belong to one trunk only. ``advertise``: the
    ``host[:port]`` to put in Record-Route instead, behind NAT. ``template``: the
    kamailio.cfg to copy (the repository's; elsewhere in a container)."""
    host = _address(host, "listen address")
    if ipaddress.IPv4Address(host).is_unspecified:
        # Its address goes into Record-Route and is the nodes' PR_SIP_PROXY: name it.
        raise KamailioError("listen address 0.0.0.0: give the proxy's own address")
    if not nodes:
        raise KamailioError("no Asterisk node to send calls to")
    for node in nodes:
        _host_port(node, "node")
    if len(set(nodes)) != len(nodes):
        raise KamailioError(f"a node is listed twice: {', '.join(nodes)}")
    unknown = set(trunks) - set(TRUNKS)
    if unknown:
        raise KamailioError(f"unknown trunk(s) {sorted(unknown)}: only {', '.join(TRUNKS)}")
    sources = {name: networks(trunks.get(name, ""), f"trunk {name}") for name in TRUNKS}
    # A source in two trunks would make its calls one or the other by the order of the
    # checks: refused, as a 911 label changes who is rung first.
    for i, a in enumerate(TRUNKS):
        for b in TRUNKS[i + 1:]:
            clash = [f"{x} / {y}" for x in sources[a] for y in sources[b] if x.overlaps(y)]
            if clash:
                raise KamailioError(f"trunks {a} and {b} share sources: {', '.join(clash)}")
    state = state.resolve()
    if not _PATH.fullmatch(str(state)):
        raise KamailioError(f"{state} has characters Kamailio's config can't quote")
    if advertise is not None and not _HOST.fullmatch(advertise.rsplit(":", 1)[0]):
        raise KamailioError(f"advertise={advertise!r} is not host[:port]")
    state.mkdir(parents=True, exist_ok=True)
    layout = KamailioLayout(state, host, port, list(nodes),
                            {name: [str(n) for n in nets] for name, nets in sources.items()})
    shutil.copy(template, layout.cfg)
    listen = f"udp:{host}:{port}" + (f" advertise {advertise}" if advertise else "")
    site = [
        "# Written by localpbx/kamailio.py (render_kamailio): this site's values for kamailio.cfg.",
        f"#!define PR_LISTEN {listen}",
        f"#!define PR_LOG_LEVEL {int(log_level)}",
        f"#!define PR_PING_INTERVAL {int(ping_interval_s)}",
        f"#!define PR_INVITE_TIMEOUT_MS {int(invite_timeout_ms)}",
        f'#!define PR_CTL_SOCKET "unix:{layout.ctl_socket}"',
        f'#!define PR_DISPATCHER_LIST "{layout.dispatcher_list}"',
    ]
    for name in TRUNKS:
        nets = ",".join(layout.trunks[name]) or NOBODY
        site.append(f'#!define PR_TRUNK_{name.upper()} "{nets}"')
    layout.site.write_text("\n".join(site) + "\n")
    lines = ["# Written by localpbx/kamailio.py: set 1, the Asterisk nodes (setid uri flags priority)."]
    lines += [f"1 {layout.node_uri(node)} 0 0" for node in nodes]
    layout.dispatcher_list.write_text("\n".join(lines) + "\n")
    return layout


def check_config(layout: KamailioLayout) -> None:
    """``kamailio -c``: the file parses and every module loads; raises with its message."""
    exe = binary()
    if exe is None:
        raise KamailioError("kamailio is not installed (scripts/setup installs Debian's)")
    result = subprocess.run([exe, "-c", "-f", str(layout.cfg)], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise KamailioError(f"kamailio -c refused {layout.cfg}:\n{result.stderr[-3000:]}")


class KamailioProcess:
    def __init__(self, layout: KamailioLayout,
                 wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        self.layout = layout
        # How the command is run: e.g. inside a network namespace (localpbx.netns). The
        # control socket is a file in the state folder, so kamcmd needs no network.
        self.wrap = wrap or (lambda argv: argv)
        self.proc: subprocess.Popen | None = None

    def rpc(self, *command: str, timeout: float = 5) -> str:
        """One RPC command over the control socket (kamcmd), its output."""
        exe = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        result = subprocess.run([exe, "-s", f"unix:{self.layout.ctl_socket}", *command],
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise KamailioError(f"kamcmd {' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def start(self, timeout: float = 20.0) -> None:
        """Start in the foreground (-DD: no daemon, -E: log to stderr) and wait until its
        control socket answers and the node list is loaded."""
        exe = binary()
        if exe is None:
            raise KamailioError("kamailio is not installed (scripts/setup installs Debian's)")
        self.layout.ctl_socket.unlink(missing_ok=True)
        out = open(self.layout.log, "ab")
        self.proc = subprocess.Popen(self.wrap([exe, "-DD", "-E", "-f", str(self.layout.cfg)]),
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KamailioError(f"kamailio exited at start (code {self.proc.returncode}):\n"
                                    + self.tail())
            if self.layout.ctl_socket.exists():
                try:
                    if self.node_states():
                        return
                except (KamailioError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.1)
        self.stop()
        raise KamailioError(f"kamailio was not ready within {timeout:g} s:\n" + self.tail())

    def node_states(self) -> dict[str, str]:
        """Each node's URI and dispatcher flags: ``AP`` active (and probed), ``IP``
        inactive, ``TP`` trying (one failure, still chosen), ``DX`` disabled."""
        states: dict[str, str] = {}
        uri = None
        for line in self.rpc("dispatcher.list").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "URI":
                uri = value.strip()
            elif key == "FLAGS" and uri is not None:
                states[uri] = value.strip()
                uri = None
        return states

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.layout.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Kamailio stops its children), then SIGKILL: by PID, never by name."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its children are in its session (start_new_session): none is left behind.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def trunks_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """The trunks' sources from the entrypoint's own settings: PR_<T>_TRUNK_MATCH, else the
    host of PR_<T>_TRUNK_HOST (where the node sends calls is where the trunk calls from)."""
    trunks = {}
    for name in TRUNKS:
        key = f"PR_{name.upper()}_TRUNK"
        match = env.get(f"{key}_MATCH") or env.get(f"{key}_HOST", "").rsplit(":", 1)[0]
        if match:
            trunks[name] = match
    return trunks


def main(argv: Sequence[str] | None = None) -> int:
    """Render from the environment and exec Kamailio (a container's command):
    PR_KAMAILIO_LISTEN (address:port; an address, not 0.0.0.0: it goes in Record-Route),
    PR_KAMAILIO_ADVERTISE (optional), PR_SIP_NODES (host:port,...), PR_KAMAILIO_STATE
    (default /var/lib/peoples-response/kamailio), PR_KAMAILIO_TEMPLATE (default the
    repository's kamailio/kamailio.cfg), and the trunks' PR_<T>_TRUNK_MATCH/_HOST."""
    env = os.environ
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        host, port = _host_port(env.get("PR_KAMAILIO_LISTEN", ""), "PR_KAMAILIO_LISTEN")
        layout = render_kamailio(
            state=Path(env.get("PR_KAMAILIO_STATE", "/var/lib/peoples-response/kamailio")),
            host=host, port=port,
            nodes=[n.strip() for n in env.get("PR_SIP_NODES", "").split(",") if n.strip()],
            trunks=trunks_from_env(env), advertise=env.get("PR_KAMAILIO_ADVERTISE") or None,
            template=Path(env.get("PR_KAMAILIO_TEMPLATE") or TEMPLATE))
        check_config(layout)
    except KamailioError as exc:
        print(f"kamailio: refusing to start: {exc}", file=sys.stderr)
        return 64
    if args == ["--render-only"]:
        return 0
    exe = binary()
    assert exe is not None  # check_config found it
    os.execv(exe, [exe, "-DD", "-E", "-f", str(layout.cfg)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
