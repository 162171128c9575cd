"""roster: teams, neighborhoods, adjacency, responders, languages, shifts, overrides

Revision ID: 0001_roster
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0001_roster"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "team_neighborhoods",
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("neighborhood", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE",
                                name=op.f("fk_team_neighborhoods_team_id_teams")),
        sa.PrimaryKeyConstraint("team_id", "neighborhood", name=op.f("pk_team_neighborhoods")),
        sa.UniqueConstraint("neighborhood", name=op.f("uq_team_neighborhoods_neighborhood")),
    )
    op.create_table(
        "team_adjacency",
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("adjacent_team_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE",
                                name=op.f("fk_team_adjacency_team_id_teams")),
        sa.ForeignKeyConstraint(["adjacent_team_id"], ["teams.id"], ondelete="CASCADE",
                                name=op.f("fk_team_adjacency_adjacent_team_id_teams")),
        sa.PrimaryKeyConstraint("team_id", "adjacent_team_id", name=op.f("pk_team_adjacency")),
    )
    op.create_table(
        "responders",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(100), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=True),
        sa.Column("backup", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="RESTRICT",
                                name=op.f("fk_responders_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responders")),
    )
    op.create_index(op.f("ix_responders_team_id"), "responders", ["team_id"])
    op.create_table(
        "responder_languages",
        sa.Column("responder_id", sa.String(64), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["responder_id"], ["responders.id"], ondelete="CASCADE",
                                name=op.f("fk_responder_languages_responder_id_responders")),
        sa.PrimaryKeyConstraint("responder_id", "language", name=op.f("pk_responder_languages")),
    )
    op.create_table(
        "shifts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("responder_id", sa.String(64), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_shifts_weekday")),
        sa.ForeignKeyConstraint(["responder_id"], ["responders.id"], ondelete="CASCADE",
                                name=op.f("fk_shifts_responder_id_responders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shifts")),
    )
    op.create_index(op.f("ix_shifts_responder_id"), "shifts", ["responder_id"])
    op.create_table(
        "overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("responder_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("covered_by", sa.String(64), nullable=True),
        sa.CheckConstraint("kind IN ('sick', 'swap', 'extra')", name=op.f("ck_overrides_kind")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_overrides_interval")),
        sa.ForeignKeyConstraint(["responder_id"], ["responders.id"], ondelete="CASCADE",
                                name=op.f("fk_overrides_responder_id_responders")),
        sa.ForeignKeyConstraint(["covered_by"], ["responders.id"], ondelete="SET NULL",
                                name=op.f("fk_overrides_covered_by_responders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_overrides")),
    )
    op.create_index(op.f("ix_overrides_starts_at"), "overrides", ["starts_at"])
    op.create_index(op.f("ix_overrides_responder_id"), "overrides", ["responder_id"])


def downgrade() -> None:
    op.drop_table("overrides")
    op.drop_table("shifts")
    op.drop_table("responder_languages")
    op.drop_table("responders")
    op.drop_table("team_adjacency")
    op.drop_table("team_neighborhoods")
    op.drop_table("teams")
