"""disk: a per-site disk quota, and each site's disk use as last measured

Revision ID: 0004_disk
Revises: 0003_site_rules
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_disk"
down_revision = "0003_site_rules"
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
