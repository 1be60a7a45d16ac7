"""Learned scheduling policies (RLlib, graph-neural-network encoder), trained in the simulator.

A policy defined here registers itself by name with `orchestrator.scheduling.register_policy`, so the simulator,
the runtime and `orchestrator bench` use it like any heuristic. None is shipped yet.
"""
