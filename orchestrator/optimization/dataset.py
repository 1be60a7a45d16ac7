"""Labelled graphs for the makespan GNN: workflows of the training families (real traces and synthetic instances
from the wfcommons recipes), each on clusters of several tightnesses, featurised by `graph.featurize` and labelled
by Monte Carlo in the simulator's list scheduling (`groundtruth.monte_carlo`).

Labels on each `Data`:
- `y` [1, 3]: log(mean, P50, P90 of the makespan / `time_scale`);
- `gain` [n]: each task's gain (drop of the expected makespan when it runs 30% faster, common random numbers) as a
  share of the expected makespan, with `gain_mask` [n] marking the tasks it was computed for (all of them up to
  `max_gain_tasks`; above, the likeliest bottlenecks and a random sample of the rest);
- `crit` [n]: the share of samples in which the task is on the schedule's critical chain.
Plus `family`, `workflow`, `share` (cluster tightness) and `synthetic` to split and report by.

A build costs about (labelled tasks x gain samples) list-scheduling runs per graph; `build_labels` caches the labels
(and the workflows they belong to) in one file under the caller's folder, keyed by every parameter, so they are
computed once; the features are recomputed from them on every load (milliseconds a graph), so a change of the
featurisation never needs a relabelling.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from ..dag import dag_arrays
from ..model import Workflow
from .durations import AnalysisInputError, TaskDurations, durations_for
from .graph import DONE, PENDING, READY, RUNNING, _draws, _subgraph, featurize_workflow, remaining_mean
from .groundtruth import SPEEDUP, TRAINING_FAMILIES, UNSEEN_FAMILIES, monte_carlo, synthetic_workflows, tight_cluster
from .montecarlo import ListScheduler

LABEL_VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset holds and how it is labelled (every field is part of its cache key)."""

    families: tuple[str, ...] = TRAINING_FAMILIES
    traces: str | None = None  # folder of WfCommons files (default: the bundled traces); only `families` are used
    max_real_tasks: int = 1000  # real traces above this size are left out
    synthetic_per_family: int = 16  # synthetic instances per family, sizes log-spaced over [min_tasks, max_tasks]
    min_tasks: int = 10
    max_tasks: int = 1000
    shares: tuple[float, ...] = (0.25, 0.5, 1.0)  # cluster tightness: share of the average parallelism
    policy: str = "srpt-cp"
    samples: int = 2000  # Monte Carlo draws for the makespan distribution and criticality
    gain_samples: int = 200  # draws for the gains (the first of the same draws)
    min_gain_samples: int = 48  # never fewer, whatever the time budget says
    max_gain_tasks: int = 160  # above this size, gains of a subset (see the module's docstring)
    gain_seconds: float = 4.0  # time budget of one graph's gains: fewer draws on large graphs, down to the min
    seed: int = 0
    mid_run: int = 1  # graphs per workflow cut in the middle of a run (status and elapsed times), on...
    mid_run_share: float = 0.5  # ...the cluster of this tightness

    def key(self, part: str = "before") -> str:
        """The cache key of the graphs before the run (`before`: the mid-run fields are not part of it) or of
        those in the middle of a run (`during`: every field)."""
        fields = asdict(self)
        if part == "before":
            fields = {k: v for k, v in fields.items() if k not in _MID_RUN_FIELDS}
        raw = json.dumps({**fields, "label_version": LABEL_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


_MID_RUN_FIELDS = ("mid_run", "mid_run_share")


def training_workflows(spec: DatasetSpec, progress: Callable[[str], None] = print) -> list[Workflow]:
    """The real traces of `spec.families` (up to `max_real_tasks`) and their synthetic instances. Refuses the
    unseen families: they must stay out of training and tuning."""
    from ..loaders import default_trace_dir, load_traces

    bad = sorted(set(spec.families) & set(UNSEEN_FAMILIES))
    if bad:
        raise AnalysisInputError(f"families {', '.join(bad)} are kept out of training (they measure the model on "
                                 f"families it never saw); train on {', '.join(TRAINING_FAMILIES)}")
    source = Path(spec.traces) if spec.traces else default_trace_dir()
    real = [wf for wf in load_traces(source)
            if wf.family in spec.families and len(wf.tasks) <= spec.max_real_tasks]
    synthetic: list[Workflow] = []
    if spec.synthetic_per_family > 0:
        sizes = np.geomspace(spec.min_tasks, spec.max_tasks, spec.synthetic_per_family).round().astype(int).tolist()
        for k, family in enumerate(spec.families):
            synthetic += synthetic_workflows(family, sizes, seed=spec.seed * 100 + k)
    progress(f"{len(real)} real traces and {len(synthetic)} synthetic workflows of {', '.join(spec.families)}")
    return real + synthetic


def _gain_tasks(n: int, limit: int, criticality: np.ndarray, work: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All tasks up to `limit`; above, the quarter most often critical, the quarter with the most work, and a random
    sample of the rest (so that the ranking loss sees both ends)."""
    if n <= limit:
        return np.arange(n)
    chosen = set(np.argsort(-criticality * work, kind="stable")[:limit // 4].tolist())
    chosen |= set(np.argsort(-work, kind="stable")[:limit // 4].tolist())
    rest = np.setdiff1d(np.arange(n), np.fromiter(chosen, dtype=np.int64))
    chosen |= set(rng.choice(rest, size=limit - len(chosen), replace=False).tolist())
    return np.sort(np.fromiter(chosen, dtype=np.int64))


@dataclass
class Labels:
    """Monte Carlo labels of one workflow on one cluster (seconds), kept apart from the features so that a change
    of the featurisation does not cost a relabelling."""

    workflow: Workflow
    share: float
    mean: float
    p50: float
    p90: float
    gain: np.ndarray  # seconds per task (0 where not computed)
    gain_mask: np.ndarray
    crit: np.ndarray
    gain_samples: int
    seconds: float
    status: np.ndarray | None = None  # in the middle of a run: graph.PENDING/READY/RUNNING/DONE per task
    elapsed: np.ndarray | None = None  # seconds each running task has run
    cut: float | None = None  # the moment of the cut, as a share of the sampled run's makespan


def _gain_samples(spec: DatasetSpec, per_run: float, tasks: int) -> int:
    draws_fit = int(spec.gain_seconds / max(per_run * tasks, 1e-12))
    return int(np.clip(draws_fit, spec.min_gain_samples, spec.gain_samples))


def label(wf: Workflow, share: float, spec: DatasetSpec, seed: int) -> Labels:
    """Monte Carlo labels of `wf` on its cluster of tightness `share`."""
    t0 = time.perf_counter()
    dag = dag_arrays(wf)
    td = durations_for(wf)
    cluster = tight_cluster(dag, td.mean, share=share)
    mc = monte_carlo(dag, td, cluster, spec.policy, spec.samples, 0, seed)
    gain = np.zeros(dag.n)
    mask = np.zeros(dag.n, dtype=bool)
    tasks = _gain_tasks(dag.n, spec.max_gain_tasks, mc.criticality, td.mean * dag.cpus, np.random.default_rng(seed))
    gain_samples = _gain_samples(spec, mc.seconds / spec.samples, len(tasks))  # a gain run costs about a traced one
    ls = ListScheduler(dag, cluster, td.mean, spec.policy)
    draws = td.sample(spec.samples, seed=seed)[:gain_samples]
    gain[tasks] = ls.gains(draws, tasks, SPEEDUP)
    mask[tasks] = True
    return Labels(wf, float(share), mc.mean, mc.p50, mc.p90, gain, mask, mc.criticality.astype(np.float32),
                  gain_samples, time.perf_counter() - t0)


def label_mid_run(wf: Workflow, share: float, spec: DatasetSpec, seed: int) -> Labels | None:
    """`wf` cut in the middle of one sampled run (at a uniform 15-85% of its makespan): tasks ended by then are
    done, those started running (with their elapsed time), the rest ready or pending; the labels are the Monte
    Carlo of what remains from that moment (running tasks first, each drawn given how long it has run), as
    `graph.featurize` sees it. None when fewer than two tasks remain."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    dag = dag_arrays(wf)
    td = durations_for(wf)
    cluster = tight_cluster(dag, td.mean, share=share)
    makespan, start, end = ListScheduler(dag, cluster, td.mean, spec.policy).run(td.sample(1, seed=seed + 1)[0])
    cut = float(rng.uniform(0.15, 0.85))
    now = cut * makespan
    done = end <= now
    running = (start <= now) & ~done
    if (~done).sum() < 2:
        return None
    waiting = np.bincount(dag.dst, weights=(~done[dag.src]).astype(np.float64), minlength=dag.n)
    status = np.where(done, DONE, np.where(running, RUNNING, np.where(waiting == 0, READY, PENDING)))
    elapsed = np.where(running, now - start, 0.0)
    keep = ~done
    sub = _subgraph(dag, keep, running)
    kept = TaskDurations(td.mean[keep], td.cv[keep])
    ranks = kept.mean.copy()
    ranks[running[keep]] = remaining_mean(TaskDurations(td.mean[running], td.cv[running]), elapsed[running])
    ls = ListScheduler(sub, cluster, ranks, spec.policy)
    draws = _draws(kept, elapsed[keep], spec.samples, seed)
    t1 = time.perf_counter()
    trace = ls.trace(draws)
    per_run = (time.perf_counter() - t1) / spec.samples
    ms = trace.makespans
    tasks = _gain_tasks(sub.n, spec.max_gain_tasks, trace.criticality, ranks * sub.cpus, rng)
    gain_samples = _gain_samples(spec, per_run, len(tasks))
    gain = np.zeros(dag.n)
    mask = np.zeros(dag.n, dtype=bool)
    crit = np.zeros(dag.n, dtype=np.float32)
    index = np.flatnonzero(keep)
    gain[index[tasks]] = ls.gains(draws[:gain_samples], tasks, SPEEDUP)
    mask[index[tasks]] = True
    crit[index] = trace.criticality
    return Labels(wf, float(share), float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                  gain, mask, crit, gain_samples, time.perf_counter() - t0, status.astype(np.int64), elapsed, cut)


def example(labels: Labels, policy: str = "srpt-cp") -> Data:
    """The featurised graph of a labelled workflow, with its labels in the units of its time scale."""
    wf = labels.workflow
    dag = dag_arrays(wf)
    td = durations_for(wf)
    cluster = tight_cluster(dag, td.mean, share=labels.share)
    data = featurize_workflow(wf, dag, td, cluster, policy=policy, status=labels.status, elapsed=labels.elapsed)
    scale = float(data.time_scale[0])
    data.y = torch.tensor([[np.log(labels.mean / scale), np.log(labels.p50 / scale), np.log(labels.p90 / scale)]],
                          dtype=torch.float32)
    data.gain = torch.from_numpy((labels.gain / labels.mean).astype(np.float32))
    data.gain_mask = torch.from_numpy(labels.gain_mask)
    data.crit = torch.from_numpy(np.asarray(labels.crit, dtype=np.float32))
    data.family = wf.family or "unknown"
    data.workflow = wf.name
    data.share = labels.share
    data.synthetic = "-synthetic-" in wf.name
    data.mid_run = labels.status is not None
    return data


def labels_path(cache_dir: str | Path, spec: DatasetSpec, part: str = "before") -> Path:
    return Path(cache_dir) / f"optimizer-labels-{part}-{spec.key(part)}.pt"


def build_labels(spec: DatasetSpec, cache_dir: str | Path | None = None,
                 progress: Callable[[str], None] = print) -> list[Labels]:
    """Every workflow of the spec on every cluster share (a share giving the same cluster as an earlier one is
    skipped), before its run, then `mid_run` cuts of each in the middle of a run; read from (and written to)
    `cache_dir` when given, in two files (the graphs before the run do not depend on the mid-run fields).
    Deterministic for the spec's seed."""
    out: list[Labels] = []
    workflows: list[Workflow] | None = None
    for part in ("before", "during"):
        if part == "during" and spec.mid_run <= 0:
            break
        path = labels_path(cache_dir, spec, part) if cache_dir is not None else None
        if path is not None and path.exists():
            progress(f"labels from {path}")
            out += torch.load(path, weights_only=False)["labels"]
            continue
        t0 = time.perf_counter()
        if workflows is None and part == "during" and out:  # the same workflows, without generating them again
            workflows = list({lab.workflow.name: lab.workflow for lab in out}.values())
        if workflows is None:
            workflows = training_workflows(spec, progress)
        found: list[Labels] = []
        for i, wf in enumerate(workflows):
            if part == "before":
                dag = dag_arrays(wf)
                mean = durations_for(wf).mean
                seen: set[int] = set()
                for j, share in enumerate(spec.shares):
                    nodes = len(tight_cluster(dag, mean, share=share).nodes)
                    if nodes not in seen:
                        seen.add(nodes)
                        found.append(label(wf, share, spec, seed=spec.seed * 1_000_003 + i * 101 + j))
            else:
                for j in range(spec.mid_run):
                    lab = label_mid_run(wf, spec.mid_run_share, spec, seed=spec.seed * 1_000_003 + i * 101 + 50 + j)
                    if lab is not None:
                        found.append(lab)
            if (i + 1) % 10 == 0 or i + 1 == len(workflows):
                progress(f"labelled {i + 1}/{len(workflows)} workflows ({len(found)} graphs {part} the run) in "
                         f"{time.perf_counter() - t0:.0f}s")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"spec": asdict(spec), "seconds": time.perf_counter() - t0, "labels": found}, tmp)
            tmp.replace(path)
            progress(f"labels of {len(found)} graphs {part} the run saved to {path} "
                     f"({time.perf_counter() - t0:.0f}s)")
        out += found
    return out


def build_dataset(spec: DatasetSpec, cache_dir: str | Path | None = None,
                  progress: Callable[[str], None] = print, families: tuple[str, ...] | None = None) -> list[Data]:
    """The labelled graphs of the spec (labels cached by `build_labels`, features computed afresh: milliseconds
    each), only those of `families` when given."""
    labels = build_labels(spec, cache_dir, progress)
    return [example(lab, spec.policy) for lab in labels
            if families is None or (lab.workflow.family or "unknown") in families]


def split_by_workflow(examples: list[Data], fraction: float, seed: int = 0) -> tuple[list[Data], list[Data]]:
    """(train, validation): a random `fraction` of the WORKFLOWS (all their clusters) validates, drawn per family
    so every family is on both sides; never a split by task or by cluster."""
    rng = np.random.default_rng(seed)
    by_family: dict[str, list[str]] = {}
    for d in examples:
        names = by_family.setdefault(d.family, [])
        if d.workflow not in names:
            names.append(d.workflow)
    held: set[str] = set()
    for family in sorted(by_family):
        names = sorted(by_family[family])
        k = int(round(fraction * len(names)))
        if 0 < fraction and len(names) > 1:
            k = min(max(k, 1), len(names) - 1)
        held |= set(rng.choice(names, size=k, replace=False).tolist()) if k else set()
    return [d for d in examples if d.workflow not in held], [d for d in examples if d.workflow in held]


__all__ = ["DatasetSpec", "Labels", "build_labels", "build_dataset", "label", "label_mid_run", "example",
           "training_workflows",
           "split_by_workflow", "labels_path", "LABEL_VERSION"]
