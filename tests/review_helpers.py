"""Shared pieces for the prompt-review tests: real audio files, a call through the
stand-in and our FastAGI server, and which file the caller actually heard."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from crisisline.config import Settings
from standin.caller import CallerScript
from standin.channel import CallTrace
from standin.sounds import SoundResolver
from tests.intake_helpers import call, pbx_for, running_agi


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


def speech(text: str, path: Path, voice: str = "en-us", gain_db: float = 0.0,
           rate: int = 22050) -> Path:
    """espeak-ng speech as a 16-bit WAV (what a reviewer's microphone or file would give)."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True,
                   capture_output=True)
    effects = ["gain", str(gain_db)] if gain_db else []
    sox(str(raw), "-r", str(rate), "-b", "16", str(path), *effects)
    raw.unlink()
    return path


async def ivr_call(settings: Settings, keys: str) -> CallTrace:
    """One direct-line call through the stand-in (our real dialplan) and our IVR."""
    async with running_agi(settings) as server:
        return await call(pbx_for(settings, server.port), "direct",
                          CallerScript(keys=keys, stay_s=0))


def heard(settings: Settings, trace: CallTrace, lang: str, name: str) -> Path:
    """The file Asterisk would have played for ``lang/name`` in this call."""
    wanted = f"{settings.asterisk_prompts_path}/{lang}/{name}"
    assert wanted in trace.prompts, trace.prompts
    assert wanted not in trace.missing_prompts
    path = SoundResolver([], settings.prompts_path, settings.asterisk_prompts_path).resolve(wanted)
    assert path is not None
    return path


def pcm(data: bytes) -> list[int]:
    import array
    import io
    import wave

    with wave.open(io.BytesIO(data)) as w:
        return list(array.array("h", w.readframes(w.getnframes())))


def same_audio(a: bytes, b: bytes) -> bool:
    """The same sound, give or take sox's dither (random +-1 LSB per run)."""
    x, y = pcm(a), pcm(b)
    return len(x) == len(y) and max((abs(p - q) for p, q in zip(x, y, strict=True)), default=0) <= 2


def _envelope(samples: list[int], frame: int = 160) -> list[float]:
    return [sum(x * x for x in samples[i:i + frame]) ** 0.5
            for i in range(0, len(samples) - frame + 1, frame)]


def _corr(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ma, mb = sum(a) / n, sum(b) / n
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    den = (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
    return num / den if den else 0.0


def likeness(recording: bytes, source: bytes, min_overlap: int = 50) -> float:
    """How well the loudness contour (20 ms frames at 8 kHz) of ``recording`` matches some
    stretch of ``source`` looped (1.0: the same speech; unrelated sounds stay far lower).
    Both must be 8 kHz WAV."""
    rec, src = _envelope(pcm(recording)), _envelope(pcm(source))
    looped = src * (len(rec) // max(len(src), 1) + 2)
    return max((_corr(rec, looped[s:]) for s in range(len(src))
                if min(len(rec), len(looped) - s) >= min_overlap), default=0.0)
