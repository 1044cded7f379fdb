"""an instance's number within its process type (Heroku's ``DYNO=web.1``)

Revision ID: 0004
Revises: 0003

``instances.ordinal`` is given when an instance is placed: the lowest number its peers
(the instances it runs beside: those of its deployment, else every serving instance of its
app's process type) do not use. Instances that exist already have none (no ``DYNO``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("ordinal", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "ordinal")
