"""Short tones in place of every prompt the line plays: what a prompt says changes nothing
for a test or a benchmark on the real Asterisk, its length does (and espeak-ng rendering
every language would take minutes)."""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

from crisisline.config import Settings
from crisisline.prompts.catalog import load_catalog
from crisisline.prompts.render import plan


def short_prompts(folder: Path, settings: Settings, seconds: float = 0.4) -> Path:
    """A 440 Hz tone of ``seconds`` for every prompt file the line plays (render.plan's
    names), in the format Asterisk plays (8 kHz mono 16-bit); files already there stay."""
    frames = int(8000 * seconds)
    tone = array.array("h", (int(4000 * math.sin(2 * math.pi * 440 * n / 8000))
                             for n in range(frames))).tobytes()
    for job in plan(settings, load_catalog()):
        path = folder / job.rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(tone)
    return folder
