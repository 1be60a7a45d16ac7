"""The initial schema: workflows, tasks and their history, the event outbox, results, API keys and metrics.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.Double()
RUN_ID = 128
TASK_ID = 200


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=True),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_workflows"),
    )
    op.create_index("ix_workflows_status_created_at", "workflows", ["status", "created_at"])
    op.create_index("ix_workflows_created_at", "workflows", ["created_at"])
    op.create_index("ix_workflows_name", "workflows", ["name"])

    op.create_table(
        "tasks",
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("task_id", sa.String(TASK_ID), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Double(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_ref", sa.String(400), nullable=True),
        sa.Column("ready_at", Time, nullable=True),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("next_attempt_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["workflows.run_id"], name="fk_tasks_run_id_workflows",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "task_id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_run_id_status", "tasks", ["run_id", "status", "task_id"])

    op.create_table(
        "task_dependencies",
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("task_id", sa.String(TASK_ID), nullable=False),
        sa.Column("depends_on", sa.String(TASK_ID), nullable=False),
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"],
                                name="fk_task_dependencies_run_id_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "task_id", "depends_on", name="pk_task_dependencies"),
    )
    op.create_index("ix_task_dependencies_run_id_depends_on", "task_dependencies", ["run_id", "depends_on"])

    op.create_table(
        "task_executions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("task_id", sa.String(TASK_ID), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("exit_info", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("cpu", sa.Double(), nullable=True),
        sa.Column("peak_memory", sa.BigInteger(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=True),
        sa.Column("stderr", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"],
                                name="fk_task_executions_run_id_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_task_executions"),
    )
    op.create_index("ix_task_executions_run_id_task_id_attempt", "task_executions",
                    ["run_id", "task_id", "attempt"])

    op.create_table(
        "decisions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("task_id", sa.String(TASK_ID), nullable=True),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("input", Json, nullable=True),
        sa.Column("output", Json, nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("latency_us", sa.Double(), nullable=True),
        sa.Column("model_version", sa.String(100), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_run_id_id", "decisions", ["run_id", "id"])

    op.create_table(
        "workflow_optimizations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=True),
        sa.Column("workflow", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("params", Json, nullable=True),
        sa.Column("predicted_gain", sa.Double(), nullable=True),
        sa.Column("verified_gain", sa.Double(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_optimizations"),
    )
    op.create_index("ix_workflow_optimizations_run_id", "workflow_optimizations", ["run_id"])
    op.create_index("ix_workflow_optimizations_workflow", "workflow_optimizations", ["workflow"])

    op.create_table(
        "resource_predictions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=True),
        sa.Column("task_id", sa.String(TASK_ID), nullable=True),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        *[sa.Column(name, sa.Double(), nullable=True) for name in (
            "predicted_runtime", "predicted_cpu", "predicted_memory",
            "runtime_lower", "runtime_upper", "cpu_lower", "cpu_upper", "memory_lower", "memory_upper",
            "actual_runtime", "actual_cpu", "actual_memory",
        )],
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_resource_predictions"),
    )
    op.create_index("ix_resource_predictions_run_id_task_id", "resource_predictions", ["run_id", "task_id"])
    op.create_index("ix_resource_predictions_category_created_at", "resource_predictions",
                    ["category", "created_at"])

    op.create_table(
        "performance_metrics",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("labels", Json, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_performance_metrics"),
    )
    op.create_index("ix_performance_metrics_name_created_at", "performance_metrics", ["name", "created_at"])
    op.create_index("ix_performance_metrics_run_id", "performance_metrics", ["run_id"])

    op.create_table(
        "system_state_samples",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("ts", Time, nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("cpus_total", sa.Double(), nullable=False),
        sa.Column("cpus_used", sa.Double(), nullable=False),
        sa.Column("memory_total", sa.BigInteger(), nullable=False),
        sa.Column("memory_used", sa.BigInteger(), nullable=False),
        sa.Column("queue_length", sa.Integer(), nullable=False),
        sa.Column("running_tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_system_state_samples"),
    )
    op.create_index("ix_system_state_samples_ts", "system_state_samples", ["ts"])
    op.create_index("ix_system_state_samples_node_ts", "system_state_samples", ["node", "ts"])

    op.create_table(
        "events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(RUN_ID), nullable=True),
        sa.Column("task_id", sa.String(TASK_ID), nullable=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_run_id_id", "events", ["run_id", "id"])

    op.create_table(
        "event_deliveries",
        sa.Column("sink", sa.String(200), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("sink", name="pk_event_deliveries"),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("revoked_at", Time, nullable=True),
        sa.Column("last_used_at", Time, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("uq_api_keys_active_name", "api_keys", ["name"], unique=True,
                    sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"))

    op.create_table(
        "results",
        sa.Column("run_id", sa.String(RUN_ID), nullable=False),
        sa.Column("task_id", sa.String(TASK_ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("inline", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.String(1000), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"],
                                name="fk_results_run_id_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "task_id", name="pk_results"),
    )


def downgrade() -> None:
    for table in ("results", "api_keys", "event_deliveries", "events", "system_state_samples",
                  "performance_metrics", "resource_predictions", "workflow_optimizations", "decisions",
                  "task_executions", "task_dependencies", "tasks", "workflows"):
        op.drop_table(table)
