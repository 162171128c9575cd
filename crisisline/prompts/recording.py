"""A reviewer's recording or uploaded file (untrusted input) made into what Asterisk plays.

Every byte here comes from a browser. So: at most ``MAX_BYTES``; the type is decided by
the file's first bytes (never its name or the browser's say-so) from a short list sox reads
well, and sox is told that type (its guessing spans dozens of rarely used decoders); sox
runs in a subprocess with a time limit, CPU/memory/file-size limits (prlimit), no
inherited environment (the panel's secrets stay out of reach), in a private folder, on
files named by us. It decodes at most ``MAX_SECONDS`` + 1 s, so a tiny file that claims
hours of audio costs no more than a minute's worth.

Then the level is checked and the recording refused, with a reason a person can act on,
when it is silent, too quiet, clipped, too short or too long. What is kept is trimmed of
silence at both ends (a caller never waits through the pause before the reviewer spoke),
peak-normalised so every prompt plays at a like level, and converted to 8 kHz mono
16-bit WAV: Asterisk's ``wav`` format.
"""

from __future__ import annotations

import array
import hashlib
import math
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 * 1024 * 1024  # a minute of 48 kHz 16-bit mono is 5.8 MB
MAX_SECONDS = 60.0  # the longest prompt (the promise) takes about 15 s
MIN_SECONDS = 0.5
SOX_TIMEOUT_S = 20.0
ANALYSIS_RATE = 16000  # decoded at this rate for the checks (bounded work per second)
FRAME_S = 0.02
SPEECH_DBFS = -45.0  # a 20 ms frame louder than this is taken as sound, not silence
MIN_SPEECH_S = 0.3
SILENT_PEAK_DBFS = -55.0  # nothing louder than this: a muted or absent microphone
QUIET_PEAK_DBFS = -30.0  # quieter than this, normalising would mostly raise the noise
CLIP_LEVEL = 32700  # |sample| at or above this is at the top of the 16-bit range
CLIP_RUNS = 8  # this many runs of 2+ consecutive such samples: the sound was clipped
LEAD_S, TAIL_S = 0.15, 0.25  # kept around the sound when trimming silence
TARGET_PEAK_DB = -3.0
ACCEPTED = "WAV, FLAC, Ogg Vorbis or AIFF"
OUTPUT_RATE = 8000


class AudioRefused(ValueError):
    """The audio can't be used; ``reason`` says why in words for the person who sent it."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Prepared:
    wav: bytes  # 8 kHz mono signed 16-bit WAV
    seconds: float
    sha256: str
    peak_dbfs: float  # of the input, before normalising


def sniff(head: bytes) -> str:
    """sox's type for a file that starts with ``head``; AudioRefused for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        raise AudioRefused("format", f"MP3 files can't be read here. Export the recording as "
                                     f"{ACCEPTED} and upload that.")
    if head[4:8] == b"ftyp" or head[:4] == b"\x1aE\xdf\xa3":
        raise AudioRefused("format", f"M4A, MP4 and WebM files can't be read here. Export the "
                                     f"recording as {ACCEPTED} and upload that.")
    raise AudioRefused("not_audio", f"This is not an audio file we can read. Send {ACCEPTED}.")


def _sox(args: list[str], cwd: Path) -> None:
    # prlimit caps what a decoder bug could make sox do: CPU seconds, memory, file sizes.
    limits = ["prlimit", "--cpu=30", "--as=1073741824", "--fsize=67108864", "--nofile=64", "--"] \
        if shutil.which("prlimit") else []
    try:
        subprocess.run([*limits, "sox", "-V1", *args], cwd=cwd, capture_output=True, check=True,
                       timeout=SOX_TIMEOUT_S, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                       stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise AudioRefused("no_sox", "sox is not installed on the server; ask an admin to "
                                     "install it (apt-get install sox libsox-fmt-all).") from None
    except subprocess.TimeoutExpired:
        raise AudioRefused("timeout", f"Reading the file took longer than {SOX_TIMEOUT_S:g} s; "
                                      f"it may be damaged. Export it again as WAV and retry.") from None
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        detail = message[-1].rsplit(": ", 1)[-1] if message else f"exit {exc.returncode}"
        raise AudioRefused("unreadable", f"The file could not be read as audio ({detail}). "
                                         f"Send {ACCEPTED}.") from None


def _samples(path: Path) -> tuple[array.array, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = array.array("h", w.readframes(w.getnframes()))
    return data, rate


def _dbfs(value: float) -> float:
    return 20 * math.log10(value / 32768) if value > 0 else -120.0


def clipped_runs(samples: array.array) -> int:
    """Runs of two or more consecutive samples at the top of the range: clipping flattens
    peaks into such plateaus; a loud but clean recording touches the top only in passing."""
    runs, run = 0, 0
    for x in samples:
        if x >= CLIP_LEVEL or x <= -CLIP_LEVEL:
            run += 1
            if run == 2:
                runs += 1
        else:
            run = 0
    return runs


def sound_span(samples: array.array, rate: int) -> tuple[int, int, float]:
    """(first, last) sample of the frames louder than SPEECH_DBFS, and seconds of them."""
    n = max(1, int(rate * FRAME_S))
    first = last = -1
    loud = 0
    threshold = (32768 * 10 ** (SPEECH_DBFS / 20)) ** 2 * n
    for start in range(0, len(samples), n):
        frame = samples[start:start + n]
        if sum(x * x for x in frame) >= threshold:
            loud += 1
            last = start + len(frame)
            if first < 0:
                first = start
    return first, last, loud * n / rate


def check_levels(samples: array.array, rate: int) -> tuple[float, float, float]:
    """(start s, end s, input peak dBFS) of what to keep; AudioRefused with the reason."""
    total = len(samples) / rate
    if total > MAX_SECONDS:
        raise AudioRefused("too_long", f"The recording is longer than {MAX_SECONDS:g} s. "
                                       "A prompt takes a few seconds: record just its text.")
    peak = max((abs(x) for x in samples), default=0)
    if _dbfs(peak) < SILENT_PEAK_DBFS:
        raise AudioRefused("silent", f"We heard only silence (loudest sound {_dbfs(peak):.0f} dBFS). "
                                     "Check that the microphone is on and not muted, and speak "
                                     "close to it.")
    if _dbfs(peak) < QUIET_PEAK_DBFS:
        raise AudioRefused("too_quiet", f"The recording is too quiet (loudest sound "
                                        f"{_dbfs(peak):.0f} dBFS). Speak closer to the "
                                        "microphone, or raise its input level.")
    first, last, speech_s = sound_span(samples, rate)
    if first < 0 or speech_s < MIN_SPEECH_S:
        raise AudioRefused("silent", f"We heard no speech, only {speech_s:.1f} s of sound (a click "
                                     "or a bump?). Record the prompt's text again.")
    runs = clipped_runs(samples)
    if runs >= CLIP_RUNS:
        raise AudioRefused("clipped", f"The sound was too loud for the microphone and is "
                                      f"distorted (clipped in {runs} places). Speak a little "
                                      "further from it, or lower its input level, and record "
                                      "again.")
    start = max(0.0, first / rate - LEAD_S)
    end = min(total, last / rate + TAIL_S)
    if end - start < MIN_SECONDS:
        raise AudioRefused("too_short", f"The recording is shorter than {MIN_SECONDS:g} s.")
    return start, end, _dbfs(peak)


def prepare(stream: BinaryIO) -> Prepared:
    """Read an upload (at most MAX_BYTES), check it and convert it; AudioRefused if not."""
    with tempfile.TemporaryDirectory(prefix="pr-recording-") as tmp:
        work = Path(tmp)
        upload = work / "upload.bin"  # our name: nothing of the sender's file name is used
        size = 0
        with open(upload, "wb") as out:
            while chunk := stream.read(64 * 1024):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise AudioRefused("too_big", too_big_message())
                out.write(chunk)
        if size == 0:
            raise AudioRefused("empty", "The file is empty.")
        with open(upload, "rb") as f:
            kind = sniff(f.read(16))
        _sox(["-t", kind, upload.name, "-t", "wav", "-e", "signed-integer", "-b", "16", "-c", "1",
              "decoded.wav", "rate", str(ANALYSIS_RATE), "trim", "0", f"{MAX_SECONDS + 1:g}"],
             work)
        samples, rate = _samples(work / "decoded.wav")
        start, end, peak = check_levels(samples, rate)
        _sox(["decoded.wav", "-r", str(OUTPUT_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
              "final.wav", "trim", f"{start:.3f}", f"={end:.3f}", "gain", "-n", f"{TARGET_PEAK_DB:g}"],
             work)
        data = (work / "final.wav").read_bytes()
        with wave.open(str(work / "final.wav"), "rb") as w:
            seconds = w.getnframes() / w.getframerate()
    return Prepared(data, round(seconds, 2), hashlib.sha256(data).hexdigest(), round(peak, 1))


def too_big_message() -> str:
    return (f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB. A prompt is a few "
            f"seconds: trim the recording, or export it as mono {ACCEPTED}.")
