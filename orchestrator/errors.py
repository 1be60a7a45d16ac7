"""One exception hierarchy for the project: every error names the problem and, where it can, the fix.

Every error is also one of five kinds that an HTTP layer maps to a status code (`http_status`): invalid input
(422), not found (404), conflict with the current state (409), refused by a rule or a setting (403), and
unavailable for now (503, worth retrying). Errors of no kind are the project's own faults (500).
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of every error the project raises on purpose."""

    http_status = 500


class InvalidError(OrchestratorError):
    """The input is wrong: a workflow file, a parameter, a decision. Fix the input and try again."""

    http_status = 422


class NotFoundError(OrchestratorError):
    """The named run, task, key or file does not exist."""

    http_status = 404


class ConflictError(OrchestratorError):
    """The request does not fit the current state (an illegal status move, a name already taken)."""

    http_status = 409


class RefusedError(OrchestratorError):
    """A rule or a setting forbids it (another orchestrator owns the store, a disabled feature)."""

    http_status = 403


class UnavailableError(OrchestratorError):
    """A service the request needs is unreachable for now (the database, Ray); retrying later may work."""

    http_status = 503


class WorkflowError(InvalidError):
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


class LoaderError(InvalidError):
    """A workflow file cannot be read or parsed."""


class PolicyError(InvalidError):
    """A scheduling policy is unknown or returned an invalid decision."""


class PolicyPluginError(PolicyError):
    """The package of plugin policies (`policies`) failed to import, so a policy that is not built in is missing."""

    http_status = 500  # a fault of the installation, not of the request


class SimulationError(InvalidError):
    """The simulator was given an impossible workload or cluster."""


class StoreError(OrchestratorError):
    """The state store is unreachable or inconsistent."""


class StoreUnavailableError(StoreError, UnavailableError):
    """The database could not be reached or dropped the connection (refused, cut, locked): the operation did not
    happen, or - for a write whose commit was cut off - its outcome is unknown. Worth retrying."""


class StoreRefusedError(StoreError, RefusedError):
    """The store is owned by another orchestrator (its lease), so this one may not run its workflows."""


class LeaseLostError(StoreRefusedError):
    """Another orchestrator took this store over: the one that lost it must stop writing."""


class StoreInvalidError(StoreError, InvalidError):
    """The store was given something it cannot take (a malformed run id, cursor or reference, an unpicklable
    result)."""


class StoreNotFoundError(StoreError, NotFoundError):
    """No such run, task or result in the store."""


class StoreConflictError(StoreError, ConflictError):
    """The store refused a write that conflicts with what it holds (a duplicate run id, a stale status)."""


class InvalidTransitionError(ConflictError):
    """A task or workflow status change that the state machine does not allow."""


class PredictionError(InvalidError):
    """A prediction model got input it cannot use."""
