"""The learned scheduler: its environment over the simulator, its policy in both engines, its training entry point
(RLlib PPO, a tiny configuration) and the runtime's fallback when its model cannot be used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from orchestrator.model import Workflow
from orchestrator.runtime.state import RuntimeState
from orchestrator.scheduling import NodeView, available_policies, get_policy
from orchestrator.sim import Cluster, TraceLibrary, poisson_workload, simulate
from policies.env import REWARD_SECONDS, SchedulingEnv
from policies.learned import LearnedPolicy, LearnedPolicyError, latest_model_dir, load_net
from policies.module import SchedulerNet
from policies.observation import MAX_NODES, NUM_ACTIONS


@pytest.fixture(scope="module")
def small_workloads(trace_dir):
    library = TraceLibrary.from_dir(trace_dir).subset(max_tasks=120)
    cluster = Cluster.homogeneous(2, 8, 32)

    def draw(seed):
        return poisson_workload(library, cluster, 0.9, 5, seed=seed), cluster

    return draw


def _greedy_episode(env, net, seed):
    obs, _ = env.reset(seed=seed)
    total, done, steps = 0.0, False, 0
    while not done:
        assert env.observation_space.contains(obs)
        mask = obs["action_mask"]
        assert mask.any()
        with torch.no_grad():
            logits = net({k: torch.as_tensor(v)[None] for k, v in obs.items()})[0]
        a = int(logits.argmax())
        assert mask[a] == 1.0, "the greedy action of the masked logits is legal"
        obs, reward, done, _, info = env.step(a)
        total += reward
        steps += 1
    return total, steps, info


def test_env_return_is_minus_the_sum_of_completion_times(small_workloads):
    env = SchedulingEnv({"workload_fn": small_workloads})
    total, steps, info = _greedy_episode(env, SchedulerNet().eval(), seed=3)
    jct = env.result()
    workload, _ = small_workloads(env._base_seed)
    assert len(jct) == len(workload.jobs)
    assert steps == workload.num_tasks  # one step per task started
    assert total == pytest.approx(-sum(jct.values()) / REWARD_SECONDS, rel=1e-9)
    assert info["avg_jct"] == pytest.approx(np.mean(list(jct.values())))


def test_env_masks_actions_that_do_not_fit(small_workloads):
    env = SchedulingEnv({"workload_fn": small_workloads})
    obs, _ = env.reset(seed=5)
    mask = obs["action_mask"].reshape(-1, MAX_NODES)
    nodes = env.sim.nodes
    for c, task in enumerate(env._cands):
        for s, i in enumerate(env._order):
            fits = nodes.free_cpus[i] >= task.cpus - 1e-9 and nodes.free_memory[i] >= task.memory - 1e-9
            assert bool(mask[c, s]) == fits
    assert not mask[len(env._cands):].any()  # padding candidates
    assert not mask[:, len(env._order):].any()  # padding nodes
    # an illegal action is replaced by a legal one, never applied as such
    illegal = int(np.flatnonzero(obs["action_mask"] == 0)[0])
    env.step(illegal)
    assert env.steps == 1


def test_untrained_greedy_policy_follows_the_srpt_cp_prior(small_workloads):
    """With the MLPs' last layers at zero the greedy choice is the first candidate in srpt-cp order that fits, on
    the first node that fits: the learned policy starts from the strongest heuristic."""
    env = SchedulingEnv({"workload_fn": small_workloads})
    obs, _ = env.reset(seed=11)
    net = SchedulerNet().eval()
    with torch.no_grad():
        a = int(net({k: torch.as_tensor(v)[None] for k, v in obs.items()})[0].argmax())
    first_legal = int(np.flatnonzero(obs["action_mask"])[0])
    assert a == first_legal


def test_learned_policy_runs_in_the_simulator_deterministically(small_workloads):
    workload, cluster = small_workloads(21)
    net = SchedulerNet().eval()
    torch.manual_seed(0)
    for p in net.task_head[-1].parameters():  # a policy that deviates from the prior
        torch.nn.init.normal_(p, std=0.5)
    a = simulate(workload, cluster, LearnedPolicy(net=net), seed=0)
    b = simulate(workload, cluster, LearnedPolicy(net=net), seed=0)
    assert np.array_equal(a.jct, b.jct)
    assert a.num_tasks == workload.num_tasks
    assert (a.jct >= a.isolated_lb - 1e-6).all()


def test_shipped_model_is_registered_and_loads():
    assert "learned" in available_policies()
    path = latest_model_dir()
    assert path is not None, "a trained model is shipped under models/scheduler"
    net, meta = load_net(path)
    assert meta["evaluation"]["mean_avg_jct"]["learned"] > 0
    policy = get_policy("learned")
    policy.reset(0)
    assert isinstance(policy.net, SchedulerNet)


def test_missing_or_mismatched_model_is_named(tmp_path):
    with pytest.raises(LearnedPolicyError, match="No learned scheduler model"):
        load_net(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"observation_version": -1}))
    torch.save(SchedulerNet().state_dict(), tmp_path / "model.pt")
    with pytest.raises(LearnedPolicyError, match="observation version -1"):
        load_net(tmp_path)


def _state_with_run(policy_name, monkeypatch=None):
    view = NodeView(["n0", "n1"], [4.0, 4.0], [16 * 2**30] * 2, [0.0, 0.0])
    state = RuntimeState(view, default_policy="srpt-cp")
    wf = Workflow(name="w", tasks=[{"id": f"t{i}", "duration": 1.0 + i} for i in range(12)])
    run = state.admit("run-1", wf, 0.0, policy=policy_name)
    return state, run


def test_runtime_falls_back_when_the_model_cannot_load(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHESTRATOR_SCHEDULER_MODEL", str(tmp_path / "missing"))
    state, run = _state_with_run("learned")
    assert run.policy_name == "srpt-cp"
    notes = [c for c in state.take_changes() if getattr(c, "type", None) == "workflow.policy_fallback"]
    assert notes and notes[0].detail["policy"] == "learned" and "No learned scheduler model" in notes[0].detail["reason"]
    assert len(state.schedule(0.0)) == 8  # the run goes on under srpt-cp: both nodes filled


def test_runtime_falls_back_when_a_decision_is_too_slow(monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_LEARNED_DEADLINE_MS", "0")
    state, run = _state_with_run("learned")
    assert run.policy_name == "learned"
    decided = state.schedule(0.0)
    assert run.policy_name == "srpt-cp"
    notes = [c for c in state.take_changes() if getattr(c, "type", None) == "workflow.policy_fallback"]
    assert notes and "deadline" in notes[-1].detail["reason"]
    assert len(decided) + len(state.schedule(0.0)) == 8  # nothing stalls: the fallback fills the cluster


@pytest.mark.slow
def test_train_scheduler_tiny_run_saves_a_loadable_model(ray_cluster, tmp_path, small_workloads):
    from training.train_scheduler import TrainConfig, train_scheduler

    cfg = TrainConfig.load(None, {
        "ppo.train_batch_size": 128, "ppo.minibatch_size": 64, "ppo.num_epochs": 1, "ppo.env_runners": 0,
        "ppo.envs_per_env_runner": 1, "env.synthetic_per_family": 0, "env.jobs": [2, 3], "env.max_tasks": 80,
        "evaluation.seeds": [500], "evaluation.loads": [0.8], "evaluation.jobs": 3, "evaluation.every": 1,
        "evaluation.heuristics": ["fifo", "srpt-cp"]})
    summary = train_scheduler(cfg, tmp_path / "models", tmp_path / "out", iterations=2, log=lambda s: None)
    model_dir = tmp_path / "models" / "v1"
    assert summary["model_dir"] == str(model_dir)
    for name in ("model.pt", "meta.json", "curve.png", "curve.csv"):
        assert (model_dir / name).exists(), name
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["env_steps"] >= 256 and len(meta["curve"]) == 2
    assert set(meta["evaluation"]["mean_avg_jct"]) == {"learned", "fifo", "srpt-cp"}
    net, _ = load_net(model_dir)
    # the saved network is the learner's, updated by PPO: its score layers no longer sit at their zero start
    assert net.task_head[-1].weight.abs().sum() > 0
    workload, cluster = small_workloads(2)
    assert simulate(workload, cluster, LearnedPolicy(net=net), seed=0).num_tasks == workload.num_tasks
    assert (tmp_path / "out" / "checkpoint").is_dir()


def test_the_runtime_sets_a_decision_deadline_and_the_simulator_none(monkeypatch):
    from orchestrator.runtime.state import DECISION_DEADLINE_MS

    monkeypatch.delenv("ORCHESTRATOR_LEARNED_DEADLINE_MS", raising=False)
    assert LearnedPolicy().deadline_ms is None  # a simulation is a function of its inputs, not of the clock
    state, run = _state_with_run("learned")
    assert run.policy_name == "learned"
    assert state.policies["learned"].deadline_ms == DECISION_DEADLINE_MS
    assert len(state.schedule(0.0)) == 8  # the learned policy fills both nodes


def test_one_round_fills_a_large_cluster_from_one_workflow():
    """A round goes on until nothing fits: one wide workflow fills every free cpu of a 128-cpu cluster at once."""
    view = NodeView([f"n{i}" for i in range(16)], [8.0] * 16, [32 * 2**30] * 16, [0.0] * 16)
    state = RuntimeState(view, default_policy="srpt-cp")
    wf = Workflow(name="wide", tasks=[{"id": f"t{i}", "duration": 1.0 + i % 7} for i in range(300)])
    state.admit("run-wide", wf, 0.0, policy="learned")
    assert len(state.schedule(0.0)) == 128


def test_training_names_unknown_families_before_starting_ray(tmp_path):
    import ray

    from training.train_scheduler import TrainConfig, TrainConfigError, train_scheduler

    cfg = TrainConfig.load(None, {"env.families": ["cycles", "no-such-family"]})
    was_running = ray.is_initialized()
    with pytest.raises(TrainConfigError, match=r"\['no-such-family'\] are not in the traces; available: .*cycles"):
        train_scheduler(cfg, tmp_path / "models", tmp_path / "out", iterations=1, log=lambda s: None)
    assert ray.is_initialized() == was_running
    assert not (tmp_path / "models").exists()  # nothing half-written
