"""One exception hierarchy for the project: every error names the problem and, where it can, the fix."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of every error the project raises on purpose."""


class WorkflowError(OrchestratorError):
    """A workflow definition is invalid."""


class CycleError(WorkflowError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        path = " -> ".join(cycle + cycle[:1])
        super().__init__(f"Workflow has a dependency cycle: {path}")


class UnknownTaskError(WorkflowError):
    pass


class DuplicateTaskError(WorkflowError):
    pass


class ResourceRequestError(WorkflowError):
    pass


class WorkflowTooLargeError(WorkflowError):
    pass


class LoaderError(OrchestratorError):
    """A workflow file cannot be read or parsed."""


class PolicyError(OrchestratorError):
    """A scheduling policy is unknown or returned an invalid decision."""


class SimulationError(OrchestratorError):
    """The simulator was given an impossible workload or cluster."""


class StoreError(OrchestratorError):
    """The state store is unreachable or inconsistent."""


class InvalidTransitionError(OrchestratorError):
    """A task or workflow status change that the state machine does not allow."""


class PredictionError(OrchestratorError):
    """A prediction model got input it cannot use."""
