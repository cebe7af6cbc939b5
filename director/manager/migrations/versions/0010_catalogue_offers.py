"""catalogue_offers: the built images `director init` has put into the catalogue once

Revision ID: 0010_catalogue_offers
Revises: 0009_catalogue
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_catalogue_offers"
down_revision = "0009_catalogue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_offers",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_catalogue_offers")),
    )


def downgrade() -> None:
    op.drop_table("catalogue_offers")
