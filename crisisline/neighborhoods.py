"""Boston ZIP code -> neighborhood, from crisisline/data/boston_zips.csv (loaded once)."""

from __future__ import annotations

import csv
import re
import unicodedata
from functools import cache
from importlib import resources

_ZIP = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")  # ASCII digits only; ZIP+4 accepted


@cache
def _table() -> dict[str, str]:
    text = (resources.files("crisisline") / "data" / "boston_zips.csv").read_text(
        encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines()
                          if line.strip() and not line.lstrip().startswith("#"))
    return {row["zip"].strip(): row["neighborhood"].strip() for row in rows}


def neighborhood_for_zip(zip_code: str) -> str | None:
    """The neighborhood for a Boston ZIP; None for anything else. Never raises."""
    if not isinstance(zip_code, str) or len(zip_code) > 40:
        return None
    match = _ZIP.fullmatch(zip_code.strip())
    return _table().get(match.group(1)) if match else None


def all_neighborhoods() -> list[str]:
    return sorted(set(_table().values()))


def slug(neighborhood: str) -> str:
    """'Jamaica Plain' -> 'jamaica-plain': for file names, team ids and URLs."""
    ascii_text = unicodedata.normalize("NFKD", neighborhood).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
