"""Driver side of the runtime: connect to Ray (a local Ray started on demand, or `--address` / RAY_ADDRESS), get or
start the orchestrator actor, submit workflows and follow them with a live progress bar.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError, StoreError
from ..model import Workflow
from ..states import WorkflowStatus
from .config import ACTOR_NAME, NAMESPACE, RuntimeConfig

TERMINAL = {s.value for s in WorkflowStatus if s.terminal}
CONNECT_TIMEOUT_ENV = "ORCHESTRATOR_CONNECT_TIMEOUT"  # seconds to wait for a cluster's GCS port (default 5)
# Seconds a client that saw its runs end waits for their last events to reach every event sink (default 10).
EVENTS_WAIT_ENV = "ORCHESTRATOR_EVENTS_WAIT"
log = logging.getLogger("orchestrator.client")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_AUTH_HINT = ("Ray could not join the cluster: if it uses token authentication (the default of a local ray.init() "
              "in Ray 2.60), set RAY_AUTH_MODE=token and give this machine the cluster's token, in ~/.ray/auth_token "
              "or the environment variable RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH); also check that the address is "
              "the cluster's GCS port and that the Ray versions match")
_started_local = False  # this process started a local Ray (which ends with it)
_resumed_at_start: dict[str, list[str]] = {}  # actor id -> runs it resumed as it started (actors started here)


def _seconds_from_env(name: str, default: str, allow_zero: bool = False) -> float:
    raw = os.environ.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise OrchestratorError(f"{name}={raw!r} is not a {'' if allow_zero else 'positive '}number of seconds")
    return value


def _connect_timeout() -> float:
    return _seconds_from_env(CONNECT_TIMEOUT_ENV, "5")


def _host_port(address: str) -> tuple[str, int] | None:
    """`host:port` of a Ray address (`host:port`, `ray://host:port`, `[v6]:port`), or None if it has none."""
    rest = address.strip()
    if "://" in rest:
        rest = rest.split("://", 1)[1]
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str, target: str | None = None) -> None:
    """Fail fast, naming the address, when nothing accepts a TCP connection on the cluster's GCS port: `ray.init`
    on such an address retries for minutes before it gives up."""
    hp = _host_port(target or address)
    if hp is None:
        raise OrchestratorError(f"Ray address '{address}' is not of the form host:port (or ray://host:port, auto, "
                                "local); set --address or RAY_ADDRESS")
    timeout = _connect_timeout()
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except socket.timeout:
        reason = f"no answer within {timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
    else:
        return
    where = address if target is None or target == address else f"{address} ({target})"
    raise OrchestratorError(f"Cannot reach the Ray cluster at {where}: {reason}. Check the address (--address or "
                            f"RAY_ADDRESS) and that the cluster is running (`ray status` on its head node); "
                            f"{CONNECT_TIMEOUT_ENV} sets how long to wait")


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _connect_failure(address: str, exc: BaseException) -> str:
    from ray.exceptions import AuthenticationError

    cause = _one_line(str(exc)) or type(exc).__name__
    msg = f"Cannot connect to the Ray cluster at {address}: {cause}"
    if isinstance(exc, AuthenticationError) or re.search(r"auth|token|failed to connect to", cause, re.IGNORECASE):
        msg += f" ({_AUTH_HINT})"
    return msg


def _shutdown_quietly() -> None:
    import ray

    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - a failed ray.init may leave nothing to shut down
        pass


def _given_address(address: str | None) -> str | None:
    """The address the user gave (`--address`, else RAY_ADDRESS), stripped; None when neither."""
    return (address or os.environ.get("RAY_ADDRESS") or "").strip() or None


def connect_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect to Ray; returns True when this call started a local Ray (which ends with the driver).

    An explicit address (`--address`, RAY_ADDRESS) must accept a TCP connection within
    ORCHESTRATOR_CONNECT_TIMEOUT seconds (default 5); every failure to connect is an OrchestratorError that names
    the address and the cause."""
    import ray

    if ray.is_initialized():
        return False
    address = _given_address(address)
    kwargs = {"namespace": NAMESPACE, "log_to_driver": not quiet, "configure_logging": not quiet}
    if address and address != "local":
        target = None
        if address == "auto":
            try:
                from ray._private.services import canonicalize_bootstrap_address

                target = canonicalize_bootstrap_address("auto")
            except ConnectionError as exc:
                raise OrchestratorError(f"No Ray cluster found for address 'auto': {_one_line(str(exc))}") from None
            except Exception:  # noqa: BLE001 - a private Ray helper: let ray.init find the cluster itself
                target = None
        if address != "auto" or target:
            _check_reachable(address, target)
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, AuthenticationError, ...
            _shutdown_quietly()
            raise OrchestratorError(_connect_failure(address, exc)) from exc
        return False
    # Runtime env: the workers import workflow entrypoints from the current directory, as the driver does.
    # With --num-cpus (or address "local"), always a new local Ray of that size (never a `ray start` cluster found
    # on this machine).
    try:
        ray.init(address="local" if num_cpus or address == "local" else None, num_cpus=num_cpus,
                 include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}},
                 **kwargs)
    except Exception as exc:  # noqa: BLE001
        _shutdown_quietly()
        raise OrchestratorError(f"Could not start a local Ray: {_one_line(str(exc)) or type(exc).__name__}") from exc
    global _started_local
    _started_local = True
    return True


def find_cluster(address: str | None = None) -> str | None:
    """The address of the Ray cluster the user named (`--address`, RAY_ADDRESS; "auto" included), or None. Never
    a guess: the Ray that `ray.init()` would find on this machine may be another command's local Ray, which this
    process cannot join (token authentication) and must not start a second orchestrator beside."""
    address = _given_address(address)
    return None if address in (None, "local") else address


def remote_error_message(exc: BaseException) -> str:
    """The message of the exception raised inside a Ray task or actor call, on one line, without Ray's remote
    traceback or its ANSI colour codes."""
    from ray.exceptions import RayError, RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None and not isinstance(cause, RayError):
            text = _one_line(str(cause))
            if isinstance(cause, OrchestratorError):
                return text or type(cause).__name__
            return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
        lines = [ln for ln in _ANSI.sub("", getattr(exc, "traceback_str", "") or "").splitlines() if ln.strip()]
        if lines:
            return _one_line(lines[-1])
    text = _ANSI.sub("", getattr(exc, "error_msg", None) or str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return _one_line(lines[-1] if lines else type(exc).__name__)


def call(ref: Any, timeout: float | None = None) -> Any:
    """`ray.get` of an orchestrator actor call; an exception raised in the actor comes back as an
    OrchestratorError with the actor's own message (an OrchestratorError raised there keeps its type)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OrchestratorError):
            raise cause from None
        raise OrchestratorError(remote_error_message(exc)) from exc
    except RayActorError as exc:
        raise OrchestratorError(f"The orchestrator actor is not running: {remote_error_message(exc)}") from exc


def resumed_at_start(handle) -> list[str] | None:
    """The runs the orchestrator actor resumed from the store as it started, if this process started it."""
    try:
        return _resumed_at_start.get(handle._actor_id.hex())
    except AttributeError:
        return None


_LIVE_LEASE_S = 3.0  # a lease renewed this recently belongs to an orchestrator that is alive (it renews every second)


def check_store(config: RuntimeConfig, starting: bool = False) -> None:
    """Open the store from the driver first, so that a bad URL or an unreachable database is reported clearly
    before any actor starts. `starting`: an orchestrator is about to be started here; refuse at once if one that is
    alive (elsewhere: another Ray cluster, another command's local Ray) owns the store."""
    from ..store import Store

    store = Store.open(config.db_url, data_dir=config.data_dir)
    try:
        if starting:
            store.refuse_if_leased(_LIVE_LEASE_S)
    finally:
        store.close()


_STOP_HINT = "`orchestrator stop --address ADDRESS` stops it cleanly"


def _store_key(url: str | None, data_dir: str | None) -> tuple:
    """What identifies a store, for comparing two spellings of it: for SQLite the resolved file (the default store
    is <data_dir>/state.db); for PostgreSQL user, host, port and database (not the driver nor the password, which
    the orchestrator reports masked)."""
    from ..store.database import parse_url

    if not url:
        return ("sqlite", str((Path(data_dir or ".") / "state.db").expanduser().resolve()))
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ("sqlite", str(Path(parsed.database).expanduser().resolve()))
    return (parsed.get_backend_name(), parsed.username or "", (parsed.host or "localhost").lower(),
            parsed.port or 5432, parsed.database or "")


def _absolute(config: RuntimeConfig) -> RuntimeConfig:
    """The config with the driver's relative paths made absolute: the actor's working directory is not the
    driver's, so a relative --data-dir, or a SQLite --db-url with a relative path, means the driver's."""
    update: dict[str, str] = {}
    if not Path(config.data_dir).is_absolute():
        update["data_dir"] = str(Path(config.data_dir).resolve())
    if config.db_url:
        from ..store.database import parse_url

        try:
            parsed = parse_url(config.db_url)
        except StoreError:
            parsed = None  # reported by whoever opens it
        if parsed is not None and parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_absolute():
            absolute = parsed.set(database=str(Path(parsed.database).expanduser().resolve()))
            update["db_url"] = absolute.render_as_string(hide_password=False)
    return config.model_copy(update=update) if update else config


def _refuse_other_store(handle, config: RuntimeConfig) -> None:
    """Refuse to use the cluster's orchestrator when it keeps its state elsewhere than the user asked: a store
    given by URL (--db-url, ORCHESTRATOR_DB_URL) that is not the orchestrator's, or else a --data-dir that is not
    its data folder. Otherwise the runs would be recorded in its store, where the user would not find them."""
    from ..store.database import mask_url

    info = call(handle.ping.remote())
    if config.db_url:
        theirs = info.get("db")
        if theirs is None:  # an orchestrator too old to say: its default store
            theirs = f"sqlite:///{Path(info['data_dir']) / 'state.db'}"
        if _store_key(theirs, info["data_dir"]) != _store_key(config.db_url, config.data_dir):
            raise OrchestratorError(
                f"The orchestrator running on this Ray cluster keeps its state in {theirs}, not in the store "
                f"asked for, {mask_url(config.db_url)} (--db-url or ORCHESTRATOR_DB_URL): nothing was submitted. "
                f"Use its store (--db-url {theirs}), or stop that orchestrator first ({_STOP_HINT})")
    elif info["data_dir"] != config.data_dir:
        raise OrchestratorError(
            f"The orchestrator running on this Ray cluster keeps its state in {info['data_dir']}, not in "
            f"{config.data_dir}; use --data-dir {info['data_dir']}, or stop that orchestrator first ({_STOP_HINT})")


def refuse_other_store(config: RuntimeConfig) -> None:
    """When an orchestrator runs on the connected Ray cluster, refuse (OrchestratorError) if its store is not the
    one `config` asks for. Nothing is opened or started: for checking before anything is recorded."""
    import ray

    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    _refuse_other_store(handle, _absolute(config))


def get_orchestrator(config: RuntimeConfig | None = None, create: bool = True):
    """The running orchestrator actor, started (detached, named) if there is none. With `config`, one that runs
    on another store than `config`'s is refused (see `refuse_other_store`)."""
    import ray

    from .actor import OrchestratorActor

    if config is not None:
        config = _absolute(config)
    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        handle = None
    if handle is not None:
        if config is not None:
            _refuse_other_store(handle, config)
        return handle
    if handle is None:
        if not create:
            raise OrchestratorError("No orchestrator is running on this Ray cluster (start one with "
                                    "`orchestrator run` or `orchestrator resume`)") from None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    config = config or RuntimeConfig()
    check_store(config, starting=True)
    # On the driver's node: an embedded SQLite file must be on the same machine as the actor that writes it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    handle = OrchestratorActor.options(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
                                       get_if_exists=True, scheduling_strategy=here).remote(config.model_dump())
    try:
        info = call(handle.ping.remote())
    except OrchestratorError as exc:
        raise OrchestratorError(f"The orchestrator failed to start: {exc}") from exc
    if not info["ok"]:
        raise OrchestratorError(f"The orchestrator failed to start: {info['error']}")
    # For `orchestrator resume`: the runs it resumed by itself as it started.
    _resumed_at_start[handle._actor_id.hex()] = list(info.get("resumed_at_start") or [])
    if _started_local:
        # The local Ray ends with this process: stop the orchestrator first, so that it writes what it buffers
        # and gives its lease on the store back (the next command need not wait for the lease to lapse).
        import atexit

        atexit.register(_stop_quietly, handle)
    return handle


def _stop_quietly(handle) -> None:
    import ray

    try:
        # Bounded in the actor: its threads (a few s) and the drain of its event sinks (10 s at most).
        ray.get(handle.shutdown.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - exiting anyway; the lease lapses by itself
        pass


def wait_events(handle, run_ids: list[str], timeout: float | None = None) -> bool:
    """Wait until the events of `run_ids` recorded so far (for ended runs: up to their final events) have been
    delivered to every event sink of the orchestrator, at most `timeout` seconds (default: $ORCHESTRATOR_EVENTS_WAIT,
    else 10). True when delivered (or the orchestrator has no sinks); otherwise logs a warning saying which sinks
    are behind, and returns False."""
    from ray.exceptions import GetTimeoutError

    if not run_ids:
        return True
    if timeout is None:
        timeout = _seconds_from_env(EVENTS_WAIT_ENV, "10", allow_zero=True)
    runs = ", ".join(run_ids) if len(run_ids) <= 3 else f"{', '.join(run_ids[:3])} and {len(run_ids) - 3} more"
    try:
        method = handle.wait_events
    except AttributeError:  # an orchestrator started by an older version: it cannot say
        return True
    try:
        report = call(method.remote(list(run_ids), timeout), timeout=timeout + 30)
    except GetTimeoutError:
        report = {"delivered": False, "behind": []}
    except OrchestratorError as exc:
        log.warning("could not learn whether the events of run %s reached the event sinks: %s", runs, exc)
        return False
    if report["delivered"]:
        return True
    behind = "; ".join(f"{b['sink']} has events up to {b['cursor']}" + (f", last error: {b['error']}"
                                                                        if b.get("error") else "")
                       for b in report.get("behind") or [])
    log.warning("the last events of run %s were not all delivered to the event sinks within %g s%s; they stay in "
                "the store's outbox and go out when the sink recovers", runs, timeout,
                f" ({behind})" if behind else "")
    return False


def wait_for(handle, run_ids: list[str], on_progress: Callable[[dict], None] | None = None,
             poll: float = 0.2, timeout: float | None = None) -> dict[str, dict]:
    """Wait until every run is terminal; returns the final progress of each. With `on_progress`, polls every
    `poll` seconds and reports each run's progress; without, blocks in the orchestrator until the runs end.
    Returns once the runs' final events have also reached every event sink (see `wait_events`: bounded, a
    warning when they have not)."""
    final = _wait_terminal(handle, run_ids, on_progress, poll, timeout)
    if on_progress is not None:  # progress comes from memory: also wait until the final statuses are written
        final = _wait_terminal(handle, run_ids, None, poll, timeout)
    wait_events(handle, list(run_ids))
    return final


def _wait_terminal(handle, run_ids: list[str], on_progress: Callable[[dict], None] | None, poll: float,
                   timeout: float | None) -> dict[str, dict]:
    start = time.monotonic()
    final: dict[str, dict] = {}
    if on_progress is None:
        pending = list(run_ids)
        while pending:
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            for progress in call(handle.wait_many.remote(pending, 60.0 if left is None else left)):
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
        for progress in call(handle.progress_many.remote(pending)):
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
    """Submit a workflow to the orchestrator (starting Ray and the actor when needed) and wait for it.

    Refused inside a Ray worker: a script that runs its workflow at import time must do it under
    `if __name__ == "__main__":`, or every worker that imports the script's task functions submits it again."""
    import ray

    from .api import ensure_not_in_ray_worker

    ensure_not_in_ray_worker("run_workflow()")
    if not ray.is_initialized():
        connect_ray()
    handle = get_orchestrator(config)
    run_id = call(handle.submit.remote(workflow, policy, None, time_scale))
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
