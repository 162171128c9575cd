"""roster revision: one row bumped by every roster write, for readers that keep the roster

Revision ID: 0008_roster_revision
Revises: 0007_callback_attempts
Create Date: 2026-12-05

The row starts at revision 1 (a roster from before is "some roster": readers load it once).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_roster_revision"
down_revision: str | Sequence[str] | None = "0007_callback_attempts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "roster_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_revision")),
    )
    op.bulk_insert(table, [{"id": 1, "revision": 1}])


def downgrade() -> None:
    op.drop_table("roster_revision")
