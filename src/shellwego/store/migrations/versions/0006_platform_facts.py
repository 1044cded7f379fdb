"""platform facts: one row per named fact about the whole platform

Revision ID: 0006
Revises: 0005

``platform_facts.name`` is unique: the row ``bootstrapped`` is written in the transaction
that makes the first owner, so of two concurrent bootstraps (two replicas, or
``shellwego bootstrap`` run twice) exactly one commits; ``master-key`` holds the
fingerprint of the master key the replicas must share.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_facts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_facts")),
        sa.UniqueConstraint("name", name=op.f("uq_platform_facts_name")),
    )


def downgrade() -> None:
    op.drop_table("platform_facts")
