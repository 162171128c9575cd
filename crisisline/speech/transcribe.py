"""Turn a recorded caller message (a WAV file) into text with a loaded Vosk model.

The IVR records with Asterisk's RECORD FILE: 8 kHz, mono, 16-bit PCM WAV. That is the one
format decoded directly. Anything else sox can read (another rate, stereo, 8/24-bit, µ-law,
float) is converted with sox to 8 kHz mono 16-bit first, so every message goes through the
same telephone-band path the model is tested on; below 8 kHz is rejected (too little of the
voice band to recognize). Files that are missing, empty or not a WAV raise :class:`AudioError`
with a reason a person can read; they are never retried, because retrying can't fix them.

Work is bounded: decoding stops at ``max_seconds`` of audio and the result says it was
truncated, so a 10-minute recording can't hold a worker for minutes.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGET_RATE = 8000
MIN_RATE = 8000
CHUNK_S = 0.25  # small chunks: a job timeout (SIGALRM) is handled between chunks
SOX_TIMEOUT_S = 60.0
CHOICE_MAX_S = 10.0  # a spoken menu choice is a word or two
# A window of speech is louder than this RMS (16-bit PCM; about -47 dBFS). Digital silence and
# line hiss sit far below it; a quiet telephone voice sits well above.
SPEECH_RMS = 150
SPEECH_WINDOW_S = 0.1


class AudioError(ValueError):
    """The recording can't be decoded; ``reason`` says why in one line."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[dict[str, Any]] = field(default_factory=list)  # word, start, end, conf
    duration_s: float = 0.0  # seconds of audio decoded (after any truncation)
    decode_s: float = 0.0    # wall-clock seconds spent in the recognizer
    truncated: bool = False  # the recording was longer than max_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_header(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    with path.open("rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(path, "not a WAV file (no RIFF/WAVE header)")


def _convert(path: Path) -> Path:
    """sox the file to 8 kHz mono 16-bit next to the original (retention sweeps that folder
    if a crash leaves it behind) and return the new path."""
    fd, tmp = tempfile.mkstemp(prefix=".converted-", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            ["sox", "-V1", str(path), "-r", str(TARGET_RATE), "-c", "1", "-b", "16",
             "-e", "signed-integer", tmp],
            capture_output=True, text=True, timeout=SOX_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise AudioError(path, f"could not convert with sox ({exc})") from exc
    if done.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        detail = (done.stderr.strip().splitlines() or ["unreadable audio"])[-1]
        raise AudioError(path, f"could not convert with sox: {detail}")
    return Path(tmp)


def check_wav(path: str | os.PathLike[str]) -> None:
    """Raise :class:`AudioError` now if the file can't be a usable recording (cheap: headers
    only, no conversion), e.g. before spending seconds loading a model for it."""
    src = Path(path)
    _check_header(src)
    try:
        with wave.open(str(src), "rb") as reader:
            rate = reader.getframerate()
    except wave.Error as exc:
        if "unknown format" in str(exc):
            return  # sox will be asked to convert it
        raise AudioError(src, f"corrupt WAV header ({exc})") from exc
    except EOFError as exc:
        raise AudioError(src, "corrupt WAV header (file ends inside the header)") from exc
    if rate < MIN_RATE:
        raise AudioError(src, f"sample rate {rate} Hz is below {MIN_RATE} Hz")


@contextlib.contextmanager
def open_pcm(path: str | os.PathLike[str]) -> Iterator[wave.Wave_read]:
    """A validated 8 kHz mono 16-bit reader for ``path``, converting with sox when needed."""
    src = Path(path)
    check_wav(src)
    converted: Path | None = None
    try:
        try:
            reader: wave.Wave_read | None = wave.open(str(src), "rb")
        except wave.Error:
            reader = None  # a codec the wave module can't read (check_wav let only that by)
        if reader is not None:
            if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
                    TARGET_RATE, 1, 2):
                with reader:
                    yield reader
                return
            reader.close()
        converted = _convert(src)
        try:
            reader = wave.open(str(converted), "rb")
        except (wave.Error, EOFError) as exc:
            raise AudioError(src, f"sox produced an unreadable file ({exc})") from exc
        with reader:
            yield reader
    finally:
        if converted is not None:
            converted.unlink(missing_ok=True)


def _words(result_json: str) -> tuple[str, list[dict[str, Any]]]:
    result = json.loads(result_json)
    words = [{"word": w["word"], "start": round(float(w["start"]), 2),
              "end": round(float(w["end"]), 2), "conf": round(float(w["conf"]), 3)}
             for w in result.get("result", [])]
    return result.get("text", "").strip(), words


def _decode(recognizer: Any, reader: wave.Wave_read,
            max_seconds: float | None) -> tuple[list[str], list[dict[str, Any]], int, bool, float]:
    """Feed the recognizer chunk by chunk up to the cap; texts, words, frames, truncated, secs."""
    rate = reader.getframerate()
    cap = None if max_seconds is None else max(0, int(max_seconds * rate))
    chunk = max(1, int(CHUNK_S * rate))
    texts: list[str] = []
    words: list[dict[str, Any]] = []
    frames = 0
    truncated = False
    started = time.perf_counter()
    while True:
        want = chunk if cap is None else min(chunk, cap - frames)
        if want <= 0:
            # At the cap: there is more only if the reader still has frames.
            truncated = bool(reader.readframes(1))
            break
        data = reader.readframes(want)
        if not data:
            break
        frames += len(data) // 2
        if recognizer.AcceptWaveform(data):
            text, ws = _words(recognizer.Result())
            if text:
                texts.append(text)
            words.extend(ws)
    text, ws = _words(recognizer.FinalResult())
    if text:
        texts.append(text)
    words.extend(ws)
    return texts, words, frames, truncated, time.perf_counter() - started


def transcribe_wav(model: Any, path: str | os.PathLike[str],
                   max_seconds: float | None) -> Transcript:
    """Transcribe up to ``max_seconds`` of the recording (None: all of it)."""
    from vosk import KaldiRecognizer

    with open_pcm(path) as reader:
        recognizer = KaldiRecognizer(model, reader.getframerate())
        recognizer.SetWords(True)
        texts, words, frames, truncated, decode_s = _decode(recognizer, reader, max_seconds)
        rate = reader.getframerate()
    return Transcript(text=" ".join(texts), words=words, duration_s=round(frames / rate, 3),
                      decode_s=round(decode_s, 3), truncated=truncated)


def has_speech(reader: wave.Wave_read, max_seconds: float) -> bool:
    """Whether any short window of the first ``max_seconds`` is loud enough to be speech.

    A grammar recognizer forced to choose among a few words can map faint noise onto one
    of them; a caller who said nothing must never be heard as choosing. Leaves the reader
    rewound.
    """
    rate = reader.getframerate()
    window = max(1, int(SPEECH_WINDOW_S * rate))
    left = int(max_seconds * rate)
    found = False
    try:
        while left > 0 and not found:
            data = reader.readframes(min(window, left))
            if len(data) < 2:
                break
            samples = array.array("h")
            samples.frombytes(data[:len(data) - len(data) % 2])
            if sys.byteorder == "big":
                samples.byteswap()  # WAV is little-endian
            left -= len(samples)
            rms = math.sqrt(sum(x * x for x in samples) / len(samples))
            found = rms > SPEECH_RMS
    finally:
        reader.rewind()
    return found


def usable_choices(model: Any, choices: Sequence[str]) -> list[str]:
    """The choices whose every word is in the model's vocabulary (others can't be heard)."""
    return [c for c in choices
            if c.split() and all(model.vosk_model_find_word(w) != -1 for w in c.split())]


def recognize_choice(model: Any, path: str | os.PathLike[str],
                     choices: Sequence[str]) -> str | None:
    """Which of ``choices`` was said, recognizing only those words; None when none was.

    The grammar must be dumped with ``ensure_ascii=False``: Vosk silently drops ``\\uXXXX``
    escapes, which would drop every Korean word. "[unk]" is added when the model has it so
    other speech maps to it instead of being forced onto a choice.
    """
    from vosk import KaldiRecognizer

    usable = usable_choices(model, choices)
    if not usable:
        return None
    vocabulary = list(dict.fromkeys(w for c in usable for w in c.split()))
    if model.vosk_model_find_word("[unk]") != -1:
        vocabulary.append("[unk]")
    grammar = json.dumps(vocabulary, ensure_ascii=False)
    with open_pcm(path) as reader:
        if not has_speech(reader, CHOICE_MAX_S):
            return None
        recognizer = KaldiRecognizer(model, reader.getframerate(), grammar)
        texts, _, _, _, _ = _decode(recognizer, reader, CHOICE_MAX_S)
    heard = " ".join(texts).split()
    best: tuple[int, int, str] | None = None  # (position heard, -length, choice)
    for choice in usable:
        tokens = choice.split()
        for pos in range(len(heard) - len(tokens) + 1):
            if heard[pos:pos + len(tokens)] == tokens:
                candidate = (pos, -len(tokens), choice)
                if best is None or candidate < best:
                    best = candidate
                break
    return best[2] if best else None
