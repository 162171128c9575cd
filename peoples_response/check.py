"""``peoples-response check``: every problem with the configuration, in words to act on.

Settings themselves are validated when loaded (crisisline.config); this adds what needs
files or other parts: the prompt catalog and its audio, the dialplan's own settings.
Exit status 0 = ready; 1 = problems listed.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from crisisline import destinations
from crisisline.config import ROOT, Settings

DIALPLAN = ROOT / "dialplan" / "extensions.conf"
Check = Callable[[Settings], list[str]]


def check_prompts(settings: Settings) -> list[str]:
    from crisisline.ivr import menu_pages
    from crisisline.prompts.availability import missing_caller_audio
    from crisisline.prompts.catalog import load_catalog
    from crisisline.prompts.overlay import apply_reviews, conflicts
    from crisisline.prompts.render import audio_status, has_voice
    from crisisline.prompts.review_state import outdated_recordings
    from crisisline.prompts.reviews import read_all

    problems = []
    try:
        shipped = load_catalog()
    except (OSError, ValueError) as exc:
        return [f"prompt catalog: {exc}"]
    try:
        rows = read_all(settings, migrate=False)  # check changes nothing, not even the schema
    except Exception as exc:
        rows = []
        problems.append(f"prompt reviews: can't read the reviewers' texts from SQL ({exc}); "
                        "what follows is about the shipped catalog alone")
    # The catalog the line speaks: a reviewer's text fills what the shipped one lacks.
    catalog = apply_reviews(shipped, rows)
    for c in conflicts(shipped, rows):
        problems.append(f"prompt {c.language}/{c.prompt}: this release changed the text a reviewer "
                        "worked on; the line keeps the reviewer's until one chooses on the review "
                        "page (the panel's Prompt review)")
    for lang, name in outdated_recordings(settings, shipped, rows):
        problems.append(f"recording {lang}/{name} reads an earlier text than the line's (a corrected "
                        "text, or a key moved in PR_LANGUAGES); record it again on the review page")
    for name, lang in catalog.missing():
        problems.append(f"prompt {name!r} has no text in {lang!r}")
    for lang in settings.languages:
        if lang not in catalog.languages:
            problems.append(f"language {lang!r} is configured but the prompt catalog has no such "
                            "language")
    status = audio_status(settings, catalog)
    for lang in settings.languages:
        absent = missing_caller_audio(settings, catalog, lang) if lang in catalog.languages else []
        if absent:
            voice = catalog.languages[lang].voice
            why = ("" if has_voice(voice) else
                   f"; espeak-ng has no voice {voice!r}, so only human recordings can fill them")
            problems.append(
                f"language {lang!r} is left off the language menu: no audio for "
                f"{', '.join(f'{lang}/{n}' for n in absent)}{why}")
        missing = [n for n in status.get(lang, {}).get("missing_audio", []) if n not in absent]
        if missing:
            names = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
            problems.append(f"{len(missing)} prompt(s) in {lang!r} have no audio ({names}); "
                            "run: peoples-response prompts render")
    from crisisline.textflow import TEXTER_PROMPTS

    for lang in settings.languages:
        lacking = [n for n in TEXTER_PROMPTS if n in catalog.prompts
                   and lang in catalog.languages and lang not in catalog.prompts[n].texts]
        if lacking and lang != settings.default_language:
            problems.append(f"text line: texters who choose {lang!r} are written to in "
                            f"{settings.default_language!r} (no text for {', '.join(lacking[:3])}"
                            f"{', ...' if len(lacking) > 3 else ''} in the prompt catalog)")
    pages = menu_pages(settings.languages, settings.menu_page_size)
    if len(pages) > 2:
        problems.append(f"the language menu needs {len(pages)} pages: callers of the last "
                        "languages press 9 twice; raise menu_page_size or list fewer languages")
    return problems


def dialplan_globals(path: Path = DIALPLAN) -> dict[str, str]:
    out: dict[str, str] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(";", 1)[0].strip()
        if m := re.fullmatch(r"\[([^\]]+)\]", line):
            section = m.group(1)
        elif section == "globals" and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def check_dialplan(settings: Settings) -> list[str]:
    if not DIALPLAN.exists():
        return [f"dialplan {DIALPLAN} is missing"]
    problems = []
    globals_ = dialplan_globals()
    for dest in filter(None, globals_.get("PR_FALLBACK_DIAL", "").split("&")):
        target = dest.split("/", 1)[-1].split("@", 1)[0]
        if dest.startswith("PJSIP/") and "@" not in dest:
            continue  # an endpoint of our own PBX
        reason = destinations.refusal(target, settings)
        if reason:
            problems.append(f"dialplan PR_FALLBACK_DIAL: {reason}")
    if not globals_.get("PR_FALLBACK_DIAL"):
        problems.append("dialplan PR_FALLBACK_DIAL is empty: callers would have no fallback group")
    return problems


def fallback_targets(settings: Settings) -> list[str]:
    """PR_FALLBACK_DIAL as the running Asterisk has it (the environment the entrypoint
    reads, else the dialplan's default), one target each."""
    dial = os.environ.get("PR_FALLBACK_DIAL") or dialplan_globals().get("PR_FALLBACK_DIAL", "")
    return [t for t in dial.split("&") if t]


async def _desk_contacts(settings: Settings, endpoints: list[str]) -> dict[str, int] | None:
    """Registered contacts per desk endpoint, asked of Asterisk over AMI (PJSIPShowContacts);
    None when Asterisk can't be asked."""
    from peoples_response.up import read_runtime

    runtime = read_runtime(settings)
    host, port = settings.ami_host, settings.ami_port
    secret = settings.ami_secret or runtime.get("ami_secret", "")
    if runtime.get("ami"):
        host, _, p = runtime["ami"].rpartition(":")
        port = int(p)
    if not secret:
        return None
    from localpbx.ami import AmiConnection

    try:
        conn = await AmiConnection.connect(host, port, settings.ami_user, secret, events="off",
                                           timeout=3)
    except Exception:
        return None
    try:
        reply = await conn.action({"Action": "PJSIPShowContacts"}, timeout=5)
    except Exception:
        return None
    finally:
        await conn.close()
    items = reply.get("_items", []) if reply.get("Response") == "Success" else []
    if reply.get("Response") == "Error" and "No Contacts found" not in reply.get("Message", ""):
        return None
    counts = dict.fromkeys(endpoints, 0)
    for item in items:  # type: ignore[union-attr]
        if item.get("Endpoint") in counts:
            counts[item["Endpoint"]] += 1
    return counts


def check_fallback(settings: Settings) -> list[str]:
    """Is any fallback destination reachable now? A number through a trunk counts as
    reachable; a desk phone only while it is registered. With none, a caller the line can't
    place would wait with no one to reach: say so before it happens."""
    targets = fallback_targets(settings)
    numbers = [t for t in targets if "@" in t or not t.startswith("PJSIP/")]
    if numbers or settings.fallback_numbers:
        return []
    desks = [t.split("/", 2)[1] for t in targets if t.startswith("PJSIP/")]
    if not desks:
        return ["fallback: PR_FALLBACK_DIAL names nothing to dial"]
    counts = asyncio.run(_desk_contacts(settings, desks))
    if counts is None:
        print(f"peoples-response check: warning: could not ask Asterisk whether the fallback "
              f"desk ({', '.join(desks)}) is registered; make sure it is", file=sys.stderr)
        return []
    if not any(counts.values()):
        return [f"fallback: no fallback destination is reachable: the desk phone "
                f"({', '.join(desks)}) is not registered and no number is configured "
                "(PR_FALLBACK_DIAL with PJSIP/<number>@direct-trunk, or PR_FALLBACK_NUMBERS); "
                "a caller the line can't place would reach no one"]
    return []


CHECKS: list[tuple[str, Check]] = [
    ("prompts", check_prompts),
    ("dialplan", check_dialplan),
    ("fallback", check_fallback),
]


def run(settings: Settings, out: TextIO) -> int:
    problems: list[str] = []
    for name, check in CHECKS:
        try:
            problems.extend(check(settings))
        except Exception as exc:
            problems.append(f"{name}: the check itself failed: {exc}")
    if problems:
        print(f"peoples-response check: {len(problems)} problem(s):", file=out)
        for problem in problems:
            print(f"  - {problem}", file=out)
        return 1
    print("peoples-response check: configuration OK "
          f"(languages {', '.join(settings.languages)}; time zone {settings.timezone})", file=out)
    return 0
