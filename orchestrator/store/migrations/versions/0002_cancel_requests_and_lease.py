"""Cancel requests through the store, and the lease that lets one orchestrator at a time own a store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.Double()


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("cancel_requested_at", Time, nullable=True))
    op.create_table(
        "orchestrator_leases",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("acquired_at", Time, nullable=False),
        sa.Column("heartbeat_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_orchestrator_leases"),
    )


def downgrade() -> None:
    op.drop_table("orchestrator_leases")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("cancel_requested_at")
