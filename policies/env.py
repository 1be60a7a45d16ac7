"""A gymnasium environment over the simulator (the engine the runtime conforms to): one step per task started.

Whenever a cpu is free and some ready task fits, the agent picks one (candidate task, node) pair of the observation
(`observation`; invalid pairs masked); the simulator starts it and runs on to the next moment a decision can be
taken (when nothing fits, time moves on to the next event). The reward is minus the time the workflows spent in the
system since the last step (active workflows x elapsed seconds, over `REWARD_SECONDS`): an episode's return is
minus the sum of the workflows' completion times, so maximising it minimises the average JCT.

Each episode draws a workload: Poisson arrivals at a random offered load of workflows from the training families
(the bundled real traces, and synthetic instances of the same families from the `wfcommons` recipes), a random
subset of those families (the mix), a random number of workflows and a random cluster size. Policies see predicted
durations (the actual ones times log-normal noise), never the actual ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import gymnasium as gym
import numpy as np

from orchestrator import resources
from orchestrator.scheduling.heuristics import SrptCriticalPathPolicy
from orchestrator.sim import Cluster, Simulation, TraceEntry, TraceLibrary, poisson_workload

from .observation import MAX_JOBS, MAX_NODES, NUM_ACTIONS, TASKS_PER_JOB, ObservationBuilder, observation_space

REWARD_SECONDS = 600.0
TRAINING_FAMILIES = ("1000genome", "cycles", "epigenomics", "montage")


@dataclass
class EnvConfig:
    """How episodes are drawn (`configs/scheduler.yaml`, section `env`)."""

    traces: str = ""  # a folder of WfCommons files; empty: the bundled traces
    families: tuple[str, ...] = TRAINING_FAMILIES
    max_tasks: int = 300  # workflows of at most this many tasks
    synthetic_per_family: int = 6  # synthetic instances of each family from its wfcommons recipe
    jobs: tuple[int, int] = (8, 20)  # workflows per episode (inclusive range)
    load: tuple[float, float] = (0.6, 1.0)  # offered cpu load (uniform)
    nodes: tuple[int, ...] = (2, 3, 4)
    cpus_per_node: tuple[int, ...] = (8, 16)
    memory_gib_per_cpu: float = 4.0
    noise: float = 0.3
    seed: int = 1000  # training seeds start here (benchmarks use 0-99)

    @classmethod
    def from_dict(cls, d: dict | None) -> "EnvConfig":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown env setting(s) {unknown}; known: {sorted(known)}")
        for k in ("families", "jobs", "load", "nodes", "cpus_per_node"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@lru_cache(maxsize=8)
def training_entries(traces: str, families: tuple[str, ...], max_tasks: int, synthetic_per_family: int,
                     seed: int) -> tuple[TraceEntry, ...]:
    """The workflows episodes are drawn from: real runs of the families, and synthetic instances of them."""
    library = TraceLibrary.from_dir(traces or resources.traces_dir()).subset(families=list(families), max_tasks=max_tasks)
    entries = list(library.entries)
    if synthetic_per_family > 0:
        from orchestrator.optimization.groundtruth import synthetic_workflows

        rng = np.random.default_rng(seed)
        for k, family in enumerate(families):
            sizes = [int(s) for s in rng.integers(50, max_tasks + 1, size=synthetic_per_family)]
            for wf in synthetic_workflows(family, sizes, seed=seed + k):
                entry = TraceEntry.from_workflow(wf)
                if entry.dag.n <= max_tasks and entry.cpu_work > 0:
                    entries.append(entry)
    return tuple(entries)


class _EnvPolicy(SrptCriticalPathPolicy):
    """The queue order the environment's candidates come from (srpt-cp), noting arrivals for the load estimate."""

    name = "learned-env"

    def __init__(self, builder: ObservationBuilder):
        self.builder = builder

    def on_job_arrival(self, job) -> None:
        self.builder.note_arrival(job)


class SchedulingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        cfg = dict(config or {})
        self.workload_fn = cfg.pop("workload_fn", None)  # tests and evaluation: seed -> (workload, cluster)
        self.cfg = EnvConfig.from_dict(cfg)
        self.observation_space = observation_space()
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.builder = ObservationBuilder()
        self.sim: Simulation | None = None
        self._entries: tuple[TraceEntry, ...] | None = None
        self._episode = 0
        self._base_seed = self.cfg.seed

    # ---- workloads ---------------------------------------------------------------------------------------
    def draw(self, seed: int):
        """A workload and cluster for an episode, drawn from `seed`."""
        if self.workload_fn is not None:
            return self.workload_fn(seed)
        cfg = self.cfg
        if self._entries is None:
            self._entries = training_entries(cfg.traces, cfg.families, cfg.max_tasks, cfg.synthetic_per_family,
                                             cfg.seed)
        rng = np.random.default_rng(seed)
        families = list(cfg.families)
        if rng.random() < 0.5 and len(families) > 1:  # a mix of some of the families
            k = int(rng.integers(1, len(families)))
            families = sorted(rng.choice(families, size=k, replace=False).tolist())
        pool = [e for e in self._entries if e.family in families] or list(self._entries)
        nodes = int(rng.choice(cfg.nodes))
        cpus = int(rng.choice(cfg.cpus_per_node))
        cluster = Cluster.homogeneous(nodes, cpus, cpus * cfg.memory_gib_per_cpu)
        load = float(rng.uniform(*cfg.load))
        jobs = int(rng.integers(cfg.jobs[0], cfg.jobs[1] + 1))
        workload = poisson_workload(TraceLibrary(pool), cluster, load, jobs, seed=int(seed), noise=cfg.noise)
        return workload, cluster

    # ---- gymnasium -----------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._base_seed = int(seed)
            self._episode = 0
        episode_seed = self._base_seed + 7919 * self._episode
        self._episode += 1
        workload, cluster = self.draw(episode_seed)
        self.builder.reset()
        self.sim = Simulation(workload, cluster, _EnvPolicy(self.builder), seed=episode_seed, record=False)
        self._finished_seen = 0
        self._finished_area = 0.0
        self._area = 0.0
        self.steps = 0
        if not self._advance():
            raise RuntimeError("an episode with no decision to take")
        return self._obs, {}

    def _area_now(self) -> float:
        """Seconds the workflows have spent in the system up to now (finished ones: their completion time)."""
        sim = self.sim
        finished = sim.finished
        if len(finished) != self._finished_seen:
            values = list(finished.values())
            for js in values[self._finished_seen:]:
                self._finished_area += js.finish - js.arrival
            self._finished_seen = len(values)
        now = sim.now
        return self._finished_area + sum(now - js.arrival for js in sim.jobs.values())

    def _advance(self) -> bool:
        """Run the simulation to the next state with a legal action; False when it is over."""
        sim = self.sim
        while sim.advance():
            heads = sim.queue.job_heads(TASKS_PER_JOB, MAX_JOBS + 1)
            obs, cands, order = self.builder.build(sim, heads)
            if obs["action_mask"].any():
                self._obs, self._cands, self._order = obs, cands, order
                return True
        return False

    def step(self, action: int):
        mask = self._obs["action_mask"]
        a = int(action)
        if not 0 <= a < NUM_ACTIONS or mask[a] < 0.5:
            a = int(np.flatnonzero(mask)[0])  # an illegal action (never sampled under the mask): the first legal one
        c, k = divmod(a, MAX_NODES)
        task, node = self._cands[c], self._order[k]
        self.sim.apply([(task, node)])
        self.steps += 1
        before = self._area
        more = self._advance()
        self._area = self._area_now()
        reward = -(self._area - before) / REWARD_SECONDS
        if not more:
            self.builder.forget(())
            return self._obs, float(reward), True, False, {"avg_jct": self._area / len(self.sim.finished)}
        return self._obs, float(reward), False, False, {}

    def result(self):
        """The finished episode's workflows (id -> completion time)."""
        return {j: js.finish - js.arrival for j, js in self.sim.finished.items()}
