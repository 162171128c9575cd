"""Server-drawn SVG for the oversight report: no script, no external library, and the
same figures are in a table next to it for anyone who can't see the chart."""

from __future__ import annotations

from markupsafe import Markup, escape

from web.report import BANDS, Timing, seconds_text

WIDTH, ROW, LEFT, RIGHT, TOP = 720, 34, 130, 220, 40


def _band_of(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for low, high, label in BANDS:
        if seconds >= low and (high is None or seconds < high):
            return label
    return None


def time_to_human(bands: list[tuple[str, str, int]], timing: Timing) -> Markup:
    """Horizontal bars, one per band of time to a human; suppressed bands are drawn as a
    grey stub labelled "<5"/"hidden" (their length would give the number away)."""
    height = TOP + ROW * len(bands) + 20
    biggest = max((n for _, _, n in bands), default=0) or 1
    span = WIDTH - LEFT - RIGHT
    marks = {}
    for name, value in (("median", timing.median_s), ("90th percentile", timing.p90_s)):
        band = _band_of(value)
        if band:
            marks.setdefault(band, []).append(name)
    summary = (f"Time to a human for {timing.n} answered calls: median "
               f"{seconds_text(timing.median_s)}, 90th percentile {seconds_text(timing.p90_s)}.")
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="chart-title chart-desc" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Answered calls by time to a human</title>',
        f'<desc id="chart-desc">{escape(summary)} The table below gives the same counts.</desc>',
        f'<text x="{LEFT}" y="20">{escape(summary)}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP - 6}" x2="{LEFT}" y2="{height - 14}"/>',
    ]
    for i, (label, shown, n) in enumerate(bands):
        y = TOP + i * ROW
        suppressed = not n
        length = 4 if suppressed else max(4, round(span * n / biggest))
        cls = "bar suppressed" if suppressed else "bar"
        note = ", ".join(marks.get(label, []))
        parts += [
            f'<text x="{LEFT - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>',
            f'<rect class="{cls}" x="{LEFT}" y="{y + 4}" width="{length}" height="{ROW - 10}"/>',
            f'<text x="{LEFT + length + 6}" y="{y + 17}">{escape(shown)}'
            f'{escape(" ◀ " + note) if note else ""}</text>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))
