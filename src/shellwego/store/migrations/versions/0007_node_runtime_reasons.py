"""why a node does not offer a runtime

Revision ID: 0007
Revises: 0006

``nodes.runtime_reasons`` maps each runtime a node does not offer to the reason its agent
gave (``/dev/kvm is missing``, ``no crun or runc found``). Nodes registered before have
none until their agent's next start.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN (never a batch rebuild: SQLite would forget the NOCASE collation of
    # hostnames); the default fills the rows that exist, the code sets every new one
    op.add_column(
        "nodes",
        sa.Column(
            "runtime_reasons",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
    )


def downgrade() -> None:
    op.drop_column("nodes", "runtime_reasons")
