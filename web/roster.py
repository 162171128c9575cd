"""Admin: the roster (teams, responders, shifts, overrides), the week on call, the audit log.

Every edit goes through the same validation as a CSV import (web.roster_edit): no
emergency or police numbers, valid phone numbers, known languages and neighborhoods.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from crisisline.roster import csv_format
from crisisline.roster.model import OVERRIDE_KINDS, WEEKDAYS
from crisisline.roster.store import RosterStore
from crisisline.users import audit
from web import state
from web.auth import roles
from web.roster_edit import (
    FORM_FIELDS,
    KINDS,
    RosterEditor,
    form_to_row,
    monday_of,
    row_key,
    row_kind,
    version,
    week_segments,
)

bp = Blueprint("roster", __name__)
TITLES = {"team": "team", "responder": "responder", "shift": "shift", "override": "override"}
AUDIT_PAGE = 100


def editor() -> RosterEditor:
    s = state.settings()
    return RosterEditor(RosterStore(state.panel().engine, s.timezone), s)


def _choices(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Options for the form's selects and checkboxes, from the current roster."""
    teams = [(r["id"], r["name"]) for r in rows if r["kind"] == "team"]
    people = sorted(((r["id"], r["name"]) for r in rows if r["kind"] in ("responder", "backup")),
                    key=lambda p: p[1])
    known = sorted(csv_format.known_neighborhoods().values())
    return {"teams": teams, "people": people, "neighborhoods": known,
            "languages": sorted(csv_format.KNOWN_LANGUAGES.items(), key=lambda kv: kv[1]),
            "weekdays": [(d, d.capitalize()) for d in WEEKDAYS],
            "override_kinds": [(k, k) for k in OVERRIDE_KINDS]}


def _form_values(row: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = dict(row)
    for name in ("neighborhoods", "adjacent", "languages"):
        values[name] = csv_format.split_list(row.get(name, ""))
    values["backup"] = row.get("kind") == "backup"
    return values


@bp.get("/roster/")
@roles("admin")
def index() -> Any:
    rows = editor().rows()
    grouped: dict[str, list[tuple[str, dict[str, str]]]] = {k: [] for k in KINDS}
    for row in rows:
        grouped[row_kind(row)].append((row_key(row), row))
    names = {r["id"]: r["name"] for r in rows if r["kind"] in ("responder", "backup", "team")}
    return render_template("roster.html", grouped=grouped, names=names, version=version(rows))


def _render_form(kind: str, key: str | None, values: dict[str, Any], rows: list[dict[str, str]],
                 field_errors: dict[str, str], other_errors: list[str], status: int = 200) -> Any:
    return render_template("roster_form.html", kind=kind, key=key, values=values,
                           errors=field_errors, other_errors=other_errors,
                           version=version(rows), choices=_choices(rows),
                           fields=FORM_FIELDS[kind]), status


@bp.route("/roster/<kind>/new", methods=["GET", "POST"])
@roles("admin")
def new(kind: str) -> Any:
    return _edit(kind, None)


@bp.route("/roster/<kind>/edit/<key>", methods=["GET", "POST"])
@roles("admin")
def edit(kind: str, key: str) -> Any:
    return _edit(kind, key)


def _edit(kind: str, key: str | None) -> Any:
    if kind not in KINDS:
        abort(404)
    ed = editor()
    rows = ed.rows()
    current = None
    if key is not None:
        index = ed.find(rows, kind, key)
        if index is None:
            abort(404)
        current = rows[index]
    if request.method == "GET":
        values = _form_values(current) if current else {}
        return _render_form(kind, key, values, rows, {}, [])
    lists = {name: request.form.getlist(name) for name in ("neighborhoods", "adjacent", "languages")}
    fixed_id = current["id"] if current and kind in ("team", "responder") else None
    new_row = form_to_row(kind, request.form, lists, fixed_id)
    result = ed.apply(kind, key, new_row, request.form.get("version", ""))
    if result.not_found:
        abort(404)
    if not result.ok:
        # Show what was typed, with each error beside its field; 422 so tests and tools
        # can tell a refused edit from a saved one.
        values = _form_values(new_row)
        values["neighborhoods_other"] = request.form.get("neighborhoods_other", "")
        return _render_form(kind, key, values, ed.rows(), result.field_errors,
                            result.other_errors, 422)
    flash(f"Saved the {TITLES[kind]}{' ' + new_row['id'] if new_row.get('id') else ''}.")
    return redirect(url_for("roster.index") + f"#{kind}s")


@bp.post("/roster/<kind>/delete/<key>")
@roles("admin")
def delete(kind: str, key: str) -> Any:
    if kind not in KINDS:
        abort(404)
    result = editor().apply(kind, key, None, request.form.get("version", ""))
    if result.not_found:
        abort(404)
    if not result.ok:
        for message in result.other_errors:
            flash(f"Not deleted: {message}")
        return redirect(url_for("roster.index") + f"#{kind}s")
    flash(f"Deleted the {TITLES[kind]}.")
    return redirect(url_for("roster.index") + f"#{kind}s")


@bp.get("/roster/week")
@roles("admin")
def week() -> Any:
    s = state.settings()
    today = datetime.now(s.zone).date()
    try:
        wanted = date.fromisoformat(request.args["start"]) if request.args.get("start") else today
    except ValueError:
        wanted = today
    monday = monday_of(wanted)
    snap = RosterStore(state.panel().engine, s.timezone).snapshot()
    groups = [(t.id, t.name) for t in sorted(snap.teams, key=lambda t: t.name)]
    groups.append(("backup", "Citywide backup"))
    days = [monday + timedelta(days=i) for i in range(7)]
    return render_template("week.html", segments=week_segments(snap, monday), groups=groups,
                           days=days, prev=monday - timedelta(days=7),
                           next=monday + timedelta(days=7), now=datetime.now(UTC))


@bp.get("/audit")
@roles("admin")
def audit_log() -> Any:
    page = max(0, request.args.get("page", 0, type=int))
    session = state.db()
    entries = audit.recent(session, limit=AUDIT_PAGE, offset=page * AUDIT_PAGE,
                           call_id=request.args.get("call_id") or None)
    return render_template("audit.html", entries=entries, page=page, total=audit.count(session),
                           page_size=AUDIT_PAGE, prompt_detail=audit.prompt_detail)
