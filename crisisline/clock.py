"""The program's "now": real time, or a pinned start that runs on (PR_CLOCK).

Everything that asks who is on call (routing, `roster oncall`, the dispatcher, `up`) takes
its time from here, so tests and demos can pin the hour: "2026-12-02 01:00" is the same
night-time roster whenever the test runs. The pinned clock starts at that local time when
the process first asks, and advances with the monotonic clock from there.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_STARTED = time.monotonic()


class ClockError(ValueError):
    """A pinned clock that can't be read."""


def parse_pinned(text: str, timezone: str) -> datetime:
    """``"2026-12-02 14:00"`` (local, in ``timezone``) or an ISO 8601 time with an offset."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("T", " "))
    except ValueError:
        raise ClockError(f"{text!r} is not a date and time like 2026-12-02 14:00") from None
    zone = ZoneInfo(timezone)
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def now(timezone: str, pinned: str = "") -> datetime:
    """The current time in ``timezone``; ``pinned`` (a Settings.clock) fixes where it starts."""
    if not pinned:
        return datetime.now(ZoneInfo(timezone))
    return parse_pinned(pinned, timezone) + timedelta(seconds=time.monotonic() - _STARTED)
