"""The real Asterisk as ``peoples-response up`` runs it on this machine: our configuration
rendered into ``var/asterisk/pbx`` on loopback, and the world Asterisk around it
(``var/asterisk/world``) so that `simulate call` has SIP callers to place and responders'
phones to ring. Both run as `up`'s parts, restarted if they die, stopped by PID."""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localpbx.install import installed
from localpbx.render import PbxLayout, free_port, render_pbx
from localpbx.world import WorldLayout, render_world, trunk_env

DEFAULT_PHONE = "answer:2"
DESK_PHONE = "answer:3"


class NotInstalled(RuntimeError):
    pass


@dataclass
class LocalPbx:
    install: Path
    pbx: PbxLayout
    world: WorldLayout
    desk_secret: str

    def argv(self, which: str) -> list[str]:
        conf = self.pbx.conf if which == "asterisk" else self.world.conf
        return [str(self.install / "sbin" / "asterisk"), "-f", "-n", "-g", "-C", str(conf)]

    def runtime(self) -> dict[str, str]:
        """What `up` writes to var/run/up.json for `simulate` (the file is 0600)."""
        return {"pbx": "real", "ami": f"{self.pbx.host}:{self.pbx.ami_port}",
                "ami_secret": self.pbx.ami_secret, "observer_secret": self.pbx.observer_secret,
                "world_ami": f"127.0.0.1:{self.world.ami_port}", "world_secret": self.world.secret,
                "pbx_state": str(self.pbx.state), "world_state": str(self.world.state)}

    def wait_booted(self, which: str, timeout: float = 30) -> bool:
        conf = self.pbx.conf if which == "asterisk" else self.world.conf
        return wait_fully_booted(self.install, conf, timeout)

    def wait_started(self, timeout: float = 30) -> str | None:
        """Both Asterisks fully booted; the name of the first that didn't, or None."""
        return next((which for which in ("asterisk", "world")
                     if not self.wait_booted(which, timeout)), None)


def wait_fully_booted(install: Path, conf: Path, timeout: float = 30) -> bool:
    """Until the Asterisk of ``conf`` says it is fully booted (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = subprocess.run([str(install / "sbin" / "asterisk"), "-C", str(conf),
                                  "-rx", "core waitfullybooted"], capture_output=True,
                                 text=True, timeout=5).stdout
        except subprocess.TimeoutExpired:
            out = ""
        if "fully booted" in out.lower():
            return True
        time.sleep(0.2)
    return False


def prepare(*, var: Path, prompts: Path, prompts_name: str, agi_url: str, ami_secret: str,
            ami_port: int, reassure_s: int) -> LocalPbx:
    """Render both Asterisks' configuration; nothing starts."""
    install = installed()
    if install is None:
        raise NotInstalled("Asterisk is not installed here: run scripts/install-asterisk "
                           "(about 3 minutes), or set PR_ASTERISK=standin")
    host = "127.0.0.1"
    sip_port = free_port(host, udp_too=True)
    desk_secret = secrets.token_hex(12)
    world = render_world(install=install, state=var / "asterisk" / "world", pbx_host=host,
                         pbx_sip_port=sip_port, secret=secrets.token_hex(16),
                         desk_secret=desk_secret, sounds=prompts)
    env = {**trunk_env(world), "PR_FALLBACK_DESK_SECRET": desk_secret,
           "PR_REASSURE_S": str(reassure_s)}
    pbx = render_pbx(install=install, state=var / "asterisk" / "pbx", prompts=prompts,
                     prompts_name=prompts_name, agi_url=agi_url, ami_secret=ami_secret,
                     observer_secret=secrets.token_hex(16), host=host, sip_port=sip_port,
                     ami_port=ami_port, extra_env=env)
    return LocalPbx(install, pbx, world, desk_secret)


def set_default_phones(world: WorldLayout) -> None:
    """Responders' phones answer and take the call; the fallback desk answers too."""
    cli = [str(world.install / "sbin" / "asterisk"), "-C", str(world.conf), "-rx"]
    subprocess.run([*cli, f"database put phones default {DEFAULT_PHONE}"], capture_output=True,
                   timeout=10)
    subprocess.run([*cli, f"database put phones fallback-desk {DESK_PHONE}"],
                   capture_output=True, timeout=10)
