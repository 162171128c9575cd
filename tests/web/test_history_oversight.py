"""Call history with the audited reveal, and the de-identified oversight report."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from crisisline import config, db
from crisisline.users.schema import AuditEntry
from tests.web.conftest import add_record
from web.report import CallbackRow, CallRow, build, suppress, timing

NY_NOON = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)  # 12:00 in Boston (EDT)


def audit_rows(settings: config.Settings) -> list[tuple[str, str, str | None]]:
    engine = db.engine_for(settings)
    try:
        with Session(engine) as s:
            return [(a.user_name, a.action, a.call_id)
                    for a in s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]
    finally:
        engine.dispose()


def test_search_filters(clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    add_record(web_settings, "h1", started=NY_NOON, language="es", neighborhood="Dorchester")
    add_record(web_settings, "h2", started=NY_NOON + timedelta(days=2), language="vi",
               neighborhood="Roxbury", source="988", outcome="abandoned", time_to_human_s=None)
    sup = clients["supervisor"]

    def found(query: str) -> set[str]:
        html = sup.get(f"/history/?{query}").get_data(as_text=True)
        return {c for c in ("h1", "h2") if f"/history/calls/{c}" in html}

    assert found("") == {"h1", "h2"}
    assert found("language=vi") == {"h2"}
    assert found("neighborhood=Dorchester") == {"h1"}
    assert found("source=988&outcome=abandoned") == {"h2"}
    assert found("from=2026-03-11") == {"h2"}
    assert found("to=2026-03-10") == {"h1"}
    bad = sup.get("/history/?from=yesterday")
    assert bad.status_code == 422 and 'id="e-from"' in bad.get_data(as_text=True)
    html = sup.get("/history/").get_data(as_text=True)
    assert "2026-03-10 12:00" in html  # shown in the program's zone, not UTC
    assert "+1617555" not in html and "I need help" not in html


def test_timeline_hides_identifying_fields_until_asked(clients: dict[str, FlaskClient],
                                                       web_settings: config.Settings) -> None:
    add_record(web_settings, "t1", caller_number="+16175550123", transcript="I need help")
    admin = clients["admin"]
    html = admin.get("/history/calls/t1").get_data(as_text=True)
    assert "call_started" in html and "queued" in html  # the timeline
    assert "5550123" not in html and "I need help" not in html
    # A GET of the reveal URL (a link, a prefetch) only asks; nothing shown, nothing logged.
    confirm = admin.get("/history/calls/t1/transcript").get_data(as_text=True)
    assert "I need help" not in confirm and "audit log" in confirm
    assert audit_rows(web_settings) == []


def test_every_reveal_is_audited(clients: dict[str, FlaskClient],
                                 web_settings: config.Settings) -> None:
    add_record(web_settings, "t2", caller_number="+16175550124", transcript="please call back")
    sup, admin = clients["supervisor"], clients["admin"]
    shown = sup.post("/history/calls/t2/transcript", data={"csrf_token": "token-supervisor"})
    assert "please call back" in shown.get_data(as_text=True)
    assert "5550124" not in shown.get_data(as_text=True)  # one thing at a time
    shown = admin.post("/history/calls/t2/number", data={"csrf_token": "token-admin"})
    assert "+16175550124" in shown.get_data(as_text=True)
    sup.post("/history/calls/t2/transcript", data={"csrf_token": "token-supervisor"})
    assert audit_rows(web_settings) == [("supervisor", "view_transcript", "t2"),
                                        ("admin", "view_caller_number", "t2"),
                                        ("supervisor", "view_transcript", "t2")]
    log = admin.get("/audit").get_data(as_text=True)
    assert log.count("view_transcript") == 2 and "view_caller_number" in log
    # Without the CSRF token, nothing is shown and nothing logged.
    assert sup.post("/history/calls/t2/number").status_code == 400
    assert len(audit_rows(web_settings)) == 3


def test_oversight_cannot_reach_transcripts_or_numbers(clients: dict[str, FlaskClient],
                                                       web_settings: config.Settings) -> None:
    add_record(web_settings, "t3", caller_number="+16175550125", transcript="secret words")
    ovs = clients["oversight"]
    for path in ("/history/calls/t3/transcript", "/history/calls/t3/number", "/history/calls/t3"):
        assert ovs.get(path).status_code == 403
        assert ovs.post(path, data={"csrf_token": "token-oversight"}).status_code in (403, 405)
    assert audit_rows(web_settings) == []


def test_report_suppresses_small_cells_and_has_no_identity(
        clients: dict[str, FlaskClient], web_settings: config.Settings) -> None:
    month = datetime.now(UTC).replace(day=1, hour=15)
    for i in range(7):
        add_record(web_settings, f"d{i}", started=month + timedelta(minutes=i), neighborhood="Dorchester",
                   time_to_human_s=10.0 + i, caller_number=f"+1617555{i:04d}", transcript="words")
    for i in range(5):
        add_record(web_settings, f"m{i}", started=month + timedelta(minutes=i), neighborhood="Mattapan",
                   time_to_human_s=40.0)
    for i in range(2):
        add_record(web_settings, f"r{i}", started=month + timedelta(minutes=i), neighborhood="Roxbury",
                   language="so", outcome="abandoned", end_step="language_menu",
                   time_to_human_s=None)
    ovs = clients["oversight"]
    html = ovs.get("/oversight/").get_data(as_text=True)
    assert "<svg" in html and 'role="img"' in html and "<title" in html
    assert "+1617555" not in html and "words" not in html
    assert '<th scope="row">Dorchester</th><td class="num">7</td>' in html
    assert '<th scope="row">Roxbury</th><td class="num">&lt;5</td>' in html
    # One small cell and a known total: the next smallest is hidden too.
    assert '<th scope="row">Mattapan</th><td class="num">hidden</td>' in html
    assert "d0" not in html.replace("id=", "")  # no per-call rows
    response = ovs.get("/oversight/report.csv")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert ["Calls by neighborhood", "Roxbury", "<5"] in rows
    assert ["Calls by language", "Somali (so)", "<5"] in rows
    assert ["Calls by neighborhood", "Mattapan", "hidden"] in rows
    assert ["all calls", "total", "14"] in rows
    text = response.get_data(as_text=True)
    assert "+1617555" not in text and "words" not in text
    assert all(len(r) == 3 for r in rows)


def test_report_rules() -> None:
    assert suppress([("a", 10), ("b", 3), ("c", 7)]) == [("a", "10"), ("b", "<5"), ("c", "hidden")]
    assert suppress([("a", 10), ("b", 3), ("c", 2)]) == [("a", "10"), ("b", "<5"), ("c", "<5")]
    assert suppress([("a", 10), ("b", 0)]) == [("a", "10"), ("b", "<5")]  # zero: nothing to derive
    t = timing([float(x) for x in range(1, 11)])
    assert t.median_s == 5.5 and t.p90_s is not None and 9.0 <= t.p90_s <= 10.0
    assert timing([1.0, 2.0, 3.0, 4.0]).median_s is None  # under 5 calls: no statistic
    ny = datetime(2026, 7, 1, 3, 30, tzinfo=UTC)  # 23:30 the day before in Boston
    report = build([CallRow("direct", "en", None, ny, "bridged", 12.0, None)] * 6,
                   [CallbackRow("done")], ZoneInfo("America/New_York"))
    hours = dict(next(t for t in report.tables if t.heading == "Hour (local)").cells)
    assert hours["23:00"] == "6" and hours["03:00"] == "<5"
    # An old row closed by hand ("done") counts as cancelled.
    assert dict(report.callbacks.cells) == {"completed": "<5", "failed": "<5", "cancelled": "<5",
                                            "fallback desk answered": "<5", "still open": "<5"}
    assert report.callbacks_requested == 1 and report.callback_timing.median_s is None
