"""Concepts and graph edges.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "concepts",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("concept_id", sa.String(64), primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("summary_member_ids", sa.Text, nullable=False),
        sa.Column("member_ids", sa.Text, nullable=False),
        sa.Column("centroid", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("cohesion", sa.Float, nullable=False),
        sa.Column("first_seen", sa.String(27)),
        sa.Column("last_seen", sa.String(27)),
        sa.Column("member_tokens", sa.Integer, nullable=False),
        sa.Column("summary_tokens", sa.Integer, nullable=False),
    )
    op.create_table(
        "graph_edges",
        sa.Column("edge_type", sa.String(32), primary_key=True),
        sa.Column("source", sa.String(520), primary_key=True),
        sa.Column("target", sa.String(520), primary_key=True),
        sa.Column("qualifier", sa.String(255), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("properties", sa.Text, nullable=False),
    )
    op.create_index("ix_graph_edges_user", "graph_edges", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_graph_edges_user", table_name="graph_edges")
    op.drop_table("graph_edges")
    op.drop_table("concepts")
