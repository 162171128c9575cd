"""Scripted callers: what a caller presses, says, and when they hang up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NO_KEY = "-"  # an answer meaning "press nothing at this input point"
RECORD_ENDINGS = ("dtmf", "silence", "hangup", "mute")


@dataclass
class CallerScript:
    """One caller, scripted.

    ``keys`` holds one answer per input point (GET DATA, WAIT FOR DIGIT, GET OPTION):
    the whole token for GET DATA (``02121``, ``02121#``), its first character for
    WAIT FOR DIGIT; ``-`` presses nothing. A timed answer ``KEYS@SECONDS`` is pressed that
    many seconds into the next prompt instead, whatever it is: it stops a prompt played
    with those escape digits and is lost during one without (as on any Asterisk). Answers
    are used in order: a timed one is armed at the first prompt after the one before it.
    ``hangup_after`` = hang up once the Nth prompt (STREAM FILE, GET DATA's file,
    Playback) has been heard. ``stay_s`` is in real seconds (a waiting room is about other
    processes acting meanwhile); None stays until the PBX or the test hangs the channel up.
    """

    keys: list[str] = field(default_factory=list)
    hangup_after: int | None = None
    # Hang up once this prompt (its name, e.g. "callback_confirmed") has been heard.
    leave_after: str | None = None
    # The answers at the callback offer and its safety questions (in [pr-callback]), kept
    # apart from ``keys`` so they land there however many questions the IVR asked.
    callback_keys: list[str] = field(default_factory=list)
    caller_id_num: str | None = None
    caller_id_name: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    sip_headers: dict[str, str] = field(default_factory=dict)
    speech: Path | None = None   # what the caller says in a message (RECORD FILE)
    say: Path | None = None      # what the caller says at the language menu (spoken choice)
    stay_s: float | None = None
    extra_agi_env: dict[str, str] = field(default_factory=dict)
    # Sent as-is on the agi_calleridname line (hostile input: quotes, newlines, 10 KB).
    raw_calleridname: str | None = None
    # How a RECORD FILE ends: the caller presses an escape digit, goes silent, or hangs up;
    # "mute": no media at all (a Local channel), so only the time limit ends it.
    record_end: str = "dtmf"
    language: str = "en"

    def __post_init__(self) -> None:
        if self.record_end not in RECORD_ENDINGS:
            raise ValueError(f"record_end must be one of {RECORD_ENDINGS}")
        if isinstance(self.keys, str):
            self.keys = parse_keys(self.keys)
        if isinstance(self.callback_keys, str):
            self.callback_keys = parse_keys(self.callback_keys)


def parse_keys(text: str) -> list[str]:
    """``"2 02121 1"`` -> ``["2", "02121", "1"]``."""
    return text.split()


class Caller:
    """The running side of a script: consumes answers and counts prompts."""

    def __init__(self, script: CallerScript) -> None:
        self.script = script
        # One list, in order: a timed answer is armed only once every answer before it was
        # used ("2 02121 7@3": 7 pressed 3 s into the prompt after the ZIP question).
        self._answers = list(script.keys)
        self._callback_answers = list(script.callback_keys)
        # A timed answer waiting to be pressed: (keys, the channel's clock when pressed).
        self.armed: tuple[str, float] | None = None
        self.prompts_heard = 0
        self.hung_up = False

    def arm(self, now: float) -> None:
        """An audio command starts at ``now`` (the channel's clock): the next timed answer,
        if any, is pressed that many seconds later."""
        if self.armed is None and self._answers and "@" in self._answers[0]:
            keys, _, at = self._answers.pop(0).partition("@")
            try:
                delay = float(at)
            except ValueError:
                delay = 0.0
            self.armed = (keys, now + max(delay, 0.0))

    def pressed_between(self, start: float, end: float) -> tuple[str, float] | None:
        """The armed keys when they are pressed before ``end``: (keys, seconds after
        ``start``); they are used up."""
        if self.armed is None or self.armed[1] >= end:
            return None
        keys, at = self.armed
        self.armed = None
        return keys, max(at - start, 0.0)

    def hear(self, name: str = "") -> bool:
        """A prompt was played; True when the caller hangs up on it."""
        self.prompts_heard += 1
        limit = self.script.hangup_after
        leave = self.script.leave_after
        if not self.hung_up and ((limit is not None and self.prompts_heard >= limit) or
                                 (leave and name.rsplit("/", 1)[-1] == leave)):
            self.hung_up = True
            return True
        return False

    def answer(self) -> str:
        """The next answer; when they run out (or the next one is timed and not due yet)
        the caller presses nothing."""
        if self._answers and "@" not in self._answers[0]:
            return self._answers.pop(0)
        return NO_KEY

    def callback_answer(self) -> str:
        """The next answer at the callback offer or its questions (``-`` when none left)."""
        return self._callback_answers.pop(0) if self._callback_answers else NO_KEY

    @staticmethod
    def get_data_digits(token: str, maxdigits: int) -> tuple[str, bool]:
        """What GET DATA collects from an answer: (digits, ended by the timeout).
        ``#`` ends input without a marker, reaching max digits too; fewer digits, or
        none (``-``), end with the timeout (captures 03a-03e)."""
        if token == NO_KEY:
            return "", True
        if "#" in token[: maxdigits + 1]:
            return token[: token.index("#")], False
        if len(token) >= maxdigits:
            return token[:maxdigits], False
        return token, True

    @property
    def answers_left(self) -> list[str]:
        return list(self._answers)
