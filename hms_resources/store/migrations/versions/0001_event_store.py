"""The event log, memory keys, the memories projection and projection cursors.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("memory_id", sa.String(255), nullable=False),
        sa.Column("occurred_at", sa.String(27), nullable=False),
        sa.Column("recorded_at", sa.String(27), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_events_memory", "events", ["user_id", "memory_id"])
    op.create_table(
        "memory_keys",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("memory_id", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_sequence", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "memories",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("memory_id", sa.String(255), primary_key=True),
        sa.Column("content", sa.Text),
        sa.Column("session_id", sa.String(255)),
        sa.Column("memory_type", sa.String(64)),
        sa.Column("category", sa.String(255)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("importance", sa.Float),
        sa.Column("confidence", sa.Float),
        sa.Column("source_type", sa.String(255)),
        sa.Column("source_id", sa.String(255)),
        sa.Column("created_by", sa.String(255)),
        sa.Column("parent_memory_id", sa.String(255)),
        sa.Column("related_memory_ids", sa.Text, nullable=False),
        sa.Column("relations", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(27)),
        sa.Column("last_modified_at", sa.String(27)),
        sa.Column("access_count", sa.Integer, nullable=False),
        sa.Column("last_accessed_at", sa.String(27)),
        sa.Column("relevant_count", sa.Integer, nullable=False),
        sa.Column("irrelevant_count", sa.Integer, nullable=False),
        sa.Column("relevance_score_sum", sa.Float, nullable=False),
        sa.Column("relevance_score_count", sa.Integer, nullable=False),
        sa.Column("is_archived", sa.Boolean, nullable=False),
        sa.Column("archive_reason", sa.Text),
        sa.Column("archived_at", sa.String(27)),
        sa.Column("is_forgotten", sa.Boolean, nullable=False),
        sa.Column("forgotten_at", sa.String(27)),
        sa.Column("event_count", sa.Integer, nullable=False),
        sa.Column("last_sequence", sa.BigInteger),
    )
    op.create_table(
        "projection_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.String(27), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("projection_cursors")
    op.drop_table("memories")
    op.drop_table("memory_keys")
    op.drop_index("ix_events_memory", table_name="events")
    op.drop_table("events")
