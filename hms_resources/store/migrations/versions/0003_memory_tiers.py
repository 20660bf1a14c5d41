"""Memory tiers and tier migrations, per daily partition.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_tiers",
        sa.Column("partition_date", sa.String(10), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("memory_id", sa.String(255), primary_key=True),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "tier_migrations",
        sa.Column("partition_date", sa.String(10), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("memory_id", sa.String(255), primary_key=True),
        sa.Column("from_tier", sa.String(8)),
        sa.Column("to_tier", sa.String(8)),
        sa.Column("score", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.String(27), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tier_migrations")
    op.drop_table("memory_tiers")
