"""Settings are validated in one place; caller IDs and destinations are never trusted."""

from __future__ import annotations

import pytest

from crisisline import config, destinations
from crisisline.callers import normalize_number


def test_defaults_are_valid_and_safe():
    s = config.load(env={})
    # Boston is the default: its languages in menu order (those without audio are left off
    # the menu by themselves).
    assert s.languages == ("en", "es", "ht", "kea", "pt", "yue", "cmn", "vi", "ar", "so", "ru",
                           "fr", "am") and s.default_language == "en"
    assert s.asterisk == "auto" and s.ring_during_intake and s.wrapup_s == 60
    assert (s.reassure_s, s.unattended_s, s.language_wait_s) == (45, 45, 30)
    assert s.priority_for("911") < s.priority_for("988") < s.priority_for("direct")
    assert s.sql_url.startswith("sqlite:///")


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "pr.toml"
    path.write_text('agi_port = 4600\nlanguages = ["es", "en"]\n')
    s = config.load(path, env={"PR_AGI_PORT": "4700", "PR_PRIORITIES": "911=0,988=0,direct=1"})
    assert s.agi_port == 4700 and s.languages == ("es", "en")
    assert s.priority_for("988") == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PR_AGI_PORT": "seventy"}, "agi_port"),
        ({"PR_AGI_PORT": "70000"}, "agi_port must be a TCP port"),
        ({"PR_TIMEZONE": "Mars/Olympus"}, "not a known IANA time zone"),
        ({"PR_DEFAULT_LANGUAGE": "de"}, "default_language 'de' is not in languages"),
        ({"PR_CLOCK": "tomorrow-ish"}, "clock: 'tomorrow-ish' is not a date and time"),
        ({"PR_ASTERISK": "freepbx"}, "asterisk must be one of"),
        ({"PR_FALLBACK_NUMBERS": "911"}, "emergency number"),
        ({"PR_FALLBACK_NUMBERS": "+1 617 343 4500"}, "police line"),
        ({"PR_PRIORITIES": "911=0"}, "no entry for source 'direct'"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(env=env)


def test_secrets_are_refused_in_a_file(tmp_path):
    path = tmp_path / "pr.toml"
    path.write_text('ami_secret = "hunter2"\n')
    with pytest.raises(config.ConfigError, match="PR_AMI_SECRET"):
        config.load(path, env={})


def test_unknown_setting_in_a_file_is_named(tmp_path):
    path = tmp_path / "pr.toml"
    path.write_text("agi_prot = 1\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'agi_prot'"):
        config.load(path, env={})


@pytest.mark.parametrize("number", ["911", "+1 911", "112", "9-1-1"])
def test_emergency_numbers_are_never_destinations(number):
    assert "emergency" in destinations.refusal(number, config.load(env={}))


@pytest.mark.parametrize(
    ("raw", "pres", "expected"),
    [
        ("6175550123", "0", "+16175550123"),
        ("+1 (617) 555-0123", None, "+16175550123"),
        ("unknown", "67", None),
        ("anonymous", "0", None),
        ("6175550123", "35", None),   # presentation restricted: the caller withheld it
        ("", "0", None),
        ("1" * 10_000, "0", None),
        ("617555\n0123", "0", None),
        ('"Doe, \\"JJ\\" John" <5551234>', "0", None),
    ],
)
def test_caller_id_is_e164_or_unknown(raw, pres, expected):
    assert normalize_number(raw, "US", pres) == expected
