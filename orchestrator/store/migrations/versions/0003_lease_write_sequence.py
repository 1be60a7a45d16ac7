"""The lease row carries the sequence number of its owner's last committed write batch.

An orchestrator writes `written_seq` in the same transaction as each batch of state changes, so that after a
commit cut off by a dropped connection it can tell whether the batch was applied before writing it again, and so
that a write from an orchestrator that lost the lease is refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orchestrator_leases") as batch:
        batch.add_column(sa.Column("written_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orchestrator_leases") as batch:
        batch.drop_column("written_seq")
