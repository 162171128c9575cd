"""The prompts folder as the IVR reads it: which files a prompt is, which one plays, and
putting a reviewer's recording where the IVR finds it.

The contract with the IVR (and Asterisk) is the folder: ``<prompts>/<lang>/<stem>.<ext>``,
a human recording always winning over rendered audio. A recording from the panel is
written as ``<stem>.wav`` atomically (a call never plays half a file); any other format
of the same stem (a .gsm or .ulaw someone placed by hand) is moved aside, because
Asterisk would pick whichever format is cheapest to play, not necessarily the new one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from crisisline.config import Settings
from crisisline.prompts.availability import AUDIO_EXTENSIONS
from crisisline.prompts.catalog import Catalog
from crisisline.prompts.render import is_rendered, plan


def files_of(settings: Settings, catalog: Catalog, lang: str, prompt: str) -> list[str]:
    """The file stems the line plays for ``prompt`` in ``lang`` (one for most prompts;
    one per caller language or per neighborhood for some of the whisper's)."""
    return [job.file for job in plan(settings, catalog, [lang]) if job.prompt == prompt]


def audio_path(settings: Settings, lang: str, stem: str) -> Path | None:
    """The file the IVR plays for ``stem``, or None (same extension order as availability)."""
    folder = settings.prompts_path / lang
    for ext in AUDIO_EXTENSIONS:
        path = folder / f"{stem}.{ext}"
        if path.is_file():
            return path
    return None


def is_recording(settings: Settings, lang: str, stem: str) -> bool:
    path = audio_path(settings, lang, stem)
    if path is None:
        return False
    return path.suffix != ".wav" or not is_rendered(settings, f"{lang}/{stem}.wav")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replaced_dir(settings: Settings) -> Path:
    """Where files the panel took out of the prompts folder are kept (never deleted)."""
    return settings.var_path / "prompt-reviews" / "replaced"


def _move_aside(settings: Settings, lang: str, path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = replaced_dir(settings) / lang / f"{path.stem}-{stamp}{path.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def install_recording(settings: Settings, lang: str, stem: str, wav: bytes) -> list[Path]:
    """Make ``wav`` the file the IVR plays for ``stem``; returns the files moved aside."""
    folder = settings.prompts_path / lang
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(wav)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # Asterisk runs as its own user and must read it
        moved = [_move_aside(settings, lang, folder / f"{stem}.{ext}")
                 for ext in AUDIO_EXTENSIONS if ext != "wav" and (folder / f"{stem}.{ext}").is_file()]
        os.replace(tmp, folder / f"{stem}.wav")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return moved


def take_out_recording(settings: Settings, lang: str, stem: str) -> list[Path]:
    """Move every recording of ``stem`` out of the prompts folder (kept aside, not deleted),
    so rendered audio can take its place. Our own rendered file is left alone."""
    folder = settings.prompts_path / lang
    moved = []
    for ext in AUDIO_EXTENSIONS:
        path = folder / f"{stem}.{ext}"
        if path.is_file() and (ext != "wav" or not is_rendered(settings, f"{lang}/{stem}.wav")):
            moved.append(_move_aside(settings, lang, path))
    return moved


def restore_recordings(settings: Settings, recordings: Iterable[tuple[str, str, str, bytes]]
                       ) -> list[str]:
    """Put recordings kept in SQL back into the prompts folder where the folder has none
    (a new machine, a wiped folder, or rendered audio in their place). A different human
    recording placed there by hand is left alone. ``recordings``: (lang, stem, sha, wav)."""
    restored = []
    for lang, stem, sha, wav in recordings:
        path = audio_path(settings, lang, stem)
        if path is not None and is_recording(settings, lang, stem):
            continue  # this one, or someone's own: either way a human voice is playing
        if hashlib.sha256(wav).hexdigest() != sha:
            continue  # damaged in storage: never play it
        install_recording(settings, lang, stem, wav)
        restored.append(f"{lang}/{stem}.wav")
    return restored
