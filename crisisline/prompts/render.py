"""Render the catalog to audio Asterisk can play: espeak-ng, then sox to 8 kHz mono s16 WAV.

Files go to ``settings.prompts_path/<lang>/<name>.wav``. A manifest
(``.rendered.json``: file -> sha256 of what we rendered from, and of what we wrote)
lets a second run skip unchanged prompts, and tells our renders apart from human
recordings: a file that is not in the manifest, or whose bytes are not the bytes we
wrote, is a recording and is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from crisisline.config import Settings
from crisisline.ivr import MORE_KEY, language_keys
from crisisline.neighborhoods import all_neighborhoods, slug
from crisisline.prompts.catalog import Catalog

MANIFEST = ".rendered.json"
RATE_WPM = 150  # a little slower than espeak-ng's 175: calmer, easier on a phone line
WORKERS = 2
Progress = Callable[[int, int, str], None]


class ToolMissing(RuntimeError):
    """espeak-ng or sox is not installed."""


@dataclass(frozen=True)
class Job:
    lang: str
    file: str  # file stem, e.g. "promise" or "whisper_language_es"
    prompt: str  # catalog prompt name
    text: str | None  # None: the catalog has no text for this language
    voice: str | None  # None: the catalog has no such language

    @property
    def rel(self) -> str:
        return f"{self.lang}/{self.file}.wav"

    @property
    def source_hash(self) -> str:
        return _sha(f"espeak-ng\n{self.voice}\n{RATE_WPM}\n{self.text}".encode())


@dataclass
class RenderReport:
    rendered: list[str] = field(default_factory=list)  # "en/promise.wav"
    unchanged: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # human recordings, left alone
    missing_audio: list[str] = field(default_factory=list)  # no text or no voice
    problems: list[str] = field(default_factory=list)  # one line per missing_audio reason

    @property
    def total(self) -> int:
        return len(self.rendered) + len(self.unchanged) + len(self.recorded) \
            + len(self.missing_audio)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_tools() -> None:
    absent = [(tool, pkg) for tool, pkg in (("espeak-ng", "espeak-ng"), ("sox", "sox"))
              if shutil.which(tool) is None]
    if absent:
        names = ", ".join(t for t, _ in absent)
        pkgs = " ".join(p for _, p in absent)
        raise ToolMissing(f"{names} not found on PATH; install the Debian packages: "
                          f"sudo apt-get install {pkgs}")


@cache
def espeak_voices() -> frozenset[str]:
    """Every voice name and voice file espeak-ng knows, lower-cased."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True,
                         check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1].lower())
            names.add(cols[4].lower().rsplit("/", 1)[-1])
            names.add(cols[4].lower())
    return frozenset(names)


def has_voice(voice: str) -> bool:
    return voice.split("+", 1)[0].lower() in espeak_voices()


def plan(settings: Settings, catalog: Catalog,
         languages: Iterable[str] | None = None) -> list[Job]:
    """Every file the line needs, in each language asked for (default: settings.languages)."""
    langs = list(settings.languages if languages is None else languages)
    keys = language_keys(settings.languages, settings.menu_page_size)
    callers_langs = [c for c in settings.languages if c in catalog.languages]
    jobs: list[Job] = []
    for lang in langs:
        info = catalog.languages.get(lang)
        voice = info.voice if info else None
        for name, prompt in catalog.prompts.items():
            if prompt.audience == "texter":
                continue  # the text line's words are read, never heard
            has = lang in prompt.texts
            if prompt.audience == "responder" and not has and lang != "en":
                continue  # responder prompts are optional beyond English
            if name == "whisper_language":
                for caller in callers_langs:
                    text = catalog.text(name, lang, language=catalog.languages[caller]
                                        .name_in(lang)) if has else None
                    jobs.append(Job(lang, f"{name}_{caller}", name, text, voice))
                continue
            if name == "neighborhood":
                # The whisper plays neighborhood_<slug>; one file per Boston neighborhood.
                for hood in all_neighborhoods():
                    text = catalog.text(name, lang, neighborhood=hood) if has else None
                    jobs.append(Job(lang, f"{name}_{slug(hood)}", name, text, voice))
                continue
            fields = {"key": keys.get(lang, "1") if name == "language_option" else MORE_KEY}
            text = catalog.text(name, lang, **fields) if has else None
            jobs.append(Job(lang, name, name, text, voice))
    return jobs


def _read_manifest(root: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(root: Path, manifest: dict[str, dict[str, str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


@contextlib.contextmanager
def manifest_lock(root: Path) -> Iterator[None]:
    """One writer of the manifest at a time, across processes: the panel re-renders a
    corrected prompt while `prompts render` may be running (an flock on a file of its own)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{MANIFEST}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _merge_manifest(root: Path, changes: dict[str, dict[str, str]]) -> None:
    """Write only our own entries over what is on disk now (another writer may have
    added its own since we read it)."""
    if not changes:
        return
    with manifest_lock(root):
        manifest = _read_manifest(root)
        manifest.update(changes)
        _write_manifest(root, manifest)


def _is_recording(path: Path, entry: dict[str, str] | None) -> bool:
    return entry is None or _sha(path.read_bytes()) != entry.get("output")


def _render_one(job: Job, dest: Path) -> str:
    """Render to dest atomically; return the sha256 of the bytes written."""
    assert job.text is not None and job.voice is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render-", dir=dest.parent) as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", job.voice, "-s", str(RATE_WPM), "-w", str(raw),
                        "--stdin"], input=job.text.encode(), capture_output=True, check=True)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(out)], capture_output=True, check=True)
        digest = _sha(out.read_bytes())
        os.replace(out, dest)
    return digest


def speak_text(text: str, voice: str, dest: Path, timeout_s: float = 15.0) -> Path:
    """Free text (a transferring center's note) to audio Asterisk plays, atomically. The
    text goes through standard input, never the command line."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speak-", dir=dest.parent) as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(RATE_WPM), "-w", str(raw), "--stdin"],
                       input=text.encode(), capture_output=True, check=True, timeout=timeout_s)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(out)], capture_output=True, check=True,
                       timeout=timeout_s)
        os.replace(out, dest)
    return dest


def render_all(settings: Settings, catalog: Catalog, languages: Iterable[str] | None = None,
               progress: Progress | None = None, force: bool = False) -> RenderReport:
    """Render what changed; never overwrite a human recording. ``force`` re-renders our own."""
    check_tools()
    root = settings.prompts_path
    manifest = _read_manifest(root)
    report = RenderReport()
    jobs = plan(settings, catalog, languages)
    total, done = len(jobs), 0
    todo: list[Job] = []

    def step(job: Job) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, job.rel)

    for job in jobs:
        path = root / job.rel
        if job.text is None or job.voice is None or not has_voice(job.voice):
            why = ("no text" if job.text is None
                   else f"espeak-ng has no voice {job.voice!r}" if job.voice
                   else "language not in catalog")
            if path.exists() and _is_recording(path, manifest.get(job.rel)):
                report.recorded.append(job.rel)
            else:
                report.missing_audio.append(job.rel)
                report.problems.append(f"{job.rel}: {why}")
            step(job)
        elif path.exists() and _is_recording(path, manifest.get(job.rel)):
            report.recorded.append(job.rel)
            step(job)
        elif path.exists() and not force \
                and manifest[job.rel].get("source") == job.source_hash:
            report.unchanged.append(job.rel)
            step(job)
        else:
            todo.append(job)

    changes: dict[str, dict[str, str]] = {}
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {pool.submit(_render_one, job, root / job.rel): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    digest = future.result()
                except subprocess.CalledProcessError as exc:
                    err = (exc.stderr or b"").decode(errors="replace").strip()
                    report.missing_audio.append(job.rel)
                    report.problems.append(f"{job.rel}: {exc.cmd[0]} failed: {err}")
                else:
                    changes[job.rel] = {"source": job.source_hash, "output": digest}
                    report.rendered.append(job.rel)
                step(job)
    finally:
        _merge_manifest(root, changes)
    for items in (report.rendered, report.unchanged, report.recorded, report.missing_audio):
        items.sort()
    return report


def render_prompt(settings: Settings, catalog: Catalog, lang: str, prompt: str) -> RenderReport:
    """Render the files of one prompt in one language now (the panel, after a reviewer
    corrected its text). A human recording at the same path is still never overwritten."""
    check_tools()
    root = settings.prompts_path
    jobs = [j for j in plan(settings, catalog, [lang]) if j.prompt == prompt]
    report = RenderReport()
    changes: dict[str, dict[str, str]] = {}
    manifest = _read_manifest(root)
    for job in jobs:
        path = root / job.rel
        if path.exists() and _is_recording(path, manifest.get(job.rel)):
            report.recorded.append(job.rel)
        elif job.text is None or job.voice is None or not has_voice(job.voice):
            report.missing_audio.append(job.rel)
            report.problems.append(f"{job.rel}: " + ("no text" if job.text is None else
                                                     f"espeak-ng has no voice {job.voice!r}"))
        elif path.exists() and manifest.get(job.rel, {}).get("source") == job.source_hash:
            report.unchanged.append(job.rel)
        else:
            try:
                changes[job.rel] = {"source": job.source_hash,
                                    "output": _render_one(job, path)}
                report.rendered.append(job.rel)
            except subprocess.CalledProcessError as exc:
                err = (exc.stderr or b"").decode(errors="replace").strip()
                report.missing_audio.append(job.rel)
                report.problems.append(f"{job.rel}: {exc.cmd[0]} failed: {err}")
    _merge_manifest(root, changes)
    return report


def is_rendered(settings: Settings, rel: str) -> bool:
    """Whether the file at ``rel`` ("so/promise.wav") is audio we rendered (not a recording)."""
    path = settings.prompts_path / rel
    return path.exists() and not _is_recording(path, _read_manifest(settings.prompts_path).get(rel))


def audio_status(settings: Settings, catalog: Catalog) -> dict[str, dict[str, list[str]]]:
    """Per language: which files are reviewed renders, draft renders, missing, or recorded.

    Values are sorted lists of file stems (``len()`` them for counts). A rendered file
    whose text changed since it was rendered counts as missing until it is rendered again.
    """
    root = settings.prompts_path
    manifest = _read_manifest(root)
    out: dict[str, dict[str, list[str]]] = {}
    for job in plan(settings, catalog):
        row = out.setdefault(job.lang, {"reviewed": [], "draft": [], "missing_audio": [],
                                        "recorded": []})
        path = root / job.rel
        entry = manifest.get(job.rel)
        if not path.exists():
            row["missing_audio"].append(job.file)
        elif _is_recording(path, entry):
            row["recorded"].append(job.file)
        elif job.text is None or entry is None or entry.get("source") != job.source_hash:
            row["missing_audio"].append(job.file)
        else:
            row[catalog.status(job.prompt, job.lang)].append(job.file)
    for row in out.values():
        for items in row.values():
            items.sort()
    return out
