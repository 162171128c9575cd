"""call records, call events, callback requests

Revision ID: 0002_call_records
Revises: 0001_roster
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0002_call_records"
down_revision: str | Sequence[str] | None = "0001_roster"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("neighborhood", sa.String(64), nullable=True),
        sa.Column("zip_code", sa.String(10), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("time_to_human_s", sa.Float(), nullable=True),
        sa.Column("waves_used", sa.Integer(), nullable=False),
        sa.Column("answered_by", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("end_step", sa.String(32), nullable=True),
        sa.Column("consented_to_message", sa.Boolean(), nullable=False),
        sa.Column("interpreter", sa.String(64), nullable=True),
        sa.Column("caller_number", sa.String(32), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("transcript_status", sa.String(16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_records")),
    )
    for column in ("source", "language", "neighborhood", "started_at", "outcome"):
        op.create_index(op.f(f"ix_call_records_{column}"), "call_records", [column])
    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("stream_id", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["call_records.id"], ondelete="CASCADE",
                                name=op.f("fk_call_events_call_id_call_records")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
        sa.UniqueConstraint("stream_id", name=op.f("uq_call_events_stream_id")),
    )
    op.create_index(op.f("ix_call_events_call_id"), "call_events", ["call_id"])
    op.create_table(
        "callback_requests",
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("number", sa.String(32), nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("neighborhood", sa.String(64), nullable=True),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(200), nullable=True),
        sa.Column("done_by", sa.String(64), nullable=True),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["call_records.id"], ondelete="CASCADE",
                                name=op.f("fk_callback_requests_call_id_call_records")),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_callback_requests")),
    )
    op.create_index(op.f("ix_callback_requests_requested_at"), "callback_requests",
                    ["requested_at"])
    op.create_index(op.f("ix_callback_requests_status"), "callback_requests", ["status"])


def downgrade() -> None:
    op.drop_table("callback_requests")
    op.drop_table("call_events")
    op.drop_table("call_records")
