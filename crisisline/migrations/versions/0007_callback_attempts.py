"""callback requests worked by the line: attempts, the safety answers, the last result, time
to a human, when it ended; status wide enough for "fallback_answered"

Revision ID: 0007_callback_attempts
Revises: 0006_text_messages
Create Date: 2026-12-04

Rows from before keep their status ("waiting": open, "done": closed by hand); the code reads
both (crisisline/records/callbacks.py), so nothing is rewritten here and a downgrade loses
only the new columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0007_callback_attempts"
down_revision: str | Sequence[str] | None = "0006_text_messages"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("callback_requests") as batch:
        batch.alter_column("status", existing_type=sa.String(16), type_=sa.String(24),
                           existing_nullable=False)
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("safe_here", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("message_ok", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("message_left", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("result", sa.String(32), nullable=True))
        batch.add_column(sa.Column("time_to_human_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ended_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # The old width can't hold "fallback_answered": closed, as a supervisor would have.
    op.execute("UPDATE callback_requests SET status = 'done' WHERE length(status) > 16")
    with op.batch_alter_table("callback_requests") as batch:
        for name in ("ended_at", "time_to_human_s", "result", "message_left", "message_ok",
                     "safe_here", "attempts"):
            batch.drop_column(name)
        batch.alter_column("status", existing_type=sa.String(24), type_=sa.String(16),
                           existing_nullable=False)
