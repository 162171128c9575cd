"""Who may be dialled: never an emergency service, never the police.

Every place that turns configuration or a roster row into something Asterisk dials
(waves, fallback group, interpreter lines, callbacks) asks :func:`refusal` first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import shortnumberinfo

if TYPE_CHECKING:
    from crisisline.config import Settings

# SIP endpoints are allowed as destinations (a responder's desk phone on our PBX).
SIP_ENDPOINT = re.compile(r"^(?:PJSIP|SIP)/[A-Za-z0-9_.\-]{1,64}$")


def parse(number: str, region: str = "US") -> phonenumbers.PhoneNumber | None:
    """A valid phone number, or None."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def to_e164(number: str, region: str = "US") -> str | None:
    parsed = parse(number, region)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) if parsed else None


def is_emergency(number: str, region: str = "US") -> bool:
    """True for 911, 112, 999... in any spelling phonenumbers recognises for the region."""
    digits = re.sub(r"[^\d+]", "", number)
    if not digits:
        return False
    candidates = {digits, digits.lstrip("+")}
    if digits.startswith("+1") and region == "US":
        candidates.add(digits[2:])
    return any(
        shortnumberinfo.connects_to_emergency_number(c, region)
        or shortnumberinfo.is_emergency_number(c, region)
        for c in candidates
    )


def refusal(destination: str, settings: Settings) -> str | None:
    """Why this destination must never be dialled, or None when it may be."""
    destination = destination.strip()
    if SIP_ENDPOINT.match(destination):
        return None
    if is_emergency(destination, settings.region):
        return f"{destination} is an emergency number; this line never calls emergency services"
    e164 = to_e164(destination, settings.region)
    if e164 is None:
        return f"{destination!r} is not a valid phone number or SIP endpoint"
    police = {to_e164(p, settings.region) for p in settings.police_numbers}
    if e164 in police:
        return f"{destination} is listed as a police line; this line never calls the police"
    return None


def dial_string(destination: str) -> str:
    """What Asterisk dials for a destination that passed :func:`refusal`: a desk phone's
    endpoint as it is, a number through the carrier's trunk."""
    if destination.startswith(("PJSIP/", "SIP/")):
        return destination
    return f"PJSIP/{destination}@direct-trunk"
