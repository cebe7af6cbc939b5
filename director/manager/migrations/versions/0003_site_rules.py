"""site rules: a public comment on sites; site ids never reused

Revision ID: 0003_site_rules
Revises: 0002_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_site_rules"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("public_comment", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "site_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_ids")),
        sqlite_autoincrement=True,
    )
    # Start above every id already given: live sites and deleted ones (their operations stay).
    connection = op.get_bind()
    highest = connection.execute(
        sa.text(
            "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM sites"
            " UNION ALL SELECT MAX(site_id) AS m FROM operations) AS ids"
        )
    ).scalar()
    if highest:
        connection.execute(sa.text("INSERT INTO site_ids (id) VALUES (:id)"), {"id": int(highest)})
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('site_ids', 'id'), :id)"),
                {"id": int(highest)},
            )


def downgrade() -> None:
    op.drop_table("site_ids")
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("public_comment")
