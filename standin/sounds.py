"""Finding sound files the way Asterisk names them, and how long they play.

Asterisk names files without an extension and picks whichever format exists; the
stand-in does the same so that a missing prompt shows up as it would on a real PBX
(STREAM FILE -> ``200 result=-1 endpos=0``).
"""

from __future__ import annotations

import array
import wave
from dataclasses import dataclass
from pathlib import Path

RATE = 8000  # Asterisk reports endpos in 8 kHz samples for narrowband formats
DEFAULT_SOUNDS_DIRS = (Path("/usr/share/asterisk/sounds"),)
# Tried in this order, as Asterisk would find any of them.
EXTENSIONS = (".wav", ".gsm", ".sln", ".slin", ".ulaw", ".alaw", ".pcm", ".wav16", ".sln16")


class SoundResolver:
    """Maps a STREAM FILE / Playback name to a file on disk."""

    def __init__(
        self,
        sounds_dirs: list[Path] | None = None,
        prompts_dir: Path | None = None,
        prompts_prefix: str = "peoples-response",
    ) -> None:
        self.sounds_dirs = [Path(d) for d in (sounds_dirs or DEFAULT_SOUNDS_DIRS)]
        self.prompts_dir = Path(prompts_dir) if prompts_dir else None
        self.prompts_prefix = prompts_prefix.strip("/")

    def resolve(self, name: str, language: str = "en") -> Path | None:
        """The file Asterisk would play for ``name``, or None when it has none."""
        if not name or "\x00" in name:
            return None
        candidates: list[Path] = []
        prefix = self.prompts_prefix + "/"
        if self.prompts_dir is not None and name.startswith(prefix):
            candidates.append(self.prompts_dir / name[len(prefix):])
        elif name.startswith("/"):
            candidates.append(Path(name))
        else:
            for base in self.sounds_dirs:
                candidates += [base / language / name, base / name]
        for stem in candidates:
            for ext in EXTENSIONS:
                path = stem.with_name(stem.name + ext)
                if path.is_file():
                    return path
        return None

    def duration_samples(self, name: str, language: str = "en") -> int | None:
        path = self.resolve(name, language)
        return None if path is None else file_samples(path)


def file_samples(path: Path) -> int:
    """Length of a sound file in 8 kHz samples (what Asterisk reports as endpos)."""
    ext = path.suffix.lower()
    size = path.stat().st_size
    if ext == ".gsm":
        return size // 33 * 160  # one 33-byte GSM frame = 160 samples
    if ext in (".sln", ".slin", ".raw"):
        return size // 2
    if ext in (".ulaw", ".alaw", ".pcm"):
        return size
    if ext in (".sln16", ".wav16"):
        return size // 4
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() * RATE // max(w.getframerate(), 1)
    except (wave.Error, EOFError):
        return max(size - 44, 0) // 2


def read_pcm8k(path: Path) -> array.array:
    """A WAV file as 8 kHz mono signed 16-bit samples (what RECORD FILE would write)."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM speech files are supported")
    samples = array.array("h", raw)
    if channels > 1:  # average the channels down to mono
        samples = array.array(
            "h",
            (sum(samples[i:i + channels]) // channels for i in range(0, len(samples), channels)),
        )
    if rate != RATE:  # nearest-sample resampling is enough for a test recording
        count = len(samples) * RATE // rate
        samples = array.array("h", (samples[i * rate // RATE] for i in range(count)))
    return samples


def write_wav8k(path: Path, samples: array.array) -> None:
    """Write 8 kHz mono 16-bit PCM, the format of Asterisk's ``wav`` recordings."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())


@dataclass
class Take:
    """What RECORD FILE ends with: the samples kept, the result code and its marker."""

    samples: array.array
    result: int
    marker: str  # "dtmf", "timeout" or "hangup", as in handle_recordfile's reply
    elapsed_ms: int


def simulate_recording(speech: Path | None, max_ms: int, silence_ms: int, escape: str,
                       ending: str) -> Take:
    """res_agi.c handle_recordfile, for a caller who says ``speech`` and then
    presses an escape digit (``dtmf``), goes quiet (``silence``) or hangs up."""
    said = read_pcm8k(Path(speech)) if speech else array.array("h")
    limit = max_ms * RATE // 1000 if max_ms > 0 else None
    if limit is not None and len(said) >= limit:  # max time reached while talking
        return Take(said[:limit], 0, "timeout", max_ms)
    said_ms = len(said) * 1000 // RATE
    if ending == "mute":
        # No frames reach the recorder: no silence detection, nothing written; the time
        # limit ends it (tests/captures/fastagi_redirect_recordfile: endpos=0).
        return Take(array.array("h"), 0, "timeout", max_ms)
    if ending == "hangup":
        return Take(said, -1, "hangup", said_ms)
    if ending == "dtmf" and escape:
        digit = "#" if "#" in escape else escape[0]
        # Asterisk rewinds 200 ms to chop off the tone itself.
        return Take(said[:max(len(said) - RATE // 5, 0)], ord(digit), "dtmf", said_ms)
    if silence_ms > 0 and (max_ms <= 0 or said_ms + silence_ms < max_ms):
        # Ended by silence: Asterisk rewinds (silence - 1000) ms, so 1 s of it stays, and
        # the result is what ast_waitfor() had left of the max time (capture 05b).
        kept = said + array.array("h", bytes(2 * RATE))
        left = max_ms - said_ms - silence_ms if max_ms > 0 else 0
        return Take(kept, left, "timeout", said_ms + silence_ms)
    total = limit if limit is not None else len(said) + 5 * RATE
    padded = said + array.array("h", bytes(2 * (total - len(said))))
    return Take(padded, 0, "timeout", total * 1000 // RATE)


def write_recording(path: Path, fmt: str, samples: array.array) -> None:
    """Asterisk appends the format as the extension; wav = 8 kHz mono 16-bit PCM."""
    if fmt.lower() in ("sln", "slin", "raw"):
        path.write_bytes(samples.tobytes())
    else:
        write_wav8k(path, samples)
