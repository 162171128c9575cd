"""``peoples-response transcribe FILE.wav --language LANG``: one file, one JSON object.

For operators checking a model or a recording by hand. Success prints exactly one JSON object
on stdout and exits 0; an unreadable file (exit 1) or a language without a usable model
(exit 2) prints one line on stderr and nothing on stdout, so scripts can rely on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from crisisline.config import Settings
from crisisline.speech.models import ModelLoadError, ModelRegistry
from crisisline.speech.transcribe import AudioError, check_wav, transcribe_wav

EXIT_BAD_AUDIO = 1
EXIT_NO_MODEL = 2


def transcribe_command(settings: Settings, path: str, language: str,
                       out: IO[str] | None = None, err: IO[str] | None = None,
                       registry: ModelRegistry | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        check_wav(path)  # a bad file is reported without first loading a model for seconds
    except AudioError as exc:
        print(f"transcribe: {exc}", file=err)
        return EXIT_BAD_AUDIO
    try:
        model = (registry or ModelRegistry(settings)).get(language)
    except ModelLoadError as exc:
        print(f"transcribe: {exc}", file=err)
        return EXIT_NO_MODEL
    if model is None:
        print(f"transcribe: no speech model for language {language!r} (set vosk_models."
              f"{language} or install vosk-model-{language})", file=err)
        return EXIT_NO_MODEL
    try:
        # An operator asked for this file: decode all of it (the worker caps its work).
        result = transcribe_wav(model, path, None)
    except AudioError as exc:
        print(f"transcribe: {exc}", file=err)
        return EXIT_BAD_AUDIO
    json.dump({"text": result.text, "words": result.words, "duration_s": result.duration_s,
               "decode_s": result.decode_s, "truncated": result.truncated},
              out, ensure_ascii=False)
    out.write("\n")
    return 0
