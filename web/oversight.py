"""Oversight board: a read-only, de-identified report and its CSV.

Reads only the columns in web.report.CallRow: no caller numbers, no transcripts, no notes,
no responder names, no per-call rows. The period is whole months, so two reports a day
apart can't be subtracted to single out one caller.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, time
from typing import Any

from flask import Blueprint, Response, render_template, request
from sqlalchemy import select

from crisisline.records.schema import CallbackRequest, CallRecord
from crisisline.roster.csv_format import KNOWN_LANGUAGES
from web import chart, state
from web.auth import roles
from web.report import CallbackRow, CallRow, Report, build, seconds_text, total_text

bp = Blueprint("oversight", __name__, url_prefix="/oversight")
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
DEFAULT_MONTHS = 12


def _month(value: str) -> date | None:
    m = MONTH.match(value or "")
    if not m or not 1 <= int(m[2]) <= 12 or not 2000 <= int(m[1]) <= 2200:
        return None
    return date(int(m[1]), int(m[2]), 1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period() -> tuple[date, date, dict[str, str]]:
    """First month and last month (inclusive), from ?from=YYYY-MM&to=YYYY-MM."""
    zone = state.settings().zone
    this_month = datetime.now(zone).date().replace(day=1)
    errors: dict[str, str] = {}
    start = _add_months(this_month, -(DEFAULT_MONTHS - 1))
    end = this_month
    if request.args.get("from"):
        start = _month(request.args["from"]) or start
        if _month(request.args["from"]) is None:
            errors["from"] = "Use a month like 2026-01."
    if request.args.get("to"):
        end = _month(request.args["to"]) or end
        if _month(request.args["to"]) is None:
            errors["to"] = "Use a month like 2026-12."
    if end < start:
        errors["to"] = "The last month must not be before the first."
        end = start
    return start, end, errors


def make_report(start: date, end: date) -> Report:
    s = state.settings()
    lo = datetime.combine(start, time(0), s.zone).astimezone(UTC)
    hi = datetime.combine(_add_months(end, 1), time(0), s.zone).astimezone(UTC)
    session = state.db()
    columns = (CallRecord.source, CallRecord.language, CallRecord.neighborhood,
               CallRecord.started_at, CallRecord.outcome, CallRecord.time_to_human_s,
               CallRecord.end_step, CallRecord.channel)
    rows = [CallRow(*r) for r in session.execute(
        select(*columns).where(CallRecord.started_at >= lo, CallRecord.started_at < hi))]
    callbacks = [CallbackRow(*r) for r in session.execute(
        select(CallbackRequest.status, CallbackRequest.time_to_human_s).where(
            CallbackRequest.requested_at >= lo, CallbackRequest.requested_at < hi))]
    report = build(rows, callbacks, s.zone)
    for table in report.tables:
        if table.heading == "Language":
            table.cells = [(f"{KNOWN_LANGUAGES.get(k, k)} ({k})", v) for k, v in table.cells]
    return report


@bp.get("/")
@roles("oversight")
def report() -> Any:
    start, end, errors = period()
    data = make_report(start, end)
    return render_template("oversight.html", report=data, start=start, end=end, errors=errors,
                           total=total_text(data.total), seconds=seconds_text,
                           total_callbacks=total_text(data.callbacks_requested),
                           total_text=total_text, svg=chart.time_to_human(data.bands, data.timing))


def _csv_cell(value: str) -> str:
    # A spreadsheet would run a cell starting with = + - @ as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


@bp.get("/report.csv")
@roles("oversight")
def report_csv() -> Response:
    start, end, _ = period()
    data = make_report(start, end)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["table", "category", "value"])
    writer.writerow(["period", "months", f"{start:%Y-%m} to {end:%Y-%m}"])
    writer.writerow(["all calls", "total", total_text(data.total)])
    writer.writerow(["callback requests", "requested", total_text(data.callbacks_requested)])
    for table in [*data.tables, data.callbacks]:
        for category, shown in table.cells:
            writer.writerow([_csv_cell(table.title), _csv_cell(category), shown])
    t = data.timing
    writer.writerow(["time to a human", "answered calls", total_text(t.n)])
    writer.writerow(["time to a human", "median seconds",
                     f"{t.median_s:.1f}" if t.median_s is not None else "<5 calls"])
    writer.writerow(["time to a human", "90th percentile seconds",
                     f"{t.p90_s:.1f}" if t.p90_s is not None else "<5 calls"])
    for source, st in data.timing_by_source:
        for name, value in (("median", st.median_s), ("90th percentile", st.p90_s)):
            writer.writerow([f"time to a human, {source}", f"{name} seconds",
                             f"{value:.1f}" if value is not None else "<5 calls"])
    for label, shown, _ in data.bands:
        writer.writerow(["answered calls by time to a human", label, shown])
    ct = data.callback_timing
    title = "callbacks: time from the request to a person"
    writer.writerow([title, "requests that reached a person", total_text(ct.n)])
    writer.writerow([title, "median seconds",
                     f"{ct.median_s:.1f}" if ct.median_s is not None else "<5 requests"])
    writer.writerow([title, "90th percentile seconds",
                     f"{ct.p90_s:.1f}" if ct.p90_s is not None else "<5 requests"])
    name = f"peoples-response-report-{start:%Y-%m}-to-{end:%Y-%m}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/prompts")
@roles("oversight", "admin")
def prompts() -> Any:
    """The state of review per language, and the latest changes to what the line says
    (from the audit log: who changed which prompt, when, old and new text)."""
    from crisisline.prompts import review_state, reviews
    from crisisline.users import audit
    from web.review import shipped_catalog

    session = state.db()
    summaries = review_state.summaries(state.settings(), shipped_catalog(),
                                       reviews.all_reviews(session))
    return render_template("oversight_prompts.html", summaries=summaries,
                           changes=audit.prompt_changes(session, limit=200))
