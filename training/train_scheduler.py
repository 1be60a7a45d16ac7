"""Train the learned scheduler with PPO on RLlib's new API stack (RLModule, Learner, EnvRunner) in the simulator.

`train_scheduler(config)` runs PPO on `policies.env.SchedulingEnv`; every `evaluation.every` iterations the greedy
policy is evaluated against the heuristics on fixed workloads of the training families (seeds 500+, never the
benchmark's). The best evaluated weights are saved as the next version under `models/scheduler/` (`model.pt`,
`meta.json` with the evaluation table and training curve), with `curve.png` / `curve.csv`, and the RLlib checkpoint
of the last iteration under `<out>/checkpoint` for resuming. `orchestrator train scheduler` is the command.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from orchestrator import resources
from orchestrator.errors import OrchestratorError
from orchestrator.scheduling import get_policy
from orchestrator.sim import Cluster, TraceLibrary, poisson_workload, simulate



class TrainConfigError(OrchestratorError):
    pass


@dataclass
class TrainConfig:
    env: dict
    model: dict
    ppo: dict
    evaluation: dict
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> "TrainConfig":
        p = Path(path) if path else resources.config_file("scheduler.yaml")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainConfigError(f"Cannot read the scheduler training config '{p}': {exc}") from None
        unknown = sorted(set(raw) - {"env", "model", "ppo", "evaluation"})
        if unknown:
            raise TrainConfigError(f"{p}: unknown section(s) {unknown}; expected env, model, ppo, evaluation")
        cfg = cls(dict(raw.get("env") or {}), dict(raw.get("model") or {}), dict(raw.get("ppo") or {}),
                  dict(raw.get("evaluation") or {}), str(p))
        for key, value in (overrides or {}).items():
            section, _, name = key.partition(".")
            getattr(cfg, section)[name] = value
        from policies.env import EnvConfig

        try:
            EnvConfig.from_dict(cfg.env)
        except (TypeError, ValueError) as exc:
            raise TrainConfigError(f"{p}: env: {exc}") from None
        return cfg


def eval_workloads(cfg: TrainConfig):
    """The fixed evaluation workloads: (label, workload, cluster) per load and seed."""
    from policies.env import EnvConfig

    env = EnvConfig.from_dict(cfg.env)
    ev = cfg.evaluation
    families = list(ev.get("families") or env.families)
    every = TraceLibrary.from_dir(env.traces or resources.traces_dir())
    unknown = sorted((set(env.families) | set(families)) - set(every.families))
    if unknown:
        raise TrainConfigError(f"Training families {unknown} are not in the traces; available: "
                               f"{', '.join(every.families) or 'none'}")
    library = every.subset(families=families, max_tasks=env.max_tasks)
    cpus = int(ev.get("cpus_per_node", 8))
    cluster = Cluster.homogeneous(int(ev.get("nodes", 4)), cpus, cpus * env.memory_gib_per_cpu)
    out = []
    for load in ev.get("loads", [0.8, 0.95]):
        for seed in ev.get("seeds", [500, 501, 502]):
            out.append((f"load {load} seed {seed}", float(load),
                        poisson_workload(library, cluster, float(load), int(ev.get("jobs", 16)), seed=int(seed),
                                         noise=env.noise), cluster))
    return out


def evaluate(policy_factory: Callable, workloads) -> list[float]:
    return [float(simulate(w, c, policy_factory(), seed=0, record=False).jct.mean()) for _, _, w, c in workloads]


def next_version_dir(root: Path) -> Path:
    versions = [int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit()] if root.is_dir() else []
    return root / f"v{max(versions, default=0) + 1}"


def _plot_curve(curve: list[dict], path: Path, heuristics: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    done = [c for c in curve if c["episode_return_mean"] == c["episode_return_mean"]]  # iterations ending episodes
    a1.plot([c["iteration"] for c in done], [c["episode_return_mean"] for c in done], "o-",
            label="episode return (mean of the episodes ended)")
    a1.set_xlabel("iteration")
    a1.set_ylabel("return (−Σ JCT / 600 s)")
    a1.set_title("PPO training (workloads differ per episode)")
    ev = [c for c in curve if c.get("eval_avg_jct") is not None]
    a2.plot([c["iteration"] for c in ev], [c["eval_avg_jct"] for c in ev], "o-", label="learned (greedy)")
    for k, (name, value) in enumerate(heuristics.items()):
        a2.axhline(value, linestyle="--", linewidth=1, label=name, color=f"C{k + 1}")
    a2.set_xlabel("iteration")
    a2.set_ylabel("mean avg JCT on the evaluation workloads (s)")
    a2.set_title("evaluation vs heuristics")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_algo(cfg: TrainConfig):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from policies.env import SchedulingEnv
    from policies.rl_module import SchedulerRLModule

    p = cfg.ppo
    config = (
        PPOConfig()
        .environment(SchedulingEnv, env_config=dict(cfg.env))
        .env_runners(num_env_runners=int(p.get("env_runners", 1)),
                     num_envs_per_env_runner=int(p.get("envs_per_env_runner", 1)),
                     num_cpus_per_env_runner=1, sample_timeout_s=600.0)
        .learners(num_learners=int(p.get("learners", 0)))
        .training(lr=float(p.get("lr", 1e-4)), gamma=float(p.get("gamma", 0.999)),
                  lambda_=float(p.get("lambda", 0.95)),
                  train_batch_size_per_learner=int(p.get("train_batch_size", 2000)),
                  minibatch_size=int(p.get("minibatch_size", 250)), num_epochs=int(p.get("num_epochs", 4)),
                  entropy_coeff=float(p.get("entropy_coeff", 0.002)), clip_param=float(p.get("clip_param", 0.2)),
                  vf_loss_coeff=float(p.get("vf_loss_coeff", 0.5)), vf_clip_param=1e6,
                  grad_clip=float(p.get("grad_clip", 1.0)))
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SchedulerRLModule, model_config=dict(cfg.model)))
        .reporting(metrics_num_episodes_for_smoothing=20)
    )
    return config.build_algo()


def learner_net(algo, model: dict):
    """The learner's current network (the one PPO updates; the driver's own env runner is not kept in sync)."""
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID

    from policies.module import SchedulerNet

    weights = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
    net = SchedulerNet.from_config(model)
    net.load_state_dict({k[len("net."):]: torch.as_tensor(v) for k, v in weights.items() if k.startswith("net.")})
    return net.eval()


def train_scheduler(cfg: TrainConfig, models_root: Path, out_dir: Path, address: str | None = None,
                    iterations: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Train; return the summary (also in the model's meta.json)."""
    import ray
    import torch

    from policies.learned import OBSERVATION_VERSION, LearnedPolicy

    out_dir.mkdir(parents=True, exist_ok=True)
    iters = int(iterations if iterations is not None else cfg.ppo.get("iterations", 60))
    if iters < 1:
        raise TrainConfigError(f"iterations must be >= 1, got {iters}")
    started = time.perf_counter()
    workloads = eval_workloads(cfg)  # checks the families and traces before any Ray starts
    own_ray = not ray.is_initialized()
    if own_ray:
        if address:
            ray.init(address=address)
        else:
            # A fresh local instance, even when another Ray runs on this machine (joining one is --address's job).
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
    heuristics = [h for h in cfg.evaluation.get("heuristics", ["fifo", "srpt-cp"])]
    base = {}
    for name in heuristics:
        try:
            base[name] = evaluate(lambda n=name: get_policy(n), workloads)
        except OrchestratorError as exc:
            log(f"heuristic {name} skipped: {exc}")
    best_heur = min((float(np.mean(v)), k) for k, v in base.items() if k != "fifo")
    log(f"evaluation workloads: {len(workloads)}; heuristics (mean avg JCT): "
        + ", ".join(f"{k} {np.mean(v):.1f}" for k, v in base.items()))
    algo = build_algo(cfg)
    curve: list[dict] = []
    best = None
    every = int(cfg.evaluation.get("every", 5))
    try:
        for it in range(1, iters + 1):
            result = algo.train()
            runners = result.get("env_runners", {})
            row = {"iteration": it, "seconds": round(time.perf_counter() - started, 1),
                   "env_steps": int(result.get("num_env_steps_sampled_lifetime", 0) or 0),
                   "episode_return_mean": float(runners.get("episode_return_mean", float("nan"))),
                   "eval_avg_jct": None}
            if it % every == 0 or it == iters or it == 1:
                net = learner_net(algo, cfg.model)
                scores = evaluate(lambda: LearnedPolicy(net=net, deadline_ms=1e9), workloads)
                row["eval_avg_jct"] = float(np.mean(scores))
                row["eval_vs_best_heuristic"] = row["eval_avg_jct"] / best_heur[0]
                if best is None or row["eval_avg_jct"] < best[0]:
                    best = (row["eval_avg_jct"], it, {k: v.clone() for k, v in net.state_dict().items()}, scores)
            curve.append(row)
            log(json.dumps(row))
        algo.save_to_path(str((out_dir / "checkpoint").resolve()))
    finally:
        algo.stop()
        if own_ray:
            ray.shutdown()
    wall = time.perf_counter() - started
    version_dir = next_version_dir(models_root)
    version_dir.mkdir(parents=True)
    torch.save(best[2], version_dir / "model.pt")
    table = {"workloads": [w[0] for w in workloads], "learned": best[3], **base}
    meta = {
        "observation_version": OBSERVATION_VERSION,
        "model": dict(cfg.model),
        "ppo": dict(cfg.ppo),
        "env": dict(cfg.env),
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "iterations": iters,
        "best_iteration": best[1],
        "env_steps": curve[-1]["env_steps"] if curve else 0,
        "wall_seconds": round(wall, 1),
        "evaluation": {"mean_avg_jct": {"learned": best[0], **{k: float(np.mean(v)) for k, v in base.items()}},
                       "per_workload": table},
        "curve": curve,
    }
    (version_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    _plot_curve(curve, version_dir / "curve.png", {k: float(np.mean(v)) for k, v in base.items()})
    with open(version_dir / "curve.csv", "w") as f:
        f.write("iteration,seconds,env_steps,episode_return_mean,eval_avg_jct\n")
        for r in curve:
            f.write(f"{r['iteration']},{r['seconds']},{r['env_steps']},{r['episode_return_mean']},"
                    f"{'' if r['eval_avg_jct'] is None else r['eval_avg_jct']}\n")
    log(f"saved {version_dir} (best iteration {best[1]}: mean avg JCT {best[0]:.1f} s; best heuristic "
        f"{best_heur[1]} {best_heur[0]:.1f} s); {wall:.0f} s")
    return {"model_dir": str(version_dir), **meta}
