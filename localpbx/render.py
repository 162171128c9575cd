"""Our Asterisk configuration, rendered for an Asterisk on this machine.

The same code as the container's: ``asterisk/entrypoint.sh`` copies the pristine files and
writes the values from the environment (and refuses what it refuses in production); here
it only renders (its arguments, ``true``, run in place of Asterisk). What differs from
the container is where it listens (loopback, ports of its own) and where it keeps its
state (a folder under ``var/``), both passed to the entrypoint as settings.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localpbx.install import ROOT

ENTRYPOINT = ROOT / "asterisk" / "entrypoint.sh"
DIALPLAN = ROOT / "dialplan" / "extensions.conf"
CORE_SOUNDS = Path("/usr/share/asterisk/sounds")
MOH = Path("/usr/share/asterisk/moh")
# The waiting room's music (asterisk/Dockerfile picks the same pieces).
WAITING_MUSIC = ("macroform-the_simplicity", "macroform-cold_day", "manolo_camp-morning_coffee")


class RenderError(RuntimeError):
    """The entrypoint refused the configuration; its message says why."""


def free_port(host: str = "127.0.0.1", udp_too: bool = False) -> int:
    """A port nobody listens on now (TCP, and UDP as well for SIP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            return port
        except OSError:
            continue
    raise OSError(f"no free port on {host}")


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """An even-aligned UDP range for RTP, away from the usual ephemeral ports."""
    import random

    for _ in range(50):
        start = random.randrange(20000, 30000, 2)
        ok = True
        for port in (start, start + size // 2, start + size - 2):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("0.0.0.0", port))
            except OSError:
                ok = False
                break
        if ok:
            return start, start + size - 1
    raise OSError("no free RTP range")


@dataclass
class PbxLayout:
    """Where a rendered Asterisk lives and listens."""

    install: Path
    state: Path
    host: str
    sip_port: int
    ami_port: int
    rtp: tuple[int, int]
    ami_secret: str
    observer_secret: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.state / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "asterisk.conf"

    @property
    def log(self) -> Path:
        return self.state / "asterisk.out"

    @property
    def sip(self) -> str:
        return f"{self.host}:{self.sip_port}"


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(target)


def prepare_state(install: Path, state: Path, prompts: Path, prompts_name: str) -> None:
    """The folders asterisk.conf [directories] names: sounds (Debian's core sounds and our
    prompts), music, the XML documentation Asterisk needs to load its modules, spool."""
    for sub in ("lib/keys", "data", "spool", "run", "log", "agi-bin", "etc", "src"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    data = state / "data"
    _link(install / "var" / "lib" / "asterisk" / "documentation", data / "documentation")
    sounds = data / "sounds"
    sounds.mkdir(exist_ok=True)
    if CORE_SOUNDS.is_dir():
        for lang in CORE_SOUNDS.iterdir():
            _link(lang, sounds / lang.name)
    prompts.mkdir(parents=True, exist_ok=True)
    _link(prompts.resolve(), sounds / prompts_name)
    moh = data / "moh"
    moh.mkdir(exist_ok=True)
    waiting = moh / "pr-waiting"
    waiting.mkdir(exist_ok=True)
    pieces = [MOH / f"{name}.wav" for name in WAITING_MUSIC if (MOH / f"{name}.wav").exists()]
    pieces = pieces or sorted(MOH.glob("*.wav"))
    for piece in pieces:
        _link(piece, moh / piece.name)
        _link(piece, waiting / piece.name)


def render_pbx(*, install: Path, state: Path, prompts: Path, prompts_name: str, agi_url: str,
               ami_secret: str, observer_secret: str, host: str = "127.0.0.1",
               sip_port: int | None = None, ami_port: int | None = None,
               rtp: tuple[int, int] | None = None, extra_env: dict[str, str] | None = None
               ) -> PbxLayout:
    """Render our configuration into ``state/etc`` with the entrypoint; nothing starts."""
    state = state.resolve()
    prepare_state(install, state, prompts, prompts_name)
    src = state / "src"
    for old in src.glob("*.conf"):
        old.unlink()
    for conf in (ROOT / "asterisk").glob("*.conf"):
        shutil.copy(conf, src / conf.name)
    shutil.copy(DIALPLAN, src / "extensions.conf")
    indications = install / "share" / "indications.conf"
    if indications.exists():
        shutil.copy(indications, src / "indications.conf")
    layout = PbxLayout(install, state, host, sip_port or free_port(host, udp_too=True),
                       ami_port or free_port(host), rtp or free_rtp_range(), ami_secret,
                       observer_secret)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PR_ASTERISK_CONF_SRC": str(src), "PR_ASTERISK_ETC": str(layout.etc),
        "PR_AMI_SECRET": ami_secret, "PR_AMI_OBSERVER_SECRET": observer_secret,
        "PR_AGI_URL": agi_url, "PR_AMI_BINDADDR": host,
        "PR_SIP_BIND": layout.sip, "PR_AMI_PORT": str(layout.ami_port),
        "PR_RTP_START": str(layout.rtp[0]), "PR_RTP_END": str(layout.rtp[1]),
        "PR_ASTERISK_INSTALL": str(install), "PR_ASTERISK_STATE": str(state),
        **(extra_env or {}),
    }
    result = subprocess.run(["sh", str(ENTRYPOINT), "true"], env=env, capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or f"entrypoint exited {result.returncode}")
    layout.env = env
    return layout
