"""catalogue: image logos, visibility and run.sh templates; a site's admin nginx snippet

Revision ID: 0009_catalogue
Revises: 0008_orchestrators
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_catalogue"
down_revision = "0008_orchestrators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN everywhere (SQLite >= 3.35 has both): no table is copied, so
    # nothing that references sites is cascaded away.
    op.add_column("images", sa.Column("logo", sa.String(length=32), nullable=True))
    op.add_column(
        "images",
        sa.Column("visibility", sa.String(length=16), nullable=False, server_default="everyone"),
    )
    op.add_column("images", sa.Column("run_template", sa.Text(), nullable=True))
    op.execute("UPDATE images SET visibility = 'hidden' WHERE NOT is_public")
    op.execute("ALTER TABLE images DROP COLUMN is_public")
    op.add_column("sites", sa.Column("nginx_snippet", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE sites DROP COLUMN nginx_snippet")
    op.add_column(
        "images",
        sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.execute("UPDATE images SET is_public = (visibility = 'everyone')")
    for column in ("run_template", "visibility", "logo"):
        op.execute(f"ALTER TABLE images DROP COLUMN {column}")
