"""Properties of the runtime's bookkeeping (`RuntimeState`), driven without Ray through random DAGs, clusters,
policies and completion orders drawn by hypothesis. After every step: no task starts before its parents
succeeded; each node's reserved resources stay within its capacity and equal what the attempts in flight hold;
every recorded move is legal and names the status it leaves; counts match the tasks' statuses; a run ends exactly
when all its tasks are terminal, with the right status; attempts are numbered 1, 2, 3, ...; retries follow the
task's budget; a failure skips exactly the failed task's descendants. The same inputs and seed give the same
decisions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.loaders import workflow_from_dict
from orchestrator.runtime.state import RetryPolicy, RuntimeState
from orchestrator.scheduling import available_policies
from orchestrator.scheduling.interface import NodeView
from orchestrator.states import TASK_TRANSITIONS, WORKFLOW_TRANSITIONS, TaskStatus, WorkflowStatus
from orchestrator.store.records import RunNote, TaskChange, WorkflowChange

S, W = TaskStatus, WorkflowStatus
MiB, GiB = 1024 ** 2, 1024 ** 3
POLICIES = available_policies()
SYSTEM_RETRIES = 2
OK, FAIL, LOST, CANCEL = "ok", "fail", "lost", "cancel"


@dataclass(frozen=True)
class Scenario:
    nodes: tuple[tuple[float, int, float], ...]  # (cpus, memory bytes, gpus) per node
    runs: tuple[tuple[dict, str | None, int], ...]  # (workflow dict, policy or None for the default, admitted at step)
    steps: tuple[tuple[int, str, float], ...]  # (which attempt in flight, its outcome, time that passes)
    default_policy: str
    seed: int


@st.composite
def scenarios(draw) -> Scenario:
    nodes = tuple(draw(st.lists(st.tuples(st.sampled_from([1.0, 2.0, 4.0, 8.0]),
                                          st.sampled_from([1, 2, 8]).map(lambda g: g * GiB),
                                          st.sampled_from([0.0, 0.0, 1.0, 2.0])), min_size=1, max_size=4)))
    runs = []
    for r in range(draw(st.integers(1, 3))):
        tasks = []
        for i in range(draw(st.integers(1, 30))):
            # Every task fits some node whole (cpus, memory and gpus of that one node).
            cap_c, cap_m, cap_g = nodes[draw(st.integers(0, len(nodes) - 1))]
            task = {"id": f"t{i}",
                    "resources": {"cpus": draw(st.integers(0, int(2 * cap_c))) / 2,
                                  "memory": draw(st.integers(0, cap_m // (256 * MiB))) * 256 * MiB,
                                  "gpus": draw(st.integers(0, int(2 * cap_g))) / 2},
                    "depends_on": [f"t{j}" for j in sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))]
                    if i else [],
                    "priority": draw(st.integers(-2, 2)),
                    "retries": draw(st.integers(0, 2)),
                    "retry_delay": draw(st.sampled_from([0.0, 0.5, 2.0]))}
            duration = draw(st.one_of(st.none(), st.sampled_from([0.1, 1.0, 5.0, 30.0])))
            if duration is not None:
                task["duration"] = duration
            tasks.append(task)
        runs.append(({"name": f"w{r}", "tasks": tasks}, draw(st.one_of(st.none(), st.sampled_from(POLICIES))),
                     0 if r == 0 else draw(st.integers(0, 20))))
    outcome = st.sampled_from([OK, OK, OK, FAIL, LOST, OK, OK, FAIL, OK, OK, FAIL, CANCEL, OK, OK, LOST, OK])
    steps = draw(st.lists(st.tuples(st.integers(0, 1000), outcome, st.sampled_from([0.0, 0.1, 1.0])),
                          max_size=200))
    return Scenario(nodes, tuple(runs), tuple(steps), draw(st.sampled_from(POLICIES)), draw(st.integers(0, 3)))


class Ledger:
    """What the recorded changes say, kept apart from the state, and checked against it after each step."""

    def __init__(self, state: RuntimeState):
        self.state = state
        self.status: dict[tuple[str, str], TaskStatus] = {}
        self.attempts: dict[tuple[str, str], list[int]] = {}
        self.retry_at: dict[tuple[str, str], float] = {}
        self.run_status: dict[str, WorkflowStatus] = {}
        self.cancelled: set[str] = set()
        self.own_failures: Counter = Counter()
        self.system_failures: Counter = Counter()
        self.parents: dict[tuple[str, str], list[str]] = {}
        self.descendants: dict[str, dict[str, set[str]]] = {}
        self.in_flight: list[tuple[str, int, int]] = []  # (run id, task index, node) dispatched, not yet ended
        self.log: list = []  # every change and decision, in order: compared between two identical drives

    def admitted(self, run_id: str, spec: dict) -> None:
        run = self.state.by_run[run_id]
        self.run_status[run_id] = W.PENDING
        assert list(run.dag.ids) == [t["id"] for t in spec["tasks"]]
        for t in spec["tasks"]:
            self.status[(run_id, t["id"])] = S.PENDING
            self.attempts[(run_id, t["id"])] = []
            self.parents[(run_id, t["id"])] = list(t["depends_on"])
        # Descendants from the spec itself (tasks only depend on earlier ones): not from the DAG code under test.
        below: dict[str, set[str]] = {t["id"]: set() for t in spec["tasks"]}
        for t in reversed(spec["tasks"]):
            for p in t["depends_on"]:
                below[p] |= {t["id"]} | below[t["id"]]
        self.descendants[run_id] = below

    def absorb(self, now: float, decisions=()) -> None:
        changes = self.state.take_changes()
        self.log += changes
        names = self.state.nodes.names
        started = []
        for c in changes:
            assert not isinstance(c, RunNote), f"a built-in policy fell back: {c}"
            if isinstance(c, WorkflowChange):
                old = self.run_status[c.run_id]
                assert (old, c.status) in WORKFLOW_TRANSITIONS, f"run {c.run_id}: {old} -> {c.status}"
                self.run_status[c.run_id] = c.status
                continue
            assert isinstance(c, TaskChange)
            key = (c.run_id, c.task_id)
            old = self.status[key]
            assert c.expected == old, f"{key}: recorded as leaving {c.expected}, but it was {old}"
            assert (old, c.status) in TASK_TRANSITIONS, f"{key}: illegal move {old} -> {c.status}"
            assert c.at == now
            run = self.state.by_run[c.run_id]
            if c.status == S.RUNNING:
                parents = self.parents[key]
                assert all(self.status[(c.run_id, p)] == S.SUCCEEDED for p in parents), \
                    f"{key} started before its parents succeeded: {[(p, self.status[(c.run_id, p)]) for p in parents]}"
                previous = self.attempts[key]
                assert c.attempt == (previous[-1] + 1 if previous else 1), f"{key}: attempt {c.attempt} after {previous}"
                previous.append(c.attempt)
                assert c.node in names
                started.append((c.run_id, c.task_id, c.node))
            elif c.status == S.RETRYING:
                assert c.next_attempt_at is not None and c.next_attempt_at >= now
                self.retry_at[key] = c.next_attempt_at
            elif old == S.RETRYING and c.status == S.READY:
                assert now >= self.retry_at.pop(key), f"{key} retried before its backoff ended"
            elif old == S.RETRYING:
                self.retry_at.pop(key, None)
            self.status[key] = c.status
        # The decisions returned are the moves to running recorded, one for one, in order.
        chosen = [(run.run_id, run.dag.ids[d.task.task], names[d.node]) for run, d in decisions]
        assert chosen == started
        self.log += chosen
        self.in_flight += [(run.run_id, d.task.task, d.node) for run, d in decisions]

    def next_retry(self) -> float | None:
        return min(self.retry_at.values(), default=None)

    def check(self) -> None:
        state = self.state
        nodes = state.nodes
        held = [[0.0, 0.0, 0.0] for _ in nodes.names]
        flying = set()
        for run_id, i, node in self.in_flight:
            run = state.by_run[run_id]
            assert (run_id, i) not in flying, "one task twice in flight"
            flying.add((run_id, i))
            # In flight: running, or cancelled while running (its worker has not reported yet).
            assert run.detail[i] in (S.RUNNING, S.CANCELLED), (run_id, run.dag.ids[i], run.detail[i])
            for k, v in enumerate((run.dag.cpus[i], run.dag.memory[i], run.dag.gpus[i])):
                held[node][k] += float(v)
        for n in range(len(nodes)):
            caps = (nodes.cap_cpus[n], nodes.cap_memory[n], nodes.cap_gpus[n])
            free = (nodes.free_cpus[n], nodes.free_memory[n], nodes.free_gpus[n])
            for used, cap, left, what in zip(held[n], caps, free, ("cpus", "memory", "gpus")):
                assert used <= cap + 1e-9, f"node {n}: {used} {what} reserved, capacity {cap}"
                assert abs(left - (cap - used)) <= 1e-6, f"node {n}: {left} {what} free, expected {cap} - {used}"
        for run_id, run in state.by_run.items():
            mine = [self.status[(run_id, tid)] for tid in run.dag.ids]
            assert list(run.detail) == mine, f"run {run_id}: state and recorded changes disagree"
            assert run.counts() == {s.value: k for s, k in Counter(mine).items()}
            for i, s in enumerate(mine):
                if s == S.RUNNING:
                    assert (run_id, i) in flying, f"{run_id}/{run.dag.ids[i]} is running but was never dispatched"
            assert run.wf_status == self.run_status[run_id]
            done = all(s.terminal for s in mine)
            assert run.wf_status.terminal == done, f"run {run_id} is {run.wf_status} with tasks {Counter(mine)}"
            assert (run.id in state.jobs) == (not done)
            if done:
                expected = (W.CANCELLED if run_id in self.cancelled
                            else W.FAILED if S.FAILED in mine else W.SUCCEEDED)
                assert run.wf_status == expected
            # A failure skips its descendants, and nothing else is skipped.
            below = self.descendants[run_id]
            below_failed = {d for tid, s in zip(run.dag.ids, mine) if s == S.FAILED for d in below[tid]}
            assert {tid for tid, s in zip(run.dag.ids, mine) if s == S.SKIPPED} == below_failed
            # Retries: a task's own failures use up its `retries`, lost attempts the system retries.
            for i, tid in enumerate(run.dag.ids):
                own, lost = self.own_failures[(run_id, tid)], self.system_failures[(run_id, tid)]
                assert own <= run.specs[i].retries + 1 and lost <= SYSTEM_RETRIES + 1


def drive(sc: Scenario) -> list:
    """Run the scenario on a fresh RuntimeState, checking every property after each step; returns the log."""
    nodes = NodeView([f"n{k}" for k in range(len(sc.nodes))], [c for c, _, _ in sc.nodes],
                     [m for _, m, _ in sc.nodes], [g for _, _, g in sc.nodes])
    state = RuntimeState(nodes, default_policy=sc.default_policy, seed=sc.seed,
                         retry=RetryPolicy(base=0.5, cap=4.0, jitter=0.5, system_retries=SYSTEM_RETRIES))
    ledger = Ledger(state)
    waiting = sorted(enumerate(sc.runs), key=lambda x: x[1][2])
    now, step, quiet = 0.0, 0, 0
    while True:
        while waiting and waiting[0][1][2] <= step:
            k, (spec, policy, _) = waiting.pop(0)
            state.admit(f"r{k}", workflow_from_dict(spec), now, policy=policy)
            ledger.admitted(f"r{k}", spec)
            ledger.absorb(now)
        state.promote_due_retries(now)
        ledger.absorb(now)
        ledger.absorb(now, state.schedule(now))
        ledger.check()
        if not waiting and not ledger.in_flight and all(r.wf_status.terminal for r in state.by_run.values()):
            break
        if not ledger.in_flight:
            due = ledger.next_retry()
            if due is not None and due > now:
                now = due
            elif waiting:
                step += 1
            else:
                # Nothing runs, nothing waits for a backoff, no run arrives: every ready task must have started.
                quiet += 1
                assert quiet < 3, f"stalled: {[(r.run_id, Counter(r.detail)) for r in state.by_run.values()]}"
            continue
        quiet = 0
        pick, outcome, dt = sc.steps[step] if step < len(sc.steps) else (0, OK, 0.1)
        step += 1
        now += dt
        run_id, i, node = ledger.in_flight[pick % len(ledger.in_flight)]
        run = state.by_run[run_id]
        key = (run_id, run.dag.ids[i])
        if outcome == CANCEL:
            if not run.wf_status.terminal:
                before_cancel = list(run.detail)
                stopping = state.cancel(run, now)
                ledger.cancelled.add(run_id)
                ledger.absorb(now)
                # The running attempts are returned to be stopped; every unfinished task is cancelled.
                assert sorted(stopping) == sorted(j for r, j, _ in ledger.in_flight if r == run_id)
                assert run.detail == [s if s.terminal else S.CANCELLED for s in before_cancel]
                ledger.check()
            continue
        ledger.in_flight.remove((run_id, i, node))
        before = run.detail[i]
        if outcome == OK:
            state.succeeded(run, i, node, None, now)
            expected = S.SUCCEEDED
        else:
            counter = ledger.own_failures if outcome == FAIL else ledger.system_failures
            budget = run.specs[i].retries if outcome == FAIL else SYSTEM_RETRIES
            said = state.failed(run, i, node, "boom", now, system=outcome == LOST)
            if before == S.RUNNING:
                counter[key] += 1
                retry = counter[key] <= budget and run_id not in ledger.cancelled
                expected = S.RETRYING if retry else S.FAILED
                assert said == ("retrying" if retry else "failed")
            else:
                expected = before
                assert said == "ignored"
        if before != S.RUNNING:  # a late outcome of an attempt cancelled meanwhile changes nothing
            expected = before
        ledger.absorb(now)
        assert run.detail[i] == expected, f"{key}: {outcome} on a {before} task left it {run.detail[i]}"
        ledger.check()
    assert not ledger.in_flight
    assert (nodes.free_cpus, nodes.free_memory, nodes.free_gpus) == (nodes.cap_cpus, nodes.cap_memory, nodes.cap_gpus)
    return ledger.log


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_bookkeeping_keeps_its_invariants_after_every_step(sc):
    drive(sc)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_the_same_inputs_and_seed_give_the_same_decisions(sc):
    first = drive(sc)
    assert first, "nothing was recorded"
    assert drive(sc) == first
