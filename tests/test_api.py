"""The Python API: `@task` and `WorkflowBuilder` build a validated Workflow; it runs on the session Ray cluster; and
`run()` refuses to run inside a Ray worker (a script's top-level run, re-executed by every worker that imports it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ray

from orchestrator.errors import OrchestratorError, WorkflowError
from orchestrator.model import Workflow
from orchestrator.runtime import TaskHandle, WorkflowBuilder, task
from orchestrator.runtime.config import ACTOR_NAME, NAMESPACE, RuntimeConfig

ROOT = Path(__file__).resolve().parent.parent


@task(cpus=2, memory="256MiB", gpus=0, retries=3, retry_delay=0.5, timeout=30, priority=7, category="load",
      duration=1.5)
def extract(shard, scale=1):
    return [shard * scale] * 3


@task
def total(*parts):
    return sum(sum(p) for p in parts)


@task()
def note(text):
    return text


def _kill_orchestrator():
    try:
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))
    except ValueError:
        pass


def test_builder_records_a_validated_workflow_with_dependencies_args_and_resources():
    with WorkflowBuilder("etl", policy="fifo", metadata={"owner": "me"}) as wf:
        parts = [extract(i, scale=10) for i in range(2)]
        first = note("start")
        summed = total(*parts, after=[first])
        note({"sum": summed, "all": [parts[0], 5]})
    assert all(isinstance(h, TaskHandle) for h in parts) and summed.id == "total"
    built = wf.build()
    assert isinstance(built, Workflow)
    assert built.name == "etl" and built.policy == "fifo" and built.metadata == {"owner": "me"}
    tasks = {t.id: t for t in built.tasks}
    assert list(tasks) == ["extract", "extract-1", "note", "total", "note-1"]  # repeated calls are numbered

    e = tasks["extract-1"]
    assert e.entrypoint == f"{__name__}:extract" and e.category == "load"
    assert e.args == [1] and e.kwargs == {"scale": 10} and e.depends_on == []
    assert e.resources.cpus == 2 and e.resources.memory == 256 * 1024 ** 2 and e.resources.gpus == 0
    assert (e.retries, e.retry_delay, e.timeout, e.priority, e.duration) == (3, 0.5, 30, 7, 1.5)

    t = tasks["total"]
    assert t.args == [{"$ref": "extract"}, {"$ref": "extract-1"}]  # results passed by reference
    assert t.depends_on == ["extract", "extract-1", "note"]  # `after=` adds an ordering-only dependency
    assert t.resources.cpus == 1 and t.resources.memory == 0 and t.retries == 0 and t.category == "total"

    n = tasks["note-1"]
    assert n.args == [{"sum": {"$ref": "total"}, "all": [{"$ref": "extract"}, 5]}]  # nested handles found too
    assert n.depends_on == ["total", "extract"]


def test_builder_workflow_is_validated():
    with WorkflowBuilder("bad") as wf:
        note("x")
    wf.tasks[0] = wf.tasks[0].model_copy(update={"depends_on": ["nowhere"]})
    with pytest.raises(WorkflowError, match="nowhere"):
        wf.build()


def test_decorated_function_outside_a_builder_is_a_plain_function():
    assert extract(2, scale=3) == [6, 6, 6]
    assert total([1, 2], [3]) == 6
    assert extract.__name__ == "extract" and extract.__wrapped__(1) == [1, 1, 1]


@ray.remote(num_cpus=0)
def _worker_side() -> tuple[bool, str | None]:
    from orchestrator.runtime.api import ensure_not_in_ray_worker, in_ray_worker

    try:
        ensure_not_in_ray_worker("submitting from a task")
    except OrchestratorError as exc:
        return in_ray_worker(), f"{type(exc).__name__}: {exc}"
    return in_ray_worker(), None


def test_the_worker_check_tells_a_ray_task_from_the_driver(ray_cluster):
    """Both sides: in a task on the cluster `in_ray_worker()` is True and the guard refuses with its guidance; in
    this driver, connected to the same cluster, it is False and the guard lets the call through."""
    from orchestrator.runtime.api import ensure_not_in_ray_worker, in_ray_worker

    in_worker, refusal = ray.get(_worker_side.remote(), timeout=60)
    assert in_worker is True
    assert refusal is not None, "the guard let a Ray task through"
    assert refusal.startswith("OrchestratorError: submitting from a task was called inside a Ray worker.")
    assert 'build and run it under `if __name__ == "__main__":`' in refusal
    assert ray.is_initialized() and in_ray_worker() is False
    ensure_not_in_ray_worker("submitting from the driver")  # no error in the driver


def test_a_built_workflow_runs_on_the_cluster(ray_cluster, tmp_path):
    """examples/python_api.py's workflow (task functions in an importable module, as workers need) on Ray: the
    results are those of calling the same functions directly."""
    from examples import python_api as ex
    from orchestrator.store import Store

    expected = ex.report(ex.summarise(*[ex.clean(ex.extract(i)) for i in range(3)]))  # plain calls
    config = RuntimeConfig(data_dir=str(tmp_path / "state"), redis_url=None)
    wf = ex.build()
    assert [t.id for t in wf.build().tasks] == ["extract", "clean", "extract-1", "clean-1", "extract-2", "clean-2",
                                                "summarise", "report"]
    try:
        final = wf.run(config=config, timeout=60)
    finally:
        _kill_orchestrator()
    assert final["status"] == "succeeded", final["error"]
    assert final["counts"] == {"succeeded": 8} and final["total"] == 8
    store = Store.open(None, data_dir=tmp_path / "state")
    tasks = {t.task_id: t for t in store.get_tasks(final["run_id"])}
    assert store.load_result(tasks["report"].result_ref) == expected
    assert store.load_result(tasks["clean-2"].result_ref) == ex.clean(ex.extract(2))
    assert store.get_workflow(final["run_id"]).policy == "srpt-cp"
    store.close()


@ray.remote(num_cpus=0)
def _run_inside_a_worker(kind: str) -> str:
    from orchestrator.runtime.client import run_workflow

    with WorkflowBuilder("inner") as wf:
        note("x")
    try:
        if kind == "builder":
            wf.run(timeout=5)
        else:
            run_workflow(wf.build(), timeout=5)
    except OrchestratorError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "it ran"


@pytest.mark.parametrize("kind", ["builder", "run_workflow"])
def test_run_inside_a_ray_task_is_a_clear_error(ray_cluster, kind):
    msg = ray.get(_run_inside_a_worker.remote(kind), timeout=60)
    assert msg.startswith("OrchestratorError: ") and "inside a Ray worker" in msg
    assert 'if __name__ == "__main__":' in msg
    with pytest.raises(ValueError):  # and nothing was started
        ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)


def test_a_script_without_a_main_guard_fails_clearly_instead_of_hanging(ray_cluster, tmp_path):
    """The README's example without `if __name__ == "__main__":`: the workers import the script for its task
    functions and run its top-level `wf.run()` again; that must fail the task with the clear error, not deadlock."""
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent("""
        from orchestrator.runtime import RuntimeConfig, WorkflowBuilder, task

        @task
        def double(x):
            return 2 * x

        with WorkflowBuilder("noguard") as wf:
            double(21)
        final = wf.run(config=RuntimeConfig(data_dir="state", redis_url=None), timeout=60)  # ./state, not the actor's
        print("STATUS", final["status"], final["error"])
    """))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        _kill_orchestrator()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STATUS failed" in proc.stdout, proc.stdout
    assert "inside a Ray worker" in proc.stdout and 'if __name__ == "__main__":' in proc.stdout
    assert (tmp_path / "state" / "state.db").exists() and not (ROOT / "state").exists()
