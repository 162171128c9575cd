"""Call history (supervisor, admin): search, one call's timeline, and the audited reveal
of a caller's number or transcript.

Identifying fields are never on a page by default. They are shown only after a click on a
button (a POST, so no link prefetcher or crawler can trigger it), and the audit row is
committed before the page with the value is sent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, abort, render_template, request
from sqlalchemy import Select, func, select

from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallbackRequest, CallEvent, CallRecord
from crisisline.roster.csv_format import KNOWN_LANGUAGES
from crisisline.users import audit
from web import state
from web.auth import current_user, roles
from web.callbacks import summary

bp = Blueprint("history", __name__, url_prefix="/history")

PAGE_SIZE = 50
OUTCOMES = ("bridged", "callback", "abandoned", "fallback")
SOURCES = ("direct", "911", "988", "text")
# Event details that could identify a caller stay off the timeline (substring match, so
# "callback_number" and "caller_number" are both caught).
HIDDEN_DETAIL = ("number", "phone", "transcript", "note", "text", "message")


def _local_day(value: str, zone: Any) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(value), time(0), zone).astimezone(UTC)
    except ValueError:
        return None


def filters() -> tuple[dict[str, str], dict[str, str]]:
    """The search form's values and any errors, from the query string."""
    args = request.args
    values = {k: args.get(k, "").strip()[:64] for k in
              ("from", "to", "neighborhood", "language", "source", "outcome")}
    errors: dict[str, str] = {}
    zone = state.settings().zone
    for name in ("from", "to"):
        if values[name] and _local_day(values[name], zone) is None:
            errors[name] = "Use a date like 2026-11-27."
    if values["source"] and values["source"] not in SOURCES:
        errors["source"] = "Choose a source from the list."
    if values["outcome"] and values["outcome"] not in OUTCOMES:
        errors["outcome"] = "Choose an outcome from the list."
    return values, errors


def apply_filters(query: Select[Any], values: dict[str, str]) -> Select[Any]:
    zone = state.settings().zone
    if values["from"] and (start := _local_day(values["from"], zone)):
        query = query.where(CallRecord.started_at >= start)
    if values["to"] and (end := _local_day(values["to"], zone)):
        query = query.where(CallRecord.started_at < end + timedelta(days=1))
    if values["neighborhood"]:
        if values["neighborhood"] == "(unknown)":
            query = query.where(CallRecord.neighborhood.is_(None))
        else:
            query = query.where(CallRecord.neighborhood == values["neighborhood"])
    for name, column in (("language", CallRecord.language), ("source", CallRecord.source),
                         ("outcome", CallRecord.outcome)):
        if values[name]:
            query = query.where(column == values[name])
    return query


@bp.get("/")
@roles("supervisor", "admin")
def search() -> Any:
    values, errors = filters()
    session = state.db()
    page = max(0, request.args.get("page", 0, type=int))
    calls: list[CallRecord] = []
    total = 0
    if not errors:
        query = apply_filters(select(CallRecord), values)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        calls = list(session.scalars(query.order_by(CallRecord.started_at.desc(), CallRecord.id)
                                     .limit(PAGE_SIZE).offset(page * PAGE_SIZE)))
    hoods = [h for h in session.scalars(select(CallRecord.neighborhood).distinct()
                                        .order_by(CallRecord.neighborhood)) if h]
    langs = sorted(set(session.scalars(select(CallRecord.language).distinct())) | {"en", "es"})
    args = {k: v for k, v in values.items() if v}
    return render_template("history.html", calls=calls, total=total, page=page,
                           page_size=PAGE_SIZE, values=values, errors=errors, args=args,
                           neighborhoods=hoods, languages=[(c, KNOWN_LANGUAGES.get(c, c)) for c in langs],
                           sources=SOURCES, outcomes=OUTCOMES), (422 if errors else 200)


def _record(call_id: str) -> CallRecord:
    record = state.db().get(CallRecord, call_id)
    if record is None:
        abort(404)
    return record


def _safe_detail(detail: dict[str, Any] | None) -> list[tuple[str, str]]:
    out = []
    for key, value in sorted((detail or {}).items()):
        if any(word in key.lower() for word in HIDDEN_DETAIL):
            continue
        out.append((key, str(value)[:200]))
    return out


def _render_call(record: CallRecord, reveal: str | None = None) -> Any:
    session = state.db()
    events = list(session.scalars(select(CallEvent).where(CallEvent.call_id == record.id)
                                  .order_by(CallEvent.at, CallEvent.id)))
    callback = session.get(CallbackRequest, record.id)
    messages = sql_texts.messages(session, record.id) if reveal == "conversation" else []
    return render_template("call_record.html", record=record,
                           events=[(e, _safe_detail(e.detail)) for e in events],
                           callback=callback, reveal=reveal, messages=messages,
                           callback_summary=summary(callback) if callback else "")


@bp.get("/calls/<call_id>")
@roles("supervisor", "admin")
def call(call_id: str) -> Any:
    return _render_call(_record(call_id))


@bp.route("/calls/<call_id>/transcript", methods=["GET", "POST"])
@roles("supervisor", "admin")
def transcript(call_id: str) -> Any:
    return _reveal(call_id, "transcript", audit.VIEW_TRANSCRIPT)


@bp.route("/calls/<call_id>/conversation", methods=["GET", "POST"])
@roles("supervisor", "admin")
def conversation(call_id: str) -> Any:
    """A text conversation's messages: audited like a transcript."""
    return _reveal(call_id, "conversation", audit.VIEW_CONVERSATION)


@bp.route("/calls/<call_id>/number", methods=["GET", "POST"])
@roles("supervisor", "admin")
def number(call_id: str) -> Any:
    return _reveal(call_id, "number", audit.VIEW_CALLER_NUMBER)


def _reveal(call_id: str, what: str, action: str) -> Any:
    record = _record(call_id)
    if request.method == "GET":
        # A plain link (or a prefetch) only reaches the confirmation, never the data.
        return render_template("reveal_confirm.html", record=record, what=what)
    user = current_user()
    assert user is not None
    session = state.db()
    audit.record(session, user.name, action, call_id)
    session.commit()  # logged before it is shown: no log, no view
    return _render_call(record, reveal=what)
