"""Where `scripts/install-asterisk` installs Asterisk, computed the same way as the script:
``$PR_ASTERISK_HOME/asterisk-<version>-<sha256 of asterisk/build-modules.txt, 12 hex>``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "22.10.1"
SELECTION = ROOT / "asterisk" / "build-modules.txt"
INSTALL_SCRIPT = ROOT / "scripts" / "install-asterisk"


def asterisk_home() -> Path:
    if os.environ.get("PR_ASTERISK_HOME"):
        return Path(os.environ["PR_ASTERISK_HOME"])
    if os.geteuid() == 0:
        return Path("/opt/peoples-response")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "peoples-response"


def install_path() -> Path:
    digest = hashlib.sha256(SELECTION.read_bytes()).hexdigest()[:12]
    return asterisk_home() / f"asterisk-{VERSION}-{digest}"


def installed() -> Path | None:
    """The install prefix when a complete build is there, else None."""
    path = install_path()
    if (path / ".complete").is_file() and os.access(path / "sbin" / "asterisk", os.X_OK):
        return path
    return None
