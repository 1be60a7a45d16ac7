"""`policy: learned` — the trained scheduler as a `SchedulingPolicy`, the same in the simulator, `orchestrator bench`
and the runtime. Inference only: the network (`module.SchedulerNet`) loaded from a checkpoint in
`models/scheduler/<version>/` (weights and `meta.json`), forward passes on CPU, no RLlib.

Each round it picks one task at a time, as in training: the observation of the state (with the resources its
earlier picks of the round took), the highest-scoring legal (task, node) pair, until nothing more fits. Its queue
is ordered as srpt-cp's (the candidates are the heads of that order). A model that cannot be loaded raises
`LearnedPolicyError` when the policy is first used, and a decision slower than `deadline_ms` raises
`PolicyTimeoutError`: the runtime then runs the workflows under its fallback policy and records why. The runtime
sets the deadline (`runtime.state.DECISION_DEADLINE_MS`, or `$ORCHESTRATOR_LEARNED_DEADLINE_MS`); the simulator
sets none, so that a simulation stays a function of its inputs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator import resources
from orchestrator.errors import PolicyError
from orchestrator.scheduling.heuristics import SrptCriticalPathPolicy
from orchestrator.scheduling.interface import Decision, SchedulingState

from .module import SchedulerNet
from .observation import MAX_JOBS, MAX_NODES, TASKS_PER_JOB, ObservationBuilder

MODEL_ROOT = resources.location("models") / "scheduler"  # versions v1, v2, ...: the newest is used
MAX_ROUND = 1024  # tasks a round may start per workflow at most (a bound on what is read from the queue)
MODEL_ENV = "ORCHESTRATOR_SCHEDULER_MODEL"  # a model folder to use instead of the newest shipped one
OBSERVATION_VERSION = 1


class LearnedPolicyError(PolicyError):
    """The learned policy's model cannot be used (missing, unreadable, or of another observation version)."""


class PolicyTimeoutError(PolicyError):
    """The learned policy took longer than its deadline for one decision."""


def latest_model_dir(root: Path = MODEL_ROOT) -> Path | None:
    """The newest version folder (v1, v2, ...) holding a model, or None."""
    versions = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("v") and p.name[1:].isdigit() and (p / "model.pt").exists():
                versions.append((int(p.name[1:]), p))
    return max(versions)[1] if versions else None


def load_net(model_dir: str | Path) -> tuple[SchedulerNet, dict]:
    """The network and its metadata from a model folder; LearnedPolicyError naming what is wrong."""
    path = Path(model_dir)
    meta_file, weights = path / "meta.json", path / "model.pt"
    if not meta_file.exists() or not weights.exists():
        raise LearnedPolicyError(f"No learned scheduler model in '{path}' (expected meta.json and model.pt); "
                                 "train one with `orchestrator train scheduler`")
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("observation_version") != OBSERVATION_VERSION:
            raise LearnedPolicyError(
                f"The model in '{path}' was trained on observation version {meta.get('observation_version')}, "
                f"this code builds version {OBSERVATION_VERSION}; retrain with `orchestrator train scheduler`")
        net = SchedulerNet.from_config(meta.get("model"))
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except LearnedPolicyError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the files, it is reported by name
        raise LearnedPolicyError(f"Cannot load the learned scheduler from '{path}': {type(exc).__name__}: {exc}") \
            from None
    net.eval()
    return net, meta


_warm = False


def _warm_up(net: SchedulerNet) -> None:
    """Load the compiled list scheduler of the featurisation and run one forward pass, once per process: the
    first decision must not pay for them (it would miss its deadline)."""
    global _warm
    if _warm:
        return
    from orchestrator.dag import dag_arrays
    from orchestrator.model import Workflow
    from orchestrator.optimization.durations import TaskDurations
    from orchestrator.optimization.graph import featurize
    from orchestrator.sim.cluster import Cluster

    from .observation import observation_space

    wf = Workflow(name="warm-up", tasks=[{"id": "a", "duration": 1.0}, {"id": "b", "duration": 1.0,
                                                                          "depends_on": ["a"]}])
    featurize(dag_arrays(wf), TaskDurations(np.ones(2), np.full(2, 0.3)), Cluster.homogeneous(1, 2, 4), samples=0)
    sample = {k: torch.zeros((1, *space.shape)) for k, space in observation_space().spaces.items()}
    sample["action_mask"][0, 0] = 1.0
    with torch.no_grad():
        net(sample)
    _warm = True


class _NodesTentative:
    """The nodes with the free resources left by the picks made so far in a round."""

    __slots__ = ("names", "cap_cpus", "cap_memory", "cap_gpus", "free_cpus", "free_memory", "free_gpus", "custom")

    def __init__(self, nodes):
        self.names, self.custom = nodes.names, nodes.custom
        self.cap_cpus, self.cap_memory, self.cap_gpus = nodes.cap_cpus, nodes.cap_memory, nodes.cap_gpus
        self.free_cpus, self.free_memory = list(nodes.free_cpus), list(nodes.free_memory)
        self.free_gpus = list(nodes.free_gpus)


class _StateTentative:
    __slots__ = ("now", "nodes", "jobs", "num_ready")

    def __init__(self, state: SchedulingState):
        self.now, self.jobs, self.num_ready = state.now, state.jobs, state.num_ready
        self.nodes = _NodesTentative(state.nodes)


class LearnedPolicy(SrptCriticalPathPolicy):
    name = "learned"
    description = "RL-trained (PPO) graph-network policy over the srpt-cp candidates; see models/scheduler"

    def __init__(self, model_dir: str | Path | None = None, net: SchedulerNet | None = None,
                 deadline_ms: float | None = None):
        self._model_dir = model_dir
        self._net = net
        self.meta: dict = {}
        env_deadline = os.environ.get("ORCHESTRATOR_LEARNED_DEADLINE_MS")
        self.deadline_ms = (deadline_ms if deadline_ms is not None
                            else float(env_deadline) if env_deadline else None)  # None: no deadline
        self.builder = ObservationBuilder()
        self.decision_seconds: list[float] = []  # per decision, when `record_latency` is set
        self.record_latency = False
        self.probabilities: list[float] = []  # of each decision of the last `schedule`: the network's softmax

    @property
    def net(self) -> SchedulerNet:
        if self._net is None:
            path = self._model_dir or os.environ.get(MODEL_ENV) or latest_model_dir()
            if path is None:
                raise LearnedPolicyError(f"No learned scheduler model is shipped under '{MODEL_ROOT}'; "
                                         "train one with `orchestrator train scheduler`")
            self._net, self.meta = load_net(path)
        return self._net

    def reset(self, seed: int | None = None) -> None:
        self.builder.reset()
        torch.set_num_threads(1)  # one small forward pass: threads only add overhead
        self.net  # noqa: B018 - load now: an engine hears of a missing model before the first decision
        _warm_up(self.net)

    def on_job_arrival(self, job) -> None:
        self.net  # noqa: B018
        self.builder.note_arrival(job)

    def schedule(self, state: SchedulingState) -> list[Decision]:
        net = self.net
        # Enough of each workflow's head for a whole round: a round starts at most one task per free cpu (tasks of
        # zero cpus aside), and each pick only ever looks at the first TASKS_PER_JOB left of a workflow.
        per_job = TASKS_PER_JOB + min(MAX_ROUND, int(sum(state.nodes.free_cpus)) + 1)
        heads = state.queue.job_heads(per_job, MAX_JOBS + 1, state.max_predicted)
        self.probabilities = []
        if not heads:
            return []
        view = _StateTentative(state)
        top = max(t.priority for _, ts in heads for t in ts)
        if all(t.priority == top for _, ts in heads for t in ts):
            return self._pick(view, heads)
        # The user's priority first, as in every heuristic: the most urgent tasks, then the rest on what is left.
        urgent = [(j, [t for t in ts if t.priority == top]) for j, ts in heads]
        rest = [(j, [t for t in ts if t.priority != top]) for j, ts in heads]
        first = self._pick(view, [(j, ts) for j, ts in urgent if ts])
        return first + self._pick(view, [(j, ts) for j, ts in rest if ts])

    def _pick(self, view: "_StateTentative", heads: list) -> list[Decision]:
        net = self.net
        nodes = view.nodes
        decisions: list[Decision] = []
        deadline = self.deadline_ms / 1000.0 if self.deadline_ms is not None else float("inf")
        while heads:
            t0 = time.perf_counter()
            obs, cands, order = self.builder.build(view, [(j, ts[:TASKS_PER_JOB]) for j, ts in heads])
            mask = obs["action_mask"]
            if not mask.any():
                break
            with torch.no_grad():
                logits = net({k: torch.from_numpy(v).unsqueeze(0) for k, v in obs.items()})[0]
            a = int(torch.argmax(logits))
            if mask[a] < 0.5:  # (cannot happen: masked logits are the lowest float)
                a = int(np.flatnonzero(mask)[0])
            self.probabilities.append(float(torch.softmax(logits, -1)[a]))
            c, k = divmod(a, MAX_NODES)
            task, node = cands[c], order[k]
            elapsed = time.perf_counter() - t0
            if self.record_latency:
                self.decision_seconds.append(elapsed)
            if elapsed > deadline:
                raise PolicyTimeoutError(f"the learned policy took {elapsed * 1000:.0f} ms for one decision "
                                         f"(deadline {self.deadline_ms:g} ms)")
            decisions.append(Decision(task, node))
            nodes.free_cpus[node] -= task.cpus
            nodes.free_memory[node] -= task.memory
            nodes.free_gpus[node] -= task.gpus
            for i, (job_id, tasks) in enumerate(heads):
                if job_id == task.job:
                    tasks.remove(task)
                    if not tasks:
                        del heads[i]
                    break
        return decisions

    def describe(self) -> dict:
        out = super().describe()
        out["model"] = str(self._model_dir or os.environ.get(MODEL_ENV) or latest_model_dir())
        out["deadline_ms"] = self.deadline_ms
        return out
