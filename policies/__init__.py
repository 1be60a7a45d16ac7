"""Learned scheduling policies (RLlib PPO, graph-neural-network encoder), trained in the simulator.

`learned` registers itself with `orchestrator.scheduling.register_policy`, so the simulator, the runtime and
`orchestrator bench` use it like any heuristic. Its model is loaded (torch, no RLlib) when the policy is first used.
"""

from orchestrator.scheduling import register_policy


def _learned():
    from .learned import LearnedPolicy

    return LearnedPolicy()


register_policy("learned", _learned)
