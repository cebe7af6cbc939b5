"""people: members added before they first sign in, banners, service accounts, comments on
site requests

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
    op.create_table(
        "banners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_banners_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_banners")),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("is_service", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("site_requests") as batch:
        batch.add_column(sa.Column("public_comment", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("admin_comment", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("site_requests") as batch:
        batch.drop_column("admin_comment")
        batch.drop_column("public_comment")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_service")
    op.drop_table("banners")
    op.drop_index("ix_pending_members_username", table_name="pending_members")
    op.drop_table("pending_members")
