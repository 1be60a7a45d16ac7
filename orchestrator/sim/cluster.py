"""Cluster descriptions for the simulator (and for what-if analysis): nodes with cpu, memory and gpu capacity, and
the custom resources each offers (as Ray's `resources={"worker": 1}`: they restrict which tasks may go there)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SimulationError

GiB = 1024**3


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpus: float
    memory: float  # bytes
    gpus: float = 0.0
    node_type: str = "default"
    custom: dict[str, float] = field(default_factory=dict, hash=False)  # custom resources offered


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[NodeSpec, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise SimulationError("A cluster needs at least one node")
        for n in self.nodes:
            if n.cpus <= 0 or n.memory <= 0 or n.gpus < 0:
                raise SimulationError(f"Node '{n.name}' has cpus={n.cpus}, memory={n.memory}: both must be > 0")
            for name, value in n.custom.items():
                if not value >= 0:
                    raise SimulationError(f"Node '{n.name}' offers custom resource {name}={value}: must be >= 0")

    @classmethod
    def homogeneous(cls, num_nodes: int, cpus: float = 8, memory_gib: float = 32, gpus: float = 0,
                    node_type: str = "default") -> "Cluster":
        if num_nodes < 1:
            raise SimulationError(f"A cluster needs at least one node, got {num_nodes}")
        return cls(tuple(NodeSpec(f"node-{i}", float(cpus), float(memory_gib) * GiB, float(gpus), node_type)
                         for i in range(num_nodes)))

    @property
    def total_cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def total_memory(self) -> float:
        return sum(n.memory for n in self.nodes)

    @property
    def max_cpus(self) -> float:
        return max(n.cpus for n in self.nodes)

    @property
    def max_memory(self) -> float:
        return max(n.memory for n in self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)
