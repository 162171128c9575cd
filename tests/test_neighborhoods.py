"""Boston ZIP codes -> neighborhoods."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from crisisline.neighborhoods import all_neighborhoods, neighborhood_for_zip, slug

RESIDENTIAL = ["02108", "02109", "02110", "02111", "02113", "02114", "02115", "02116", "02118",
               "02119", "02120", "02121", "02122", "02124", "02125", "02126", "02127", "02128",
               "02129", "02130", "02131", "02132", "02134", "02135", "02136", "02163", "02199",
               "02210", "02215", "02467"]


def rows() -> list[dict[str, str]]:
    text = (resources.files("crisisline") / "data" / "boston_zips.csv").read_text("utf-8")
    return list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))


def test_data_file_lists_each_zip_once_and_covers_the_city() -> None:
    zips = [r["zip"] for r in rows()]
    assert len(zips) == len(set(zips))
    assert sorted(zips) == sorted(RESIDENTIAL)
    assert all(r["neighborhood"] for r in rows())


@pytest.mark.parametrize("zip_code, expected", [
    ("02121", "Dorchester"), ("02124", "Dorchester"), ("02126", "Mattapan"),
    ("02128", "East Boston"), ("02130", "Jamaica Plain"), ("02136", "Hyde Park"),
    ("02210", "Seaport"), (" 02119 ", "Roxbury"), ("\t02127\n", "South Boston"),
    ("02134-1234", "Allston"),
])
def test_known_zips(zip_code: str, expected: str) -> None:
    assert neighborhood_for_zip(zip_code) == expected


@pytest.mark.parametrize("junk", [
    "02121#", "", "   ", "abcde", "99999", "02203", "2121", "021210", "0212", "02121-",
    "０２１２１", "02121\x00", "x" * 10_000, "0" * 10_000, "02121" * 2000, "*", "#",
])
def test_anything_else_is_none(junk: str) -> None:
    assert neighborhood_for_zip(junk) is None


def test_non_string_is_none() -> None:
    assert neighborhood_for_zip(None) is None  # type: ignore[arg-type]
    assert neighborhood_for_zip(2121) is None  # type: ignore[arg-type]


def test_all_neighborhoods_and_slugs() -> None:
    names = all_neighborhoods()
    assert names == sorted(set(names))
    for name in ("Dorchester", "Roxbury", "Mattapan", "Allston", "Brighton", "Back Bay",
                 "Beacon Hill", "Charlestown", "Chinatown", "Fenway", "Mission Hill",
                 "North End", "West End", "South End", "Roslindale", "West Roxbury"):
        assert name in names
    assert slug("Jamaica Plain") == "jamaica-plain"
    assert slug("  South  Boston ") == "south-boston"
    assert slug("Peña Street") == "pena-street"
    assert len({slug(n) for n in names}) == len(names)
