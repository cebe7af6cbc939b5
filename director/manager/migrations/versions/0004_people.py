"""people: site members added before they first signed in

Revision ID: 0004_people
Revises: 0003_site_rules
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_people"
down_revision = "0003_site_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_pending_members_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_members")),
        sa.UniqueConstraint("site_id", "username", name="uq_pending_members_site_id_username"),
    )
    op.create_index("ix_pending_members_username", "pending_members", ["username"])


def downgrade() -> None:
    op.drop_index("ix_pending_members_username", table_name="pending_members")
    op.drop_table("pending_members")
