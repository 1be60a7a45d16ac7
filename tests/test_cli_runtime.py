"""The runtime commands (run, status, logs, resume) on bad input: a clear one-line error and exit code 2, before any
Ray starts where the input alone is wrong; task output and names printed literally (never as rich markup); a failing
run exits 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import OrchestratorError, PolicyError
from orchestrator.runtime import client
from orchestrator.runtime.config import ACTOR_NAME, NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
ANSI = re.compile(r"\x1b\[")
runner = CliRunner()

ECHO = "name: e\ntasks:\n  - {id: a, entrypoint: 'echo hi'}\n"


def _cli(*args, env: dict | None = None, timeout: float = 60) -> tuple[int, str, str, float]:
    """The installed `orchestrator` command in a subprocess (no Ray of this test session is visible to it unless
    RAY_ADDRESS says so)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ORCHESTRATOR_CONNECT_TIMEOUT")}
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.run([ORCHESTRATOR, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and not ANSI.search(err), err
    return lines[0]


def _only_rejections(data_dir: Path) -> int:
    """How many refusals the store at `data_dir` holds, after checking it holds nothing else (no run, no other
    event)."""
    from orchestrator.store import Store

    store = Store.open(None, data_dir=data_dir)
    assert store.list_workflows() == []
    types = {e.type for e in store.events()}
    assert types <= {"workflow.rejected"}, types
    return len(store.rejections())




def _kill_orchestrator():
    try:
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))
    except ValueError:
        pass


# ---- bad input, reported before Ray starts -------------------------------------------------------------------------

def test_unknown_policy_option_fails_before_ray_starts(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(ECHO)
    code, out, err, took = _cli("run", wf, "--policy", "nosuch", "--data-dir", tmp_path / "state")
    assert code == 2, err
    assert _error_line(err).startswith("error: Unknown scheduling policy 'nosuch'; available: fifo, heft, job-fifo, ")
    assert "Started a local Ray" not in err and _only_rejections(tmp_path / "state") == 1
    assert took < 20


def test_unknown_policy_in_a_workflow_file_is_named_with_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(ECHO)
    bad = tmp_path / "pol.yaml"
    bad.write_text("name: p\npolicy: bogus\ntasks:\n  - {id: a, entrypoint: 'echo hi'}\n")
    code, _, err, _ = _cli("run", good, bad, "--data-dir", tmp_path / "state")
    assert code == 2, err
    line = _error_line(err)
    assert f"{bad}: workflow 'p' asks for policy 'bogus': Unknown scheduling policy 'bogus'" in line
    assert _only_rejections(tmp_path / "state") == 1
    # --policy overrides the file's policy, as the orchestrator does: then the file's is not used (nor checked)
    from orchestrator.commands.runtime import _check_policies
    from orchestrator.loaders import load_workflow

    _check_policies("fifo", [load_workflow(bad)], [bad])
    with pytest.raises(PolicyError, match="pol.yaml: workflow 'p' asks for policy 'bogus'"):
        _check_policies(None, [load_workflow(good), load_workflow(bad)], [good, bad])


@pytest.mark.parametrize("env", [{}, {"RAY_ADDRESS": "local"}])
def test_detach_needs_an_existing_cluster(tmp_path, env):
    wf = tmp_path / "wf.yaml"
    wf.write_text(ECHO)
    code, out, err, took = _cli("run", wf, "--detach", "--data-dir", tmp_path / "state", env=env)
    assert code == 2, err
    line = _error_line(err)
    assert "--detach needs an existing Ray cluster (--address HOST:PORT or RAY_ADDRESS)" in line
    assert "submitted" not in out and not (tmp_path / "state").exists()


def test_unreachable_address_fails_fast_and_names_it(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(ECHO)
    code, out, err, took = _cli("run", wf, "--data-dir", tmp_path / "state", env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert code == 2, err
    line = _error_line(err)
    assert line.startswith("error: Cannot reach the Ray cluster at 127.0.0.1:1: ") and "RAY_ADDRESS" in line
    assert took < 20  # ray.init on it would retry for minutes
    # An address that does not answer at all (TEST-NET-1): refused at once, or given up after the timeout.
    code, _, err, took = _cli("run", wf, "--address", "192.0.2.1:6379", "--data-dir", tmp_path / "state",
                              env={"ORCHESTRATOR_CONNECT_TIMEOUT": "1"})
    assert code == 2 and "Cannot reach the Ray cluster at 192.0.2.1:6379" in _error_line(err)
    assert took < 20


def test_connect_timeout_and_address_forms(monkeypatch):
    assert client._host_port("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert client._host_port("ray://head:10001") == ("head", 10001)
    assert client._host_port("[::1]:6379") == ("::1", 6379)
    assert client._host_port("head") is None
    with pytest.raises(OrchestratorError, match="'head' is not of the form host:port"):
        client._check_reachable("head")
    monkeypatch.setenv("ORCHESTRATOR_CONNECT_TIMEOUT", "soon")
    with pytest.raises(OrchestratorError, match="ORCHESTRATOR_CONNECT_TIMEOUT='soon' is not a positive number"):
        client._check_reachable("127.0.0.1:1")


def test_ray_init_failures_are_clear_errors(monkeypatch):
    """`--address auto` without a cluster, and a cluster that refuses this machine (token authentication): an
    OrchestratorError naming the address and the cause, never Ray's exception."""
    import ray._private.services as services

    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def no_cluster(addr, temp_dir=None):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address", no_cluster)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be reached"))
    with pytest.raises(OrchestratorError, match="No Ray cluster found for address 'auto': Could not find any "
                                                "running Ray instance."):
        client.connect_ray("auto")

    def refused(*args, **kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.1.2.3:6379")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(client, "_check_reachable", lambda address, target=None: None)
    with pytest.raises(OrchestratorError) as info:
        client.connect_ray("10.1.2.3:6379")
    msg = str(info.value)
    assert msg.startswith("Cannot connect to the Ray cluster at 10.1.2.3:6379: Failed to connect to Ray cluster")
    assert "RAY_AUTH_MODE=token" in msg and "~/.ray/auth_token" in msg and "RAY_AUTH_TOKEN" in msg

    def other(*args, **kwargs):
        raise RuntimeError("\x1b[31mversion mismatch\x1b[0m:\n Python 3.10 vs 3.11")

    monkeypatch.setattr(ray, "init", other)
    with pytest.raises(OrchestratorError, match=r"^Cannot connect to the Ray cluster at h:1: version mismatch: "
                                                r"Python 3.10 vs 3.11$"):
        client.connect_ray("h:1")


def test_resume_message_counts_the_runs_the_orchestrator_resumed_as_it_started(monkeypatch):
    from orchestrator.commands.runtime import _resume_summary

    monkeypatch.setattr(client, "resumed_at_start", lambda handle: ["r1", "r2"])
    assert _resume_summary(None, None, [], ["r1", "r2"]) == \
        "resumed 2 run(s) (2 by the orchestrator as it started); 2 unfinished"
    assert _resume_summary(None, "r2", [], ["r2"]) == \
        "resumed 1 run(s) (1 by the orchestrator as it started); 1 unfinished"
    monkeypatch.setattr(client, "resumed_at_start", lambda handle: None)  # an orchestrator that was running
    assert _resume_summary(None, None, ["r3"], ["r3", "r4"]) == \
        "resumed 1 run(s); 2 unfinished (1 already running in the orchestrator)"
    assert _resume_summary(None, None, [], []) == "resumed 0 run(s); 0 unfinished"


# ---- on the session Ray cluster ---------------------------------------------------------------------------------

def test_actor_errors_are_their_own_message(ray_cluster, tmp_path, cli_main):
    """A task larger than every node is refused by the orchestrator: the CLI shows that message, not Ray's remote
    traceback with ANSI colours; the Python helper keeps the error's type."""
    wf = tmp_path / "huge.yaml"
    wf.write_text("name: huge\ntasks:\n  - {id: a, entrypoint: echo, resources: {cpus: 64}}\n")
    try:
        code, out, err = cli_main("run", wf, "--data-dir", tmp_path / "state")
        assert code == 2, err
        line = _error_line(err)
        assert line == ("error: Workflow 1 of 1 (huge) was refused, so none was recorded: Task 'a' requests cpus=64, "
                        "memory=0 B, gpus=0: no node of the Ray cluster is that large, so it could never run; lower "
                        "the request or add a larger node")
        assert client.resumed_at_start(client.get_orchestrator(create=False)) == []  # nothing to resume at start
    finally:
        _kill_orchestrator()

    @ray.remote(num_cpus=0)
    def boom():
        raise ValueError("closing tag [/oops] here\nsecond line")

    with pytest.raises(OrchestratorError) as info:
        client.call(boom.remote(), timeout=60)
    assert str(info.value) == "ValueError: closing tag [/oops] here second line"


def test_markup_in_task_output_and_names_is_shown_literally(ray_cluster, tmp_path):
    data = tmp_path / "state"
    wf = tmp_path / "m.yaml"
    wf.write_text(
        "name: '[bold]m[/bold]'\n"
        "tasks:\n"
        "  - {id: 'c[x]', entrypoint: 'orchestrator.runtime.builtins:fail', args: ['closing tag [/oops] here']}\n"
        "  - {id: n, entrypoint: 'orchestrator.runtime.builtins:fail', args: ['boom [bold]x[/] :smile:']}\n"
        "  - {id: say, entrypoint: \"echo '[red]out[/red] [/x] :smile:'\"}\n"
        "  - {id: after, entrypoint: 'echo never', depends_on: ['c[x]']}\n")

    def invoke(*args):
        r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        return r

    try:
        r = invoke("run", wf, "--data-dir", data)
        assert r.exit_code == 1, r.output  # a failing run exits 1
        run_id = re.search(r"run (bold-m-bold-[0-9a-f]+): failed", r.output).group(1)
        assert "submitted [bold]m[/bold] as run" in r.output
        assert "task c[x] failed after 1 attempt(s): RuntimeError: closing tag [/oops] here" in r.output
        assert "task n failed after 1 attempt(s): RuntimeError: boom [bold]x[/] :smile:" in r.output

        r = invoke("status", run_id, "--data-dir", data)
        assert r.exit_code == 0, r.output
        assert r.output.startswith(f"[bold]m[/bold] run {run_id} policy=srpt-cp status=failed")
        assert "RuntimeError: closing tag [/oops] here" in r.output
        assert "RuntimeError: boom [bold]x[/] :smile:" in r.output
        assert "│ c[x] " in r.output

        r = invoke("logs", run_id, "--data-dir", data)
        assert r.exit_code == 0, r.output
        assert "task.failed          c[x]" in r.output and '"name": "[bold]m[/bold]"' in r.output
        assert "(c[x]: RuntimeError: closing tag [/oops]" in r.output  # JSON payloads cut at 120 characters

        r = invoke("logs", run_id, "--task", "n", "--data-dir", data)
        assert r.exit_code == 0, r.output
        assert "\nerror\n" in r.output and "RuntimeError: boom [bold]x[/] :smile:" in r.output
        assert "n attempt 1: failed on " in r.output

        r = invoke("logs", run_id, "--task", "say", "--data-dir", data)
        assert r.exit_code == 0, r.output
        assert "\nstdout\n[red]out[/red] [/x] :smile:\n" in r.output and "[bold]stdout[/]" not in r.output

        r = invoke("logs", run_id, "--task", "c[x]", "--data-dir", data)
        assert r.exit_code == 0 and "c[x] attempt 1: failed" in r.output and "closing tag [/oops] here" in r.output
    finally:
        _kill_orchestrator()


def test_cancel_without_a_reachable_orchestrator_goes_through_the_store(ray_cluster, tmp_path):
    """`orchestrator cancel` in a process that cannot reach the orchestrator's Ray (here: told RAY_ADDRESS=local)
    starts no Ray and no second orchestrator: it records a request, which the running orchestrator carries out."""
    from orchestrator.loaders import workflow_from_dict
    from orchestrator.runtime.actor import OrchestratorActor
    from orchestrator.runtime.client import wait_for
    from orchestrator.runtime.config import RuntimeConfig
    from orchestrator.store import Store

    data = tmp_path / "state"
    config = RuntimeConfig(data_dir=str(data), redis_url=None, lease_ttl_s=3.0)
    h = OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(config.model_dump())
    try:
        wf = workflow_from_dict({"name": "long", "tasks": [
            {"id": "s", "entrypoint": "orchestrator.runtime.builtins:sleep", "args": [30]}]})
        run_id = ray.get(h.submit.remote(wf))
        store = Store.open(None, data_dir=data)
        deadline = time.time() + 20
        while store.task_counts(run_id).get("running", 0) < 1 and time.time() < deadline:
            time.sleep(0.05)
        code, out, err, took = _cli("cancel", run_id, "--data-dir", data, env={"RAY_ADDRESS": "local"})
        assert code == 0, err
        assert "cancel requested" in out and took < 20  # no Ray was started for it
        final = wait_for(h, [run_id], timeout=15)[run_id]
        assert final["status"] == "cancelled"
        code, out, _, _ = _cli("cancel", run_id, "--data-dir", data, env={"RAY_ADDRESS": "local"})
        assert code == 0 and "already cancelled" in out
    finally:
        ray.get(h.shutdown.remote())
        ray.kill(h)


def test_a_refused_workflow_is_recorded_as_rejected(tmp_path, cli_main):
    """A cyclic file is refused before any Ray starts, and the refusal is in the store (`list --rejected`)."""
    bad = tmp_path / "cyclic.yaml"
    bad.write_text("name: loop\ntasks:\n  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [a]}\n")
    data = tmp_path / "state"
    code, _, err = cli_main("run", bad, "--data-dir", data)
    assert code == 2 and "dependency cycle: b -> a -> b" in _error_line(err)
    code, out, _ = cli_main("list", "--rejected", "--data-dir", data)
    assert code == 0 and "cyclic.yaml" in out and "CycleError" in out
    from orchestrator.store import Store

    (rejection,) = Store.open(None, data_dir=data).rejections()
    assert rejection.type == "workflow.rejected" and rejection.run_id is None
    assert rejection.payload["source"] == str(bad) and "b -> a -> b" in rejection.payload["error"]


def test_a_second_orchestrator_on_a_store_in_use_is_refused_at_once(ray_cluster, tmp_path):
    """`orchestrator run` against a store that an orchestrator outside this cluster's named actor is using (here:
    an unnamed one) fails at once, naming it, instead of starting a second orchestrator."""
    from orchestrator.runtime.actor import OrchestratorActor
    from orchestrator.runtime.config import RuntimeConfig

    data = tmp_path / "state"
    config = RuntimeConfig(data_dir=str(data), redis_url=None)
    h = OrchestratorActor.options(num_cpus=0, resources={"head": 0.001}).remote(config.model_dump())
    try:
        info = ray.get(h.ping.remote())
        wf = tmp_path / "wf.yaml"
        wf.write_text(ECHO)
        code, _, err, took = _cli("run", wf, "--data-dir", data, env={"RAY_ADDRESS": ray_cluster.address})
        assert code == 2, err
        line = _error_line(err)
        assert f"Another orchestrator (pid {info['pid']} on " in line and "is running on the store" in line
        assert took < 8  # at once: not after a new orchestrator waited for the lease to lapse (12 s)
    finally:
        ray.get(h.shutdown.remote())
        ray.kill(h)
