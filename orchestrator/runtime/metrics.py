"""Runtime metrics through `ray.util.metrics`, so they reach Prometheus and the Ray dashboard."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

_LATENCY_US = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 100000]
_JCT_S = [1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400]
_TASK_S = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600]


class RuntimeMetrics:
    """The orchestrator's counters, gauges and histograms (names prefixed `orchestrator_`)."""

    def __init__(self) -> None:
        self.tasks_started = Counter("orchestrator_tasks_started", "Task attempts started")
        self.tasks_finished = Counter("orchestrator_tasks_finished", "Task attempts that succeeded")
        self.tasks_failed = Counter("orchestrator_tasks_failed", "Task attempts that failed", tag_keys=("kind",))
        self.workflows_finished = Counter("orchestrator_workflows_finished", "Workflow runs finished",
                                          tag_keys=("status", "policy"))
        self.queue_length = Gauge("orchestrator_queue_length", "Ready tasks waiting for the scheduler")
        self.running = Gauge("orchestrator_running_tasks", "Task attempts running")
        self.cpus_used = Gauge("orchestrator_cpus_reserved", "CPUs reserved by running tasks")
        self.cpus_total = Gauge("orchestrator_cpus_total", "CPUs of the alive nodes")
        self.memory_used = Gauge("orchestrator_memory_reserved_bytes", "Memory reserved by running tasks (bytes)")
        self.memory_total = Gauge("orchestrator_memory_total_bytes", "Memory of the alive nodes (bytes)")
        self.gpus_used = Gauge("orchestrator_gpus_reserved", "GPUs reserved by running tasks")
        self.gpus_total = Gauge("orchestrator_gpus_total", "GPUs of the alive nodes")
        self.decision_latency = Histogram("orchestrator_decision_latency_us", "Scheduling decision latency (us)",
                                          boundaries=_LATENCY_US)
        self.task_duration = Histogram("orchestrator_task_duration_s", "Task attempt duration (s)",
                                       boundaries=_TASK_S)
        self.jct = Histogram("orchestrator_workflow_jct_s", "Workflow completion time (s)", boundaries=_JCT_S,
                             tag_keys=("policy",))

    def started(self, n: int) -> None:
        self.tasks_started.inc(n)

    def finished(self, n: int, duration: float) -> None:
        self.tasks_finished.inc(n)
        self.task_duration.observe(duration)

    def failed(self, n: int, kind: str) -> None:
        self.tasks_failed.inc(n, tags={"kind": kind})

    def decisions(self, n: int, latency_us_each: float) -> None:
        self.decision_latency.observe(latency_us_each)

    def workflow_finished(self, status: str, jct: float, policy: str) -> None:
        self.workflows_finished.inc(1, tags={"status": status, "policy": policy})
        self.jct.observe(jct, tags={"policy": policy})

    def cluster(self, cpus_used: float, cpus_total: float, queue: int, running: int, memory_used: float = 0.0,
                memory_total: float = 0.0, gpus_used: float = 0.0, gpus_total: float = 0.0) -> None:
        self.cpus_used.set(cpus_used)
        self.cpus_total.set(cpus_total)
        self.memory_used.set(memory_used)
        self.memory_total.set(memory_total)
        self.gpus_used.set(gpus_used)
        self.gpus_total.set(gpus_total)
        self.queue_length.set(queue)
        self.running.set(running)
