"""What we keep of who is calling: an E.164 number, or nothing.

Caller ID comes from the other end of a phone network and is not trusted: it can be
anonymous, withheld, malformed, or 10 KB of junk. None of that may crash a call.
"""

from __future__ import annotations

import phonenumbers

MAX_CALLER_ID = 64
_WITHHELD = {"", "unknown", "anonymous", "restricted", "private", "unavailable", "withheld",
             "blocked", "asterisk"}


def presentation_allowed(callingpres: str | int | None) -> bool:
    """Q.931 presentation indicator: bits 0x60 = 0 means the caller lets us see the number."""
    try:
        value = int(str(callingpres).strip())
    except (TypeError, ValueError):
        return True  # unknown: fall back to whether the number itself is usable
    return value & 0x60 == 0


def normalize_number(raw: str | None, region: str = "US",
                     callingpres: str | int | None = None) -> str | None:
    """E.164 for a usable, presented number; None for anything else."""
    if raw is None or len(raw) > MAX_CALLER_ID:
        return None
    text = raw.strip()
    if text.lower() in _WITHHELD or not presentation_allowed(callingpres):
        return None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
