"""Who is on call, per team, as text for the CLI; and where the schedule has holes."""

from __future__ import annotations

from datetime import datetime, timedelta

from crisisline.roster.model import Responder, RosterSnapshot, Team

BACKUP_TITLE = "Citywide backup"


def by_team(snapshot: RosterSnapshot, at: datetime,
            ) -> list[tuple[Team | None, list[Responder]]]:
    """Every team (in name order) with its on-call members, then the backup group
    (team None). Teams with nobody on call are listed too: that is the news."""
    on = snapshot.on_call(at)
    out: list[tuple[Team | None, list[Responder]]] = [
        (t, [r for r in on if r.team_id == t.id])
        for t in sorted(snapshot.teams, key=lambda t: t.name)]
    out.append((None, [r for r in on if r.backup]))
    return out


def format_on_call(snapshot: RosterSnapshot, at: datetime) -> str:
    local = at.astimezone(snapshot.zone)
    lines = [f"On call at {local:%a %Y-%m-%d %H:%M} {local.tzname()} ({snapshot.timezone})"]
    for team, people in by_team(snapshot, at):
        title = f"{team.name} ({', '.join(sorted(team.neighborhoods))})" if team else BACKUP_TITLE
        lines.append("")
        lines.append(title)
        if not people:
            lines.append("  nobody on call" + ("" if team is None else
                                               " (calls go to neighboring teams and backup)"))
        width = max((len(r.name) for r in people), default=0)
        for r in people:
            langs = " ".join(sorted(r.languages))
            lines.append(f"  {r.name:<{width}}  {r.phone:<16}  {langs}")
    return "\n".join(lines) + "\n"


def coverage_gaps(snapshot: RosterSnapshot, start: datetime, hours: int = 24 * 7,
                  ) -> list[tuple[str, datetime]]:
    """(team id or "backup", instant) for every hour from ``start`` with nobody on call."""
    gaps: list[tuple[str, datetime]] = []
    for i in range(hours):
        at = start + timedelta(hours=i)
        on = snapshot.on_call(at)
        teams_on = {r.team_id for r in on}
        gaps += [(t.id, at) for t in snapshot.teams if t.id not in teams_on]
        if not any(r.backup for r in on):
            gaps.append(("backup", at))
    return gaps
