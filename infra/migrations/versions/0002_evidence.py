"""Evidence files of incidents: the snapshot's and the clip's paths (relative to the evidence directory).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("snapshot_path", sa.String(255), nullable=True))
        batch.add_column(sa.Column("clip_path", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("clip_path")
        batch.drop_column("snapshot_path")
