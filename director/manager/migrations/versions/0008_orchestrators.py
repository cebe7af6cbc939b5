"""orchestrators: a pool of orchestrators, and the one each site runs on

Revision ID: 0008_orchestrators
Revises: 0007_backups
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_orchestrators"
down_revision = "0007_backups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orchestrators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("nginx", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrators")),
        sa.UniqueConstraint("name", name=op.f("uq_orchestrators_name")),
    )
    # Existing sites get their orchestrator when the manager starts (the configured one).
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("orchestrator_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_sites_orchestrator_id_orchestrators"),
            "orchestrators",
            ["orchestrator_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_constraint(op.f("fk_sites_orchestrator_id_orchestrators"), type_="foreignkey")
        batch.drop_column("orchestrator_id")
    op.drop_table("orchestrators")
