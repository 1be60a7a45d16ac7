"""Dispatch ahead, one rule for both engines: once a policy has filled the free slots, it may also commit short
ready tasks to busy nodes, to start there the moment a slot frees.

The Ray runtime does it (by default: up to 2x each node's resources, tasks predicted at most 0.25 s) so that a
short task starts on the worker a finishing task releases, without a round trip through the orchestrator; the
simulator models it (an option, off by default) with this same code, so that both engines offer the policy the
same states and take the same decisions. Each round, after the pass on the free resources, the engine asks the
policy once more, on an `AheadView`: each node's remaining allowance (fraction x its capacity, less what is
committed there already, and never more than the node itself has) as its free resources, and only the ready
tasks predicted to take at most `max_seconds`. A task committed ahead waits in its node's queue, in commit order,
and takes a slot when its node has room for it: when a task there ends (`promote`) or, if the node has room
already, at once at the end of the round (`promote_all`).

Why the simulator models it rather than the runtime giving it up: it is how the runtime runs by default (short
tasks would otherwise wait a round trip through the orchestrator for every slot), so a simulator without it
would not predict the runtime; and offering the runtime's policy only the simulator's state would mean dropping
it. Sharing this module costs the simulator one option and keeps one semantics: both engines build the same
allowances, offer the same tasks and promote in the same order (`sim/conformance.py` checks it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from .interface import EPS, NodeView, ReadyTask, SchedulingState


class AheadView:
    """The `SchedulingState` of the dispatch-ahead pass: the nodes' allowances as their free resources, and only
    the ready tasks short enough to be queued behind running ones (`num_ready` counts all ready tasks)."""

    __slots__ = ("_state", "nodes", "queue", "max_predicted")

    def __init__(self, state: SchedulingState, nodes: NodeView, max_predicted: float):
        self._state = state
        self.nodes = nodes
        self.queue = state.queue
        self.max_predicted = max_predicted

    @property
    def now(self) -> float:
        return self._state.now

    @property
    def jobs(self) -> Mapping[int, Any]:
        return self._state.jobs

    def ready(self, max_cpus: float | None = None) -> Iterator[ReadyTask]:
        return self.queue.iter(max_cpus, self.max_predicted)

    @property
    def num_ready(self) -> int:
        return len(self.queue)


class DispatchAhead:
    """The tasks committed ahead, per node in commit order, and the resources they commit. An engine's item is
    whatever names a task attempt to it ((run, task) in the runtime, (job, task) in the simulator)."""

    def __init__(self, fraction: float = 0.0, max_seconds: float = 0.25):
        if not fraction >= 0 or not max_seconds >= 0:
            raise ValueError(f"dispatch ahead must be >= 0 (got fraction={fraction}, max_seconds={max_seconds})")
        self.fraction = float(fraction)
        self.max_seconds = float(max_seconds)
        self.queues: dict[int, deque[tuple[Hashable, float, float, float]]] = {}  # node -> (item, c, m, g)
        self.used: dict[int, list[float]] = {}  # node -> [cpus, memory, gpus] committed and not started

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def allowance(self, nodes: NodeView) -> NodeView:
        """Each node's remaining allowance as free resources: fraction x capacity less what is committed there,
        capped at the capacity (a task larger than its node could never take a slot there); none on a node that
        left the cluster (free resources below -1e17)."""
        f = self.fraction
        view = NodeView(nodes.names, nodes.cap_cpus, nodes.cap_memory, nodes.cap_gpus, nodes.custom)
        for i in range(len(nodes)):
            if nodes.free_cpus[i] < -1e17:
                view.free_cpus[i] = view.free_memory[i] = view.free_gpus[i] = -1e18
                continue
            used = self.used.get(i, (0.0, 0.0, 0.0))
            cap_c, cap_m, cap_g = nodes.cap_cpus[i], nodes.cap_memory[i], nodes.cap_gpus[i]
            view.free_cpus[i] = min(f * cap_c - used[0], cap_c)
            view.free_memory[i] = min(f * cap_m - used[1], cap_m)
            view.free_gpus[i] = min(f * cap_g - used[2], cap_g)
        return view

    def view(self, state: SchedulingState) -> AheadView | None:
        """The state of this round's ahead pass, or None when there is none (off, nothing ready, no allowance)."""
        if not self.enabled or not state.num_ready:
            return None
        nodes = self.allowance(state.nodes)
        if not nodes.free_cpus or max(nodes.free_cpus) <= EPS:
            return None
        return AheadView(state, nodes, self.max_seconds)

    def commit(self, node: int, item: Hashable, cpus: float, memory: float, gpus: float) -> None:
        used = self.used.setdefault(node, [0.0, 0.0, 0.0])
        used[0] += cpus
        used[1] += memory
        used[2] += gpus
        self.queues.setdefault(node, deque()).append((item, cpus, memory, gpus))

    def _uncommit(self, node: int, cpus: float, memory: float, gpus: float) -> None:
        used = self.used[node]
        used[0] -= cpus
        used[1] -= memory
        used[2] -= gpus

    def promote(self, node: int, nodes: NodeView) -> list[Hashable]:
        """`node` has room again: the tasks queued there take it, in order, as far as they fit (reserved on
        `nodes`). Returns them."""
        q = self.queues.get(node)
        out = []
        while q:
            item, c, m, g = q[0]
            if not nodes.fits(node, c, m, g):
                break
            q.popleft()
            self._uncommit(node, c, m, g)
            nodes.reserve(node, c, m, g)
            out.append(item)
        return out

    def promote_all(self, nodes: NodeView) -> list[tuple[int, Hashable]]:
        """After a round's ahead pass: tasks committed to a node that has room for them now take it (as the
        node's own queue would start them), node by node in index order. Returns (node, item) pairs."""
        return [(node, item) for node in sorted(self.queues) for item in self.promote(node, nodes)]

    def withdraw(self, node: int, item: Hashable, cpus: float, memory: float, gpus: float) -> None:
        """A task that ended while still waiting ahead (cancelled, lost): it leaves the queue, its commitment
        is given back; it never held a slot."""
        q = self.queues.get(node)
        if q is not None:
            for k, entry in enumerate(q):
                if entry[0] == item:
                    del q[k]
                    break
        self._uncommit(node, cpus, memory, gpus)

    def clear(self) -> list[Hashable]:
        """Forget every commitment; returns the items that were waiting."""
        items = [entry[0] for q in self.queues.values() for entry in q]
        self.queues.clear()
        self.used.clear()
        return items
