"""text line: the messages of text conversations, and a call record's channel (sms, chat)

Revision ID: 0006_text_messages
Revises: 0005_call_outcome_details
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0006_text_messages"
down_revision: str | Sequence[str] | None = "0005_call_outcome_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch:
        batch.add_column(sa.Column("channel", sa.String(8), nullable=True))
    op.create_table(
        "text_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("sender", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("stream_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["call_records.id"], ondelete="CASCADE",
                                name=op.f("fk_text_messages_call_id_call_records")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_text_messages")),
        sa.UniqueConstraint("call_id", "stream_id", name=op.f("uq_text_messages_call_id_stream_id")),
    )
    op.create_index(op.f("ix_text_messages_call_id"), "text_messages", ["call_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_text_messages_call_id"), table_name="text_messages")
    op.drop_table("text_messages")
    with op.batch_alter_table("call_records") as batch:
        batch.drop_column("channel")
