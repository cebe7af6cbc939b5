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
    # A plain ADD COLUMN, not a batch copy of the table: on SQLite the copy's DROP TABLE
    # would cascade to the rows that reference sites (members, domains, ...).
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE sites ADD COLUMN orchestrator_id INTEGER"
            " CONSTRAINT fk_sites_orchestrator_id_orchestrators REFERENCES orchestrators (id)"
        )
    else:
        op.add_column("sites", sa.Column("orchestrator_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            op.f("fk_sites_orchestrator_id_orchestrators"),
            "sites",
            "orchestrators",
            ["orchestrator_id"],
            ["id"],
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(
            op.f("fk_sites_orchestrator_id_orchestrators"), "sites", type_="foreignkey"
        )
        op.drop_column("sites", "orchestrator_id")
        op.drop_table("orchestrators")
        return
    # SQLite drops a column used in a foreign key only by copying the table, and the copy's
    # DROP TABLE deletes (cascades to) the rows referencing sites unless foreign keys are off.
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "0008 cannot be undone on SQLite inside a transaction that already changed "
            "rows (foreign keys cannot be turned off there): downgrade it on its own"
        )
    try:
        with op.batch_alter_table("sites") as batch:
            batch.drop_column("orchestrator_id")
        op.drop_table("orchestrators")
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
