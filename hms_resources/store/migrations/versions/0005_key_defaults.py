"""Per-key chat settings: whether a key's conversations are captured, and its default user.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("capture", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("default_user", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("default_user")
        batch.drop_column("capture")
