"""call records: when caller and responder met, fallback answered, why a call ended, which PBX

Revision ID: 0005_call_outcome_details
Revises: 0004_prompt_reviews
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0005_call_outcome_details"
down_revision: str | Sequence[str] | None = "0004_prompt_reviews"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch:
        batch.add_column(sa.Column("connected_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("fallback_answered", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("end_reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("pbx_node", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_records") as batch:
        batch.drop_column("pbx_node")
        batch.drop_column("end_reason")
        batch.drop_column("fallback_answered")
        batch.drop_column("connected_at")
