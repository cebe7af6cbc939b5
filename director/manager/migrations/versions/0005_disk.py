"""disk: a per-site disk quota, and each site's disk use as last measured

Revision ID: 0005_disk
Revises: 0004_people
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_disk"
down_revision = "0004_people"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("disk_quota_mb", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("disk_usage_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("disk_quota_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("disk_quota_bytes")
        batch.drop_column("disk_usage_bytes")
        batch.drop_column("disk_quota_mb")
