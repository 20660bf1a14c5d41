"""Memories found by their id alone within a tenant (`GET /v1/memories/{id}` without `user_id`), and
the log's first day found without a scan (the tier partitions start on it at every definitions load).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_memory_keys_memory", "memory_keys", ["memory_id", "user_id"])
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_index("ix_memory_keys_memory", table_name="memory_keys")
