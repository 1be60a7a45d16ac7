"""The store's tables as typed SQLAlchemy 2 models; the Alembic migrations in `migrations/` create exactly these.

Times are UNIX epoch seconds (double precision, UTC) everywhere, like the `at` fields the runtime passes in.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT ids on PostgreSQL; INTEGER on SQLite, where only an INTEGER PRIMARY KEY is an auto-assigned rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# JSONB on PostgreSQL, JSON text on SQLite.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.Double()

RUN_ID = 128  # max length of a run id
TASK_ID = 200  # max length of a task id (see orchestrator.model)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class WorkflowRow(Base):
    __tablename__ = "workflows"

    run_id: Mapped[str] = mapped_column(sa.String(RUN_ID), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)  # names and categories come from users: no length limit
    family: Mapped[str | None] = mapped_column(sa.Text)
    policy: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[float] = mapped_column(Time)
    started_at: Mapped[float | None] = mapped_column(Time)
    finished_at: Mapped[float | None] = mapped_column(Time)
    updated_at: Mapped[float] = mapped_column(Time)
    # Set by a cancel request made through the store (no orchestrator reachable); the orchestrator running the
    # run, or the next one to resume it, cancels it.
    cancel_requested_at: Mapped[float | None] = mapped_column(Time)

    __table_args__ = (
        sa.Index("ix_workflows_status_created_at", "status", "created_at"),
        sa.Index("ix_workflows_created_at", "created_at"),
        sa.Index("ix_workflows_name", "name"),
    )


class TaskRow(Base):
    __tablename__ = "tasks"

    run_id: Mapped[str] = mapped_column(
        sa.String(RUN_ID), sa.ForeignKey("workflows.run_id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(sa.String(TASK_ID), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer)  # index of the task in the workflow spec
    category: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    node: Mapped[str | None] = mapped_column(sa.String(200))
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    cpus: Mapped[float] = mapped_column(sa.Double)
    memory: Mapped[int] = mapped_column(sa.BigInteger)
    gpus: Mapped[float] = mapped_column(sa.Double)
    error: Mapped[str | None] = mapped_column(sa.Text)
    result_ref: Mapped[str | None] = mapped_column(sa.String(400))
    ready_at: Mapped[float | None] = mapped_column(Time)
    started_at: Mapped[float | None] = mapped_column(Time)
    finished_at: Mapped[float | None] = mapped_column(Time)
    next_attempt_at: Mapped[float | None] = mapped_column(Time)

    # (run_id, status) serves the per-status queries; task_id is included so that an update keyed by
    # (run_id, task_id, status) is an exact lookup on either index, whatever the planner's statistics say.
    __table_args__ = (sa.Index("ix_tasks_run_id_status", "run_id", "status", "task_id"),)


class TaskDependencyRow(Base):
    __tablename__ = "task_dependencies"

    run_id: Mapped[str] = mapped_column(sa.String(RUN_ID), primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(TASK_ID), primary_key=True)
    depends_on: Mapped[str] = mapped_column(sa.String(TASK_ID), primary_key=True)

    # Only the dependent side has a foreign key: `Workflow` already guarantees every parent exists, and a
    # second per-row check doubles the cost of inserting a large workflow on PostgreSQL.
    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"], ondelete="CASCADE"),
        sa.Index("ix_task_dependencies_run_id_depends_on", "run_id", "depends_on"),
    )


class TaskExecutionRow(Base):
    __tablename__ = "task_executions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.String(RUN_ID))
    task_id: Mapped[str] = mapped_column(sa.String(TASK_ID))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    node: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[float | None] = mapped_column(Time)
    finished_at: Mapped[float | None] = mapped_column(Time)
    exit_info: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    duration: Mapped[float | None] = mapped_column(sa.Double)  # seconds, measured
    cpu: Mapped[float | None] = mapped_column(sa.Double)  # average cores in use, measured
    peak_memory: Mapped[int | None] = mapped_column(sa.BigInteger)  # bytes, measured
    stdout: Mapped[str | None] = mapped_column(sa.Text)
    stderr: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"], ondelete="CASCADE"),
        sa.Index("ix_task_executions_run_id_task_id_attempt", "run_id", "task_id", "attempt"),
    )


class DecisionRow(Base):
    """A scheduling decision. No foreign key: the simulator and training record decisions for simulated runs."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.String(RUN_ID))
    task_id: Mapped[str | None] = mapped_column(sa.String(TASK_ID))
    policy: Mapped[str] = mapped_column(sa.String(100))
    node: Mapped[str | None] = mapped_column(sa.String(200))
    input: Mapped[dict[str, Any] | None] = mapped_column(Json)
    output: Mapped[dict[str, Any] | None] = mapped_column(Json)
    confidence: Mapped[float | None] = mapped_column(sa.Double)
    latency_us: Mapped[float | None] = mapped_column(sa.Double)
    model_version: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (sa.Index("ix_decisions_run_id_id", "run_id", "id"),)


class WorkflowOptimizationRow(Base):
    __tablename__ = "workflow_optimizations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID))
    workflow: Mapped[str | None] = mapped_column(sa.Text)  # workflow name, when not tied to one run
    kind: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(Json)
    predicted_gain: Mapped[float | None] = mapped_column(sa.Double)
    verified_gain: Mapped[float | None] = mapped_column(sa.Double)
    created_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (
        sa.Index("ix_workflow_optimizations_run_id", "run_id"),
        sa.Index("ix_workflow_optimizations_workflow", "workflow"),
    )


class ResourcePredictionRow(Base):
    __tablename__ = "resource_predictions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID))
    task_id: Mapped[str | None] = mapped_column(sa.String(TASK_ID))
    category: Mapped[str] = mapped_column(sa.Text)
    model_version: Mapped[str] = mapped_column(sa.String(100))
    predicted_runtime: Mapped[float | None] = mapped_column(sa.Double)
    predicted_cpu: Mapped[float | None] = mapped_column(sa.Double)
    predicted_memory: Mapped[float | None] = mapped_column(sa.Double)
    runtime_lower: Mapped[float | None] = mapped_column(sa.Double)
    runtime_upper: Mapped[float | None] = mapped_column(sa.Double)
    cpu_lower: Mapped[float | None] = mapped_column(sa.Double)
    cpu_upper: Mapped[float | None] = mapped_column(sa.Double)
    memory_lower: Mapped[float | None] = mapped_column(sa.Double)
    memory_upper: Mapped[float | None] = mapped_column(sa.Double)
    actual_runtime: Mapped[float | None] = mapped_column(sa.Double)
    actual_cpu: Mapped[float | None] = mapped_column(sa.Double)
    actual_memory: Mapped[float | None] = mapped_column(sa.Double)
    created_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (
        sa.Index("ix_resource_predictions_run_id_task_id", "run_id", "task_id"),
        sa.Index("ix_resource_predictions_category_created_at", "category", "created_at"),
    )


class PerformanceMetricRow(Base):
    __tablename__ = "performance_metrics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID))
    name: Mapped[str] = mapped_column(sa.String(200))
    value: Mapped[float] = mapped_column(sa.Double)
    labels: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (
        sa.Index("ix_performance_metrics_name_created_at", "name", "created_at"),
        sa.Index("ix_performance_metrics_run_id", "run_id"),
    )


class SystemStateSampleRow(Base):
    __tablename__ = "system_state_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Time)
    node: Mapped[str | None] = mapped_column(sa.String(200))  # None = the whole cluster
    cpus_total: Mapped[float] = mapped_column(sa.Double)
    cpus_used: Mapped[float] = mapped_column(sa.Double)
    memory_total: Mapped[int] = mapped_column(sa.BigInteger)
    memory_used: Mapped[int] = mapped_column(sa.BigInteger)
    queue_length: Mapped[int] = mapped_column(sa.Integer)
    running_tasks: Mapped[int] = mapped_column(sa.Integer)

    __table_args__ = (
        sa.Index("ix_system_state_samples_ts", "ts"),
        sa.Index("ix_system_state_samples_node_ts", "node", "ts"),
    )


class EventRow(Base):
    """The outbox: every state change appends one row in the same transaction; sinks read it in id order."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID))
    task_id: Mapped[str | None] = mapped_column(sa.String(TASK_ID))
    type: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[float] = mapped_column(Time)

    # AUTOINCREMENT on SQLite: ids are never reused, even after the newest rows are deleted.
    __table_args__ = (sa.Index("ix_events_run_id_id", "run_id", "id"), {"sqlite_autoincrement": True})


class EventDeliveryRow(Base):
    """Per-sink cursor: the id of the last event the sink has accepted."""

    __tablename__ = "event_deliveries"

    sink: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[float] = mapped_column(Time)


class OrchestratorLeaseRow(Base):
    """Which orchestrator owns this store: one at a time, kept by a heartbeat (see `Store.acquire_lease`)."""

    __tablename__ = "orchestrator_leases"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(200))  # a random id per orchestrator start
    host: Mapped[str | None] = mapped_column(sa.String(200))
    pid: Mapped[int | None] = mapped_column(sa.Integer)
    acquired_at: Mapped[float] = mapped_column(Time)
    heartbeat_at: Mapped[float] = mapped_column(Time)
    # The owner's last committed write batch (`Store.apply(..., batch=...)`): tells whether a batch whose commit
    # was cut off was applied.
    written_seq: Mapped[int | None] = mapped_column(sa.BigInteger)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)  # sha256 hex of the plaintext key
    role: Mapped[str] = mapped_column(sa.String(50))
    created_at: Mapped[float] = mapped_column(Time)
    revoked_at: Mapped[float | None] = mapped_column(Time)
    last_used_at: Mapped[float | None] = mapped_column(Time)
    expires_at: Mapped[float | None] = mapped_column(Time)  # None: never expires

    # At most one not revoked key per name (an expired key keeps its name until revoked); revoked keys keep their
    # name for the audit trail.
    __table_args__ = (
        sa.Index(
            "uq_api_keys_active_name", "name", unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )


class ResultRow(Base):
    __tablename__ = "results"

    run_id: Mapped[str] = mapped_column(sa.String(RUN_ID), primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(TASK_ID), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # inline | file | parquet
    format: Mapped[str] = mapped_column(sa.String(16))  # json | pickle | pandas | arrow
    inline: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    path: Mapped[str | None] = mapped_column(sa.String(1000))  # relative to the store's storage_dir
    size: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id", "task_id"], ["tasks.run_id", "tasks.task_id"], ondelete="CASCADE"),
    )


TABLES = tuple(Base.metadata.sorted_tables)
