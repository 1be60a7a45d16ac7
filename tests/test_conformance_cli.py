"""`orchestrator conformance` checks policies by name on workloads from the bundled traces: same decisions, exit 0,
results in JSON; a policy that decides differently in the two engines is named with its first difference, exit 1."""

from __future__ import annotations

import json

import pytest

from orchestrator.scheduling import _REGISTRY, register_policy
from orchestrator.scheduling.heuristics import FifoPolicy


class _EngineDependent(FifoPolicy):
    """FIFO in the simulator, last-ready-first in the runtime (its scheduling state has an owner)."""

    name = "test-engine-dependent"

    def schedule(self, state):
        decisions = super().schedule(state)
        return decisions[::-1] if hasattr(state, "_owner") else decisions


@pytest.fixture
def engine_dependent():
    register_policy(_EngineDependent.name, _EngineDependent)
    yield _EngineDependent.name
    _REGISTRY.pop(_EngineDependent.name, None)


def test_policies_that_agree_pass_and_are_written(cli_main, tmp_path):
    out = tmp_path / "c.json"
    code, stdout, _ = cli_main("conformance", "--policy", "fifo", "--policy", "srpt-cp", "--seeds", "1",
                               "--jobs", "3", "--max-tasks", "60", "--out", out)
    assert code == 0, stdout
    results = json.loads(out.read_text())["results"]
    assert [(r["policy"], r["agree"], r["workloads"]) for r in results] == [("fifo", True, 2), ("srpt-cp", True, 2)]
    assert all(r["decisions"] > 0 and r["failed_attempts"] > 0 for r in results)  # the failing workload failed some


def test_a_policy_that_decides_differently_per_engine_is_named(cli_main, tmp_path, engine_dependent):
    out = tmp_path / "c.json"
    code, stdout, _ = cli_main("conformance", "--policy", engine_dependent, "--seeds", "1", "--jobs", "3",
                               "--max-tasks", "60", "--out", out)
    assert code == 1
    (result,) = json.loads(out.read_text())["results"]
    assert not result["agree"] and result["difference"].startswith("seed 1")


def test_an_unknown_policy_is_refused(cli_main, tmp_path):
    code, _, err = cli_main("conformance", "--policy", "nope", "--out", tmp_path / "c.json")
    assert code == 2 and "Unknown scheduling policy 'nope'" in err
