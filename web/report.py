"""The oversight report's figures: de-identified counts with small cells suppressed, and
time to a human. Pure functions over plain rows, so they are tested on their own.

Suppression: a count under 5 is shown as "<5" (primary). When a table has exactly one
such cell with calls in it and the table's total is known, that cell could be worked
out by subtraction; the next smallest cell is then hidden too (secondary, shown as
"hidden"). Statistics over fewer than 5 calls are not shown at all.

Callbacks: how many were requested, how each ended (completed, failed, cancelled, the
fallback desk answered, still open), and the time from the request to a person; the same
rules, and nothing about who asked.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from crisisline.records.callbacks import status_of

SMALL = 5
SMALL_TEXT = "<5"
HIDDEN_TEXT = "hidden"
# Time-to-a-human bands for the chart (seconds); the last is open-ended.
BANDS: tuple[tuple[float, float | None, str], ...] = (
    (0, 15, "under 15 s"), (15, 30, "15–30 s"), (30, 60, "30–60 s"), (60, 120, "1–2 min"),
    (120, 300, "2–5 min"), (300, None, "5 min or more"))


@dataclass(frozen=True)
class CallRow:
    """The only columns the report ever reads: nothing that identifies a caller."""
    source: str
    language: str
    neighborhood: str | None
    started_at: datetime
    outcome: str
    time_to_human_s: float | None
    end_step: str | None
    channel: str | None = None  # text conversations: sms or chat


@dataclass(frozen=True)
class CallbackRow:
    """The only columns of a callback request the report reads."""
    status: str
    time_to_human_s: float | None = None


# How a request ended, in the report's words (SQL status -> category).
CALLBACK_CATEGORIES = (("bridged", "completed"), ("failed", "failed"), ("cancelled", "cancelled"),
                       ("fallback_answered", "fallback desk answered"), ("open", "still open"))


@dataclass
class Table:
    title: str
    heading: str  # the category column's heading
    cells: list[tuple[str, str]] = field(default_factory=list)  # (category, shown value)


def suppress(counts: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    shown = [(k, SMALL_TEXT if n < SMALL else str(n)) for k, n in counts]
    small_with_calls = [i for i, (_, n) in enumerate(counts) if 0 < n < SMALL]
    suppressed = [i for i, (_, n) in enumerate(counts) if n < SMALL]
    if len(small_with_calls) == 1 and len(suppressed) == 1:
        others = [(n, i) for i, (_, n) in enumerate(counts) if n >= SMALL]
        if others:
            _, i = min(others)
            shown[i] = (shown[i][0], HIDDEN_TEXT)
    return shown


def count_table(title: str, heading: str, values: Iterable[str],
                order: Sequence[str] | None = None) -> Table:
    counter = Counter(values)
    keys = list(order) if order is not None else sorted(counter, key=lambda k: (-counter[k], k))
    return Table(title, heading, suppress([(k, counter.get(k, 0)) for k in keys]))


def total_text(n: int) -> str:
    return SMALL_TEXT if n < SMALL else str(n)


@dataclass(frozen=True)
class Timing:
    n: int
    median_s: float | None  # None when fewer than SMALL calls
    p90_s: float | None


def timing(values: Sequence[float]) -> Timing:
    """Median and 90th percentile (inclusive method: interpolated between the ranks)."""
    data = sorted(values)
    if len(data) < SMALL:
        return Timing(len(data), None, None)
    p90 = statistics.quantiles(data, n=10, method="inclusive")[-1]
    return Timing(len(data), statistics.median(data), p90)


def bands(values: Sequence[float]) -> list[tuple[str, int]]:
    out = []
    for low, high, label in BANDS:
        out.append((label, sum(1 for v in values if v >= low and (high is None or v < high))))
    return out


@dataclass
class Report:
    total: int
    tables: list[Table]
    timing: Timing
    timing_by_source: list[tuple[str, Timing]]
    bands: list[tuple[str, str, int]]  # label, shown value, count for drawing (0 if suppressed)
    callbacks: Table
    callbacks_requested: int = 0
    callback_timing: Timing = field(default_factory=lambda: Timing(0, None, None))


def callback_figures(rows: Sequence[CallbackRow]) -> tuple[Table, Timing]:
    """How requests ended (old rows' statuses read as today's) and request-to-a-person time."""
    names = dict(CALLBACK_CATEGORIES)
    table = count_table("Callback requests by how they ended", "Ended",
                        (names.get(status_of(r.status), status_of(r.status)) for r in rows),
                        order=[name for _, name in CALLBACK_CATEGORIES])
    reached = timing([r.time_to_human_s for r in rows if r.time_to_human_s is not None])
    return table, reached


def build(rows: Sequence[CallRow], callback_rows: Sequence[CallbackRow], zone: ZoneInfo,
          sources: Sequence[str] = ("direct", "911", "988", "text"),
          outcomes: Sequence[str] = ("bridged", "callback", "abandoned", "fallback")) -> Report:
    tables = [
        count_table("Calls by neighborhood", "Neighborhood",
                    (r.neighborhood or "Unknown" for r in rows)),
        count_table("Calls by language", "Language", (r.language for r in rows)),
        count_table("Calls by source", "Source", (r.source for r in rows), order=sources),
        count_table("Calls by hour of day", "Hour (local)",
                    (f"{r.started_at.astimezone(zone).hour:02d}:00" for r in rows),
                    order=[f"{h:02d}:00" for h in range(24)]),
        count_table("Calls by outcome", "Outcome", (r.outcome for r in rows), order=outcomes),
        count_table("Abandoned calls by where the caller hung up", "Step",
                    (r.end_step or "unknown" for r in rows if r.outcome == "abandoned")),
        count_table("Text conversations by channel", "Channel",
                    (r.channel or "unknown" for r in rows if r.source == "text"),
                    order=("sms", "chat")),
    ]
    answered = [r.time_to_human_s for r in rows if r.time_to_human_s is not None]
    by_source = [(s, timing([r.time_to_human_s for r in rows
                             if r.source == s and r.time_to_human_s is not None]))
                 for s in sources]
    band_counts = bands(answered)
    shown = dict(suppress(band_counts))
    drawn = [(label, shown[label], n if shown[label] not in (SMALL_TEXT, HIDDEN_TEXT) else 0)
             for label, n in band_counts]
    callbacks, callback_timing = callback_figures(callback_rows)
    return Report(len(rows), tables, timing(answered), by_source, drawn, callbacks,
                  len(callback_rows), callback_timing)


def seconds_text(value: float | None) -> str:
    if value is None:
        return "fewer than 5 calls"
    if value < 60:
        return f"{value:.0f} s"
    return f"{int(value // 60)} min {value % 60:02.0f} s"
