"""Settings: one validated place, safe defaults, secrets only from the environment.

Precedence (highest first): environment variables ``PR_<NAME>``, the TOML file named
by ``PR_CONFIG`` (or passed to :func:`load`), then the defaults below. Every field is
documented in README.md ("Settings").
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crisisline.nodes import valid_node

ROOT = Path(__file__).resolve().parent.parent

# Lower number = answered first. 911 diversions come in with a person already in
# acute distress on a call-taker's line; 988 has already triaged; direct is the rest.
DEFAULT_PRIORITIES = {"911": 0, "988": 1, "direct": 2, "text": 2}
# Boston's most spoken languages, in menu order; a language with missing audio is left off
# the menu by itself (README, "Languages").
BOSTON_LANGUAGES = ("en", "es", "ht", "kea", "pt", "yue", "cmn", "vi", "ar", "so", "ru", "fr", "am")
ASTERISK_MODES = ("auto", "real", "standin", "external")

# Secrets are never read from the file: a config file gets committed, copied, mailed.
SECRET_FIELDS = frozenset({"ami_secret", "web_secret_key", "sms_token", "chat_secret_key"})


class ConfigError(ValueError):
    """The configuration can't be used; the message says what and where."""


@dataclass(frozen=True)
class Settings:
    # FastAGI server
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    # Seconds to wait for Asterisk's agi_* header block before giving up on a connection.
    agi_header_timeout_s: float = 5.0
    # Seconds to wait for Asterisk's reply to one command (longer than any prompt + timeout).
    agi_command_timeout_s: float = 120.0

    # Redis: empty means "none configured": `up` starts a local redis-server.
    redis_url: str = ""
    # Redis behind Sentinel (several machines): the sentinels as host:port, and the name
    # they monitor the primary under. With sentinels, redis_url's host is not used (its
    # database number, password and TLS are).
    redis_sentinels: tuple[str, ...] = ()
    redis_service: str = "peoples-response"
    # SQL: SQLite file by default, PostgreSQL by URL.
    database_url: str = ""
    var_dir: str = str(ROOT / "var")

    timezone: str = "America/New_York"
    # Pins the program's clock for on-call rosters (tests, demos): a local date-time in
    # `timezone` ("2026-12-02 14:00"); the clock starts there and runs on. Empty: real time.
    clock: str = ""

    # IVR
    languages: tuple[str, ...] = BOSTON_LANGUAGES
    default_language: str = "en"
    # Languages on the menu's first page (keys 1..n, then 9 for more); later pages hold 8.
    # 8 keeps issue #2's keys; 2 makes the first page "English, Spanish, more".
    menu_page_size: int = 8
    menu_timeout_ms: int = 5000
    zip_timeout_ms: int = 6000
    consent_timeout_ms: int = 5000
    max_retries: int = 2
    # Ring responders while the caller still answers the promise, consent and message
    # questions (queued right after the ZIP). "no": ask everything first, then queue.
    ring_during_intake: bool = True
    priorities: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))

    # Prompts: rendered audio and human recordings live here, one folder per language.
    prompts_dir: str = ""
    # How Asterisk names that folder in STREAM FILE (relative to its sounds directory).
    asterisk_prompts_path: str = "peoples-response"

    # Asterisk: "auto" (the real one when scripts/install-asterisk installed it, else the
    # stand-in), "real", "standin", or "external" (one `up` does not start)
    asterisk: str = "auto"
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "peoples-response"
    ami_secret: str = ""
    # More than one Asterisk node: name=HOST:PORT of each node's AMI (the names are the
    # nodes' PR_NODE_NAME). Empty: the one node at ami_host:ami_port.
    pbx_nodes: Mapping[str, str] = field(default_factory=dict)

    # Destinations that no wave, fallback or interpreter line may ever dial.
    police_numbers: tuple[str, ...] = ("+16173434500",)
    fallback_numbers: tuple[str, ...] = ()
    region: str = "US"
    # Interpretation service per caller language (phone number or PJSIP endpoint), added to
    # the room when the responder who takes the call doesn't speak the caller's language.
    interpreters: Mapping[str, str] = field(default_factory=dict)

    # Dispatch (issue 3)
    wave_timeout_s: float = 20.0
    max_wait_s: float = 900.0
    # At most this many phones ring at once for one call (least recently offered first);
    # 0 = everyone in the wave. Ringing a whole team for one caller starves the next caller.
    ring_per_wave: int = 4
    # A dispatcher renews its hold on a call this often x3; one that dies loses the call to
    # another dispatcher after this many seconds.
    dispatch_lease_s: float = 15.0
    # After a call, a responder rests this long before the next offer.
    wrapup_s: float = 60.0
    # Only speakers of the caller's language ring until no speaker is left or the caller has
    # waited this long; then everyone on call (with an interpreter line when one takes it).
    language_wait_s: float = 30.0
    # A waiting caller hears "still looking" this often (seconds, in their language).
    reassure_s: int = 45
    # A queued caller no dispatcher has taken (or renewed its hold on) for this long reaches
    # the fallback group through Asterisk alone.
    unattended_s: int = 45
    # Callbacks (issue 12): attempts before a request is marked callback_failed, seconds
    # between attempts, and how long the caller's phone rings on each (the responder hears it).
    callback_attempts: int = 3
    callback_retry_s: float = 600.0
    callback_ring_s: int = 40

    # Transcription (issue 4)
    vosk_models: Mapping[str, str] = field(default_factory=dict)
    retention_days: int = 30
    max_message_s: int = 30

    # Panel (issue 5)
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_secret_key: str = ""
    # Behind a TLS-terminating proxy: Secure/__Host- cookies and HSTS.
    web_https: bool = False

    # Text line (issue 11): the public chat app (meant to be published, unlike the panel)
    chat_host: str = "127.0.0.1"
    chat_port: int = 8090
    # The chat app's address as texters, responders' phones and the SMS provider reach it
    # (the TLS proxy's https://...); one-time links and webhook signatures use it. Empty:
    # http://chat_host:chat_port. An https:// address turns on Secure cookies and HSTS.
    chat_public_url: str = ""
    # Where "leave quickly" takes a texter (a neutral site); empty: the app's own plain page.
    chat_leave_url: str = ""
    # Signs the chat page's form tokens (secret; several chat processes must share it).
    # Empty: a random key per process (a page open across a restart must be reloaded).
    chat_secret_key: str = ""
    # The SMS provider's REST API (Twilio's convention); empty: `up` runs the stand-in.
    sms_api_url: str = ""
    sms_account: str = ""
    sms_token: str = ""  # secret: signs the provider's webhooks, authenticates our sends
    sms_number: str = "+16175550151"  # the line's texting number (From of every text we send)
    # The line's phone number, given to texters (call us) and the caller ID of a call back.
    line_number: str = "+16175550150"
    # A responder's one-time link (and an offer they opened) lasts this long at most.
    text_link_lifetime_s: int = 900
    # Seconds each wave of a text offer stays open (a responder opens a link on their phone).
    text_wave_timeout_s: float = 90.0
    # A waiting texter is told how long it has been and what happens next at most this often.
    text_update_s: int = 300
    # A conversation nobody has written in for this long ends (the texter is told).
    text_idle_end_s: int = 21600
    text_max_chat_chars: int = 2000
    text_max_sms_segments: int = 10
    # Messages per minute one conversation may send, and requests per minute per address
    # (chat) or per number (SMS); past them the message is refused with a word why.
    text_rate_per_conversation: int = 20
    text_rate_per_address: int = 60

    # ---- derived -------------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def var_path(self) -> Path:
        return Path(self.var_dir)

    @property
    def prompts_path(self) -> Path:
        return Path(self.prompts_dir) if self.prompts_dir else self.var_path / "prompts"

    @property
    def recordings_path(self) -> Path:
        """Callers' messages (only with their yes), until transcribed and the call ends."""
        return self.var_path / "recordings"

    @property
    def effective_redis_url(self) -> str:
        """Where Redis is, as one string every process can be handed (crisisline.stores
        opens it): a redis:// URL, or with sentinels
        ``redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB``."""
        base = self.redis_url or "redis://127.0.0.1:6379/0"
        if not self.redis_sentinels:
            return base
        netloc, _, path = base.partition("://")[2].partition("/")
        auth = netloc.rpartition("@")[0]  # the primary's password goes along
        db = path if path.isdigit() else "0"
        return (f"redis+sentinel://{auth + '@' if auth else ''}{','.join(self.redis_sentinels)}"
                f"/{self.redis_service}/{db}")

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_path / 'peoples-response.db'}"

    @property
    def chat_url(self) -> str:
        """The chat app's public base URL (no trailing slash)."""
        return (self.chat_public_url or f"http://{self.chat_host}:{self.chat_port}").rstrip("/")

    def priority_for(self, source: str) -> int:
        if source not in self.priorities and source == "text" and "direct" in self.priorities:
            return int(self.priorities["direct"])  # an older PR_PRIORITIES without "text"
        return int(self.priorities.get(source, max(self.priorities.values(), default=9)))


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML value or an environment string into the field's type."""
    default = _FIELDS[name].default
    if default is dataclasses.MISSING:
        default = _FIELDS[name].default_factory()  # type: ignore[misc]
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected yes/no, got {raw!r}")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(default, Mapping):
            if isinstance(raw, Mapping):
                return {str(k): v for k, v in raw.items()}
            # env form: "911=0,988=1" or "ko=/models/ko"
            pairs = [p for p in str(raw).split(",") if p.strip()]
            out: dict[str, Any] = {}
            for pair in pairs:
                key, sep, value = pair.partition("=")
                if not sep:
                    raise ValueError(f"expected KEY=VALUE pairs, got {pair!r}")
                out[key.strip()] = value.strip()
            return out
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from None


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
         **overrides: Any) -> Settings:
    """Read the file (if any), then the environment, then keyword overrides; validate."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("PR_CONFIG") or None
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            if key in SECRET_FIELDS:
                raise ConfigError(
                    f"config file {path}: {key} is a secret; set PR_{key.upper()} "
                    "in the environment instead")
            values[key] = _coerce(key, raw)
    for name in _FIELDS:
        env_name = f"PR_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(name, env[env_name])
    for name, raw in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = raw if not isinstance(raw, str) else _coerce(name, raw)
    settings = Settings(**values)
    problems = validate(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


def validate(s: Settings) -> list[str]:
    """Every problem with the settings, in words an operator can act on."""
    from crisisline import destinations  # late: destinations imports phonenumbers

    problems: list[str] = []
    for name in ("agi_port", "ami_port", "web_port", "chat_port"):
        port = getattr(s, name)
        if not 1 <= port <= 65535:
            problems.append(f"{name} must be a TCP port (1-65535), got {port}")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone {s.timezone!r} is not a known IANA time zone")
    if not s.languages:
        problems.append("languages must list at least one language")
    if len(set(s.languages)) != len(s.languages):
        problems.append(f"languages lists a language twice: {', '.join(s.languages)}")
    if s.default_language not in s.languages:
        problems.append(f"default_language {s.default_language!r} is not in languages")
    if not 1 <= s.menu_page_size <= 8:
        problems.append("menu_page_size must be between 1 and 8 (keys 1-8; 9 is 'more')")
    for lang, number in s.interpreters.items():
        reason = destinations.refusal(str(number), s)
        if reason:
            problems.append(f"interpreters.{lang}: {reason}")
    for name in ("menu_timeout_ms", "zip_timeout_ms", "consent_timeout_ms"):
        if not 1000 <= getattr(s, name) <= 30000:
            problems.append(f"{name} must be between 1000 and 30000 ms")
    if not 0 <= s.max_retries <= 5:
        problems.append("max_retries must be between 0 and 5")
    for source in ("direct", "911", "988"):
        if source not in s.priorities:
            problems.append(f"priorities has no entry for source {source!r}")
    for source, value in s.priorities.items():
        try:
            int(value)
        except (TypeError, ValueError):
            problems.append(f"priorities.{source} must be a whole number, got {value!r}")
    if s.asterisk not in ASTERISK_MODES:
        problems.append(f"asterisk must be one of {', '.join(ASTERISK_MODES)}, got {s.asterisk!r}")
    if s.wrapup_s < 0 or s.language_wait_s < 0:
        problems.append("wrapup_s and language_wait_s must be 0 or more")
    if not 5 <= s.reassure_s <= 600:
        problems.append("reassure_s must be between 5 and 600 seconds")
    if not 5 <= s.unattended_s <= 300:
        problems.append("unattended_s must be between 5 and 300 seconds")
    if not 1 <= s.callback_attempts <= 10:
        problems.append("callback_attempts must be between 1 and 10")
    if s.callback_retry_s < 0:
        problems.append("callback_retry_s must be 0 or more")
    if not 10 <= s.callback_ring_s <= 120:
        problems.append("callback_ring_s must be between 10 and 120 seconds")
    if s.clock:
        from crisisline.clock import ClockError, parse_pinned

        try:
            parse_pinned(s.clock, s.timezone)
        except (ClockError, ZoneInfoNotFoundError, ValueError) as exc:
            problems.append(f"clock: {exc}")
    if not 0.5 <= s.dispatch_lease_s <= 300:
        problems.append("dispatch_lease_s must be between 0.5 and 300 seconds")
    if s.ring_per_wave < 0:
        problems.append("ring_per_wave must be 0 (everyone) or more")
    if s.wave_timeout_s <= 0 or s.max_wait_s <= 0:
        problems.append("wave_timeout_s and max_wait_s must be positive")
    if s.retention_days < 1:
        problems.append("retention_days must be at least 1")
    for number in s.police_numbers:
        if destinations.parse(number, s.region) is None:
            problems.append(f"police_numbers: {number!r} is not a phone number")
    for number in s.fallback_numbers:
        reason = destinations.refusal(number, s)
        if reason:
            problems.append(f"fallback_numbers: {reason}")
    if s.database_url and not s.database_url.startswith(("sqlite:", "postgresql")):
        problems.append("database_url must be a sqlite: or postgresql: URL")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append("redis_url must be a redis:// URL")
    for sentinel in s.redis_sentinels:
        host, _, port = sentinel.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(f"redis_sentinels: {sentinel!r} is not HOST:PORT")
    if s.redis_sentinels and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", s.redis_service):
        problems.append("redis_service must be the name the sentinels monitor (letters, digits, . _ -)")
    for name, address in s.pbx_nodes.items():
        host, _, port = str(address).rpartition(":")
        if not valid_node(name):
            problems.append(f"pbx_nodes: {name!r} is not a node name (letters, digits, _ -)")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(f"pbx_nodes: {name}={address!r} is not NAME=HOST:PORT")
    problems += _text_problems(s)
    return problems


def _text_problems(s: Settings) -> list[str]:
    from crisisline import destinations

    problems = []
    for name in ("chat_public_url", "sms_api_url"):
        value = getattr(s, name)
        if value and not value.startswith(("http://", "https://")):
            problems.append(f"{name} must be an http:// or https:// URL, got {value!r}")
    if s.chat_leave_url and not s.chat_leave_url.startswith(("http://", "https://", "/")):
        problems.append("chat_leave_url must be an http(s):// URL or a path on the chat app")
    for name in ("sms_number", "line_number"):
        reason = destinations.refusal(getattr(s, name), s)
        if reason or destinations.SIP_ENDPOINT.match(getattr(s, name)):
            problems.append(f"{name}: {reason or 'must be a phone number'}")
    if s.sms_api_url and not s.sms_account:
        problems.append("sms_account must be set with sms_api_url")
    if not 60 <= s.text_link_lifetime_s <= 86400:
        problems.append("text_link_lifetime_s must be between 60 and 86400 seconds")
    if not 0 < s.text_wave_timeout_s <= 3600:
        problems.append("text_wave_timeout_s must be positive, at most 3600 seconds")
    if not 30 <= s.text_update_s <= 86400:
        problems.append("text_update_s must be between 30 and 86400 seconds")
    if not 600 <= s.text_idle_end_s <= 7 * 86400:
        problems.append("text_idle_end_s must be between 600 seconds and 7 days")
    if not 1 <= s.text_max_chat_chars <= 20000:
        problems.append("text_max_chat_chars must be between 1 and 20000")
    if not 1 <= s.text_max_sms_segments <= 20:
        problems.append("text_max_sms_segments must be between 1 and 20")
    if s.text_rate_per_conversation < 1 or s.text_rate_per_address < 1:
        problems.append("text_rate_per_conversation and text_rate_per_address must be 1 or more")
    return problems
