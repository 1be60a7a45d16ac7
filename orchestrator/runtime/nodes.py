"""The Ray cluster's nodes as the orchestrator sees them: which are alive, the custom resources each offers, and
the `NodeView` of capacities and free resources from which the scheduling state reserves."""

from __future__ import annotations

import logging
import time

import ray

from ..scheduling.interface import NodeView
from ..scheduling.placement import allowed_nodes

log = logging.getLogger("orchestrator.runtime")


class Nodes:
    """The nodes Ray reported, indexed in the order they joined; a node that leaves keeps its index, with no
    capacity and no free resources, so that no new work goes there."""

    def __init__(self) -> None:
        self.view = NodeView([], [], [], [])
        self.ids: list[str] = []  # Ray node ids
        self.alive: list[bool] = []
        self.custom: list[dict[str, float]] = []  # the custom resources each node offers
        self.refreshed_at = time.monotonic()

    def refresh(self) -> None:
        """Take in the nodes that joined and the ones that left since the last look at Ray's node table."""
        self.refreshed_at = time.monotonic()
        view = self.view
        alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        for idx, node_id in enumerate(self.ids):
            if self.alive[idx] and node_id not in alive:
                # The node is gone: no new work goes there; its tasks fail and are retried elsewhere.
                self.alive[idx] = False
                view.cap_cpus[idx] = view.cap_memory[idx] = view.cap_gpus[idx] = 0.0
                view.free_cpus[idx] = view.free_memory[idx] = view.free_gpus[idx] = -1e18
                view.custom[idx] = {}
                log.warning("node %s left the cluster", node_id)
        for node_id, info in alive.items():
            if node_id in self.ids:
                continue
            res = info.get("Resources", {})
            self.ids.append(node_id)
            self.alive.append(True)
            self.custom.append({k: float(v) for k, v in res.items()
                                if k not in ("CPU", "GPU", "memory", "object_store_memory")
                                and not k.startswith("node:")})
            view.custom.append(dict(self.custom[-1]))  # what the scheduling state's `allowed_nodes` reads
            view.names.append(info.get("NodeManagerAddress", node_id[:8]) + "/" + node_id[:8])
            for cap, free, value in (
                (view.cap_cpus, view.free_cpus, float(res.get("CPU", 0.0))),
                (view.cap_memory, view.free_memory, float(res.get("memory", 0.0))),
                (view.cap_gpus, view.free_gpus, float(res.get("GPU", 0.0))),
            ):
                cap.append(value)
                free.append(value)

    def offering(self, custom: dict[str, float]) -> frozenset[int]:
        """The alive nodes that offer at least `custom` of every custom resource it names."""
        return allowed_nodes(self.custom, custom, alive=self.alive) or frozenset()

    def large_enough(self, cpus: float, memory: float, gpus: float) -> list[int]:
        """The alive nodes whose capacity holds this request (whether or not they have room for it now)."""
        view = self.view
        return [i for i in range(len(self.ids)) if self.alive[i]
                and cpus <= view.cap_cpus[i] + 1e-9 and memory <= view.cap_memory[i]
                and gpus <= view.cap_gpus[i] + 1e-9]

    def ran_on(self, index: int, ray_node_id: str | None = None) -> str | None:
        """The name of the node that ran an attempt: the one Ray reports (`ray_node_id`; the tests compare it with
        the policy's choice) when it is known, else the one the attempt was sent to."""
        names = self.view.names
        if ray_node_id:
            return names[self.ids.index(ray_node_id)] if ray_node_id in self.ids else ray_node_id[:8]
        return names[index] if index < len(names) else None

    def reset_free(self) -> None:
        """Every alive node's free resources back to its capacity (before what runs is reserved again)."""
        view = self.view
        for i in range(len(view)):
            if self.alive[i]:
                view.free_cpus[i] = view.cap_cpus[i]
                view.free_memory[i] = view.cap_memory[i]
                view.free_gpus[i] = view.cap_gpus[i]
