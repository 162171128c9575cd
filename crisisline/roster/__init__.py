"""The roster: teams, responders, weekly shifts, one-off overrides, the citywide backup.

``model`` is pure (no SQL) so the routing policy can be tested on a snapshot alone;
``schema``/``store`` persist it; ``csv_format`` is the documented import/export format
(docs/roster-csv.md); ``commands`` are what the CLI calls.
"""

from crisisline.roster.model import Override, Responder, RosterSnapshot, Shift, Team

__all__ = ["Override", "Responder", "RosterSnapshot", "Shift", "Team"]
