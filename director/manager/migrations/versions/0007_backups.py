"""backups: a record of every backup run (what, when, how long, which snapshot, why it failed)

Revision ID: 0007_backups
Revises: 0006_tasks
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_backups"
down_revision = "0006_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("site_name", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("snapshot", sa.String(length=64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_runs")),
    )
    op.create_index("ix_backup_runs_site_started", "backup_runs", ["site_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_backup_runs_site_started", table_name="backup_runs")
    op.drop_table("backup_runs")
