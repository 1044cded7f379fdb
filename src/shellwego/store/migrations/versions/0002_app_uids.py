"""a uid per app; where an instance is reached

Revision ID: 0002
Revises: 0001

Every app gets a uid of its own (its instances, one-off commands and builds run as it);
``uid_leases`` keeps every uid ever handed out so none is given twice. Apps that exist
already get uids from the default range (1000000 up), in the order they were created.
``instances.address`` is where the edge reaches an instance that has a network of its own.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_UID = 1000000


def upgrade() -> None:
    op.create_table(
        "uid_leases",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uid_leases")),
        sa.UniqueConstraint("uid", name=op.f("uq_uid_leases_uid")),
    )
    # plain ADD COLUMN and a unique index, never a batch table rebuild: SQLite would
    # rebuild the table from its reflection, which forgets the NOCASE collation of names
    op.add_column("apps", sa.Column("uid", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_apps_uid"), "apps", ["uid"], unique=True)
    op.add_column("instances", sa.Column("address", sa.String(length=64), nullable=True))

    bind = op.get_bind()
    apps = bind.execute(sa.text("SELECT id, created_at FROM apps ORDER BY created_at, id")).all()
    for offset, (app_id, created_at) in enumerate(apps):
        uid = FIRST_UID + offset
        bind.execute(
            sa.text("UPDATE apps SET uid = :uid WHERE id = :id"), {"uid": uid, "id": app_id}
        )
        bind.execute(
            sa.text(
                "INSERT INTO uid_leases (id, created_at, updated_at, uid, app_id) "
                "VALUES (:lease, :at, :at, :uid, :id)"
            ),
            # a lease's id: the app's, which no other lease takes (an app has one uid)
            {"lease": app_id, "uid": uid, "id": app_id, "at": created_at},
        )


def downgrade() -> None:
    op.drop_column("instances", "address")
    op.drop_index(op.f("ix_apps_uid"), table_name="apps")
    op.drop_column("apps", "uid")
    op.drop_table("uid_leases")
