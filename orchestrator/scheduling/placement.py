"""Where a task may run: the nodes that offer its custom resources (Ray's `resources={"worker": 1}`).

One function for both engines: the simulator applies it to its cluster's nodes, the runtime to the nodes Ray
reports. A task's `ReadyTask.allowed` is its result; every placement (first fit, best fit, a policy's own)
keeps to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def allowed_nodes(node_custom: Sequence[Mapping[str, float]], request: Mapping[str, float] | None,
                  alive: Sequence[bool] | None = None) -> frozenset[int] | None:
    """The indices of the nodes that offer at least `request` of every custom resource it names (and are alive,
    when `alive` is given); None when the request names none (any node will do). Custom resources only restrict
    where a task may go: they are not counted down while it runs."""
    if not request:
        return None
    items = tuple(request.items())
    return frozenset(i for i, offered in enumerate(node_custom)
                     if (alive is None or alive[i]) and all(offered.get(k, 0.0) >= v for k, v in items))
