"""Tiers read per user: each user's latest partition, since user shards migrate a day separately.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_memory_tiers_user_day", "memory_tiers", ["user_id", "partition_date"])


def downgrade() -> None:
    op.drop_index("ix_memory_tiers_user_day", table_name="memory_tiers")
