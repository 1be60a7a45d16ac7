"""Driver side of the runtime: connect to Ray (a local Ray started on demand, or `--address` / RAY_ADDRESS), get or
start the orchestrator actor, submit workflows and follow them with a live progress bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import OrchestratorError, StoreError
from ..model import Workflow
from ..states import WorkflowStatus
from .config import ACTOR_NAME, NAMESPACE, RuntimeConfig

TERMINAL = {s.value for s in WorkflowStatus if s.terminal}


def connect_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect to Ray; returns True when this call started a local Ray (which ends with the driver)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"namespace": NAMESPACE, "log_to_driver": not quiet, "configure_logging": not quiet}
    if address:
        ray.init(address=address, **kwargs)
        return False
    # Runtime env: the workers import workflow entrypoints from the current directory, as the driver does.
    # With --num-cpus, always a new local Ray of that size (never a `ray start` cluster found on this machine).
    ray.init(address="local" if num_cpus else None, num_cpus=num_cpus, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}},
             **kwargs)
    return True


def check_store(config: RuntimeConfig) -> None:
    """Open the store from the driver first, so that a bad URL or an unreachable database is reported clearly
    before any actor starts."""
    from ..store import Store

    store = Store.open(config.db_url, data_dir=config.data_dir)
    store.close()


def get_orchestrator(config: RuntimeConfig | None = None, create: bool = True):
    """The running orchestrator actor, started (detached, named) if there is none."""
    import ray

    from .actor import OrchestratorActor

    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        handle = None
    if handle is not None:
        if config is not None:
            info = ray.get(handle.ping.remote())
            if (config.db_url or None) is None and info["data_dir"] != config.data_dir:
                raise OrchestratorError(
                    f"The orchestrator running on this Ray cluster keeps its state in {info['data_dir']}, not in "
                    f"{config.data_dir}; use --data-dir {info['data_dir']} (or stop it: ray.kill on the actor "
                    f"'{ACTOR_NAME}' in namespace '{NAMESPACE}')")
        return handle
    if handle is None:
        if not create:
            raise OrchestratorError("No orchestrator is running on this Ray cluster (start one with "
                                    "`orchestrator run` or `orchestrator resume`)") from None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    config = config or RuntimeConfig()
    check_store(config)
    # On the driver's node: an embedded SQLite file must be on the same machine as the actor that writes it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    handle = OrchestratorActor.options(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
                                       get_if_exists=True, scheduling_strategy=here).remote(config.model_dump())
    info = ray.get(handle.ping.remote())
    if not info["ok"]:
        raise OrchestratorError(f"The orchestrator failed to start: {info['error']}")
    return handle


def wait_for(handle, run_ids: list[str], on_progress: Callable[[dict], None] | None = None,
             poll: float = 0.2, timeout: float | None = None) -> dict[str, dict]:
    """Wait until every run is terminal; returns the final progress of each. With `on_progress`, polls every
    `poll` seconds and reports each run's progress; without, blocks in the orchestrator until the runs end."""
    import ray

    start = time.monotonic()
    final: dict[str, dict] = {}
    if on_progress is None:
        pending = list(run_ids)
        while pending:
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            for progress in ray.get(handle.wait_many.remote(pending, 60.0 if left is None else left)):
                if progress["status"] in TERMINAL:
                    final[progress["run_id"]] = progress
            pending = [r for r in pending if r not in final]
            if pending and left is not None and left <= 0:
                raise OrchestratorError(f"Timed out after {timeout:g} s waiting for {', '.join(pending)}")
            if pending:
                time.sleep(poll)  # some are not tracked by the actor yet (being resumed): ask again
        return final
    while True:
        pending = [r for r in run_ids if r not in final]
        if not pending:
            return final
        for progress in ray.get(handle.progress_many.remote(pending)):
            if on_progress:
                on_progress(progress)
            if progress["status"] in TERMINAL:
                final[progress["run_id"]] = progress
        if timeout is not None and time.monotonic() - start > timeout:
            raise OrchestratorError(f"Timed out after {timeout:g} s waiting for {', '.join(pending)}")
        if len(final) < len(run_ids):
            time.sleep(poll)


def run_workflow(workflow: Workflow, policy: str | None = None, config: RuntimeConfig | None = None,
                 time_scale: float | None = None, wait: bool = True, timeout: float | None = None) -> dict:
    """Submit a workflow to the orchestrator (starting Ray and the actor when needed) and wait for it."""
    import ray

    handle = get_orchestrator(config)
    run_id = ray.get(handle.submit.remote(workflow, policy, None, time_scale))
    if not wait:
        return {"run_id": run_id, "status": "running"}
    return wait_for(handle, [run_id], timeout=timeout)[run_id]


def open_store(db_url: str | None = None, data_dir: str | Path | None = None):
    """The state store as the CLI reads it (no Ray needed for status, list and logs)."""
    from ..store import Store

    config = RuntimeConfig(**({"db_url": db_url} if db_url else {}),
                           **({"data_dir": str(Path(data_dir).resolve())} if data_dir else {}))
    try:
        return Store.open(config.db_url, data_dir=config.data_dir)
    except StoreError:
        raise
