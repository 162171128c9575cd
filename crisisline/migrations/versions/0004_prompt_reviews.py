"""prompt reviews: the reviewer role (with its languages) and reviewers' texts and recordings

Revision ID: 0004_prompt_reviews
Revises: 0003_users_audit
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crisisline.roster.schema import UTCDateTime

revision: str = "0004_prompt_reviews"
down_revision: str | Sequence[str] | None = "0003_users_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLES = "role IN ('supervisor', 'admin', 'oversight')"
NEW_ROLES = "role IN ('supervisor', 'admin', 'oversight', 'reviewer')"


def upgrade() -> None:
    # Batch mode: SQLite can't alter a CHECK constraint in place; it rebuilds the table.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("languages", sa.String(255), nullable=True))
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_users_role"), sa.text(NEW_ROLES))
    op.create_table(
        "prompt_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("prompt", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("base_text", sa.Text(), nullable=True),
        sa.Column("text_by", sa.String(64), nullable=True),
        sa.Column("text_at", UTCDateTime(), nullable=True),
        sa.Column("recording_sha256", sa.String(64), nullable=True),
        sa.Column("recording_seconds", sa.Float(), nullable=True),
        sa.Column("recording_source", sa.String(16), nullable=True),
        sa.Column("recording_by", sa.String(64), nullable=True),
        sa.Column("recording_at", UTCDateTime(), nullable=True),
        sa.Column("recording_text", sa.Text(), nullable=True),
        sa.Column("recording_wav", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'reviewed')", name=op.f("ck_prompt_reviews_status")),
        sa.CheckConstraint("recording_source IS NULL OR recording_source IN ('browser', 'upload')",
                           name=op.f("ck_prompt_reviews_recording_source")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_reviews")),
        sa.UniqueConstraint("language", "prompt", name=op.f("uq_prompt_reviews_language_prompt")),
    )


def downgrade() -> None:
    op.drop_table("prompt_reviews")
    op.execute(sa.text("DELETE FROM users WHERE role = 'reviewer'"))
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_users_role"), sa.text(OLD_ROLES))
        batch.drop_column("languages")
