"""The ready queue against a plain sorted list: pushes, removals and re-keyings (a task removed and pushed again
under a new key, as when its prediction or priority changes) in any order keep the queue's order exact."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduling.interface import ReadyTask, SchedulingPolicy
from orchestrator.scheduling.queue import ReadyQueue


class ByPredicted(SchedulingPolicy):
    name = "by-predicted"

    def __init__(self, orders_jobs: bool):
        self.orders_jobs = orders_jobs

    def task_key(self, task, job):
        return (task.predicted,)


ops = st.lists(st.tuples(st.sampled_from(["push", "remove", "rekey", "walk"]), st.integers(0, 10**6),
                         st.integers(0, 50)), min_size=1, max_size=400)


@settings(max_examples=200, deadline=None)
@given(ops=ops, orders_jobs=st.booleans())
def test_queue_order_matches_a_sorted_list(ops, orders_jobs):
    queue = ReadyQueue(ByPredicted(orders_jobs))
    job = SimpleNamespace(id=0, priority=0, arrival=0.0)
    live: dict[int, ReadyTask] = {}
    seq = 0
    for op, pick, value in ops:
        if op == "push" or not live:
            seq += 1
            t = ReadyTask(0, seq, 1.0, 0.0, 0.0, float(value), 0.0, seq)
            queue.push(t, job)
            live[seq] = t
        elif op == "remove":
            t = live.pop(sorted(live)[pick % len(live)])
            queue.remove(t)
        elif op == "rekey":
            t = live[sorted(live)[pick % len(live)]]
            queue.remove(t)
            t.predicted = float(value)
            queue.push(t, job)
        else:
            list(queue)  # a walk moves heap entries to the front
        expected = sorted(live.values(), key=lambda t: (t.predicted, t.seq))
        assert [t.seq for t in queue] == [t.seq for t in expected]
        assert len(queue) == len(live)


def test_a_rekeyed_task_moves_in_a_long_queue():
    """3,000 ready tasks, the last ones in the heap part of the queue: a task re-keyed within the heap comes
    where its new key says, once."""
    queue = ReadyQueue(ByPredicted(False))
    job = SimpleNamespace(id=0, priority=0, arrival=0.0)
    tasks = [ReadyTask(0, i, 1.0, 0.0, 0.0, float(i), 0.0, i) for i in range(3000)]
    for t in tasks:
        queue.push(t, job)
    moved = tasks[2500]
    queue.remove(moved)
    moved.predicted = 2100.5
    queue.push(moved, job)
    order = [t.task for t in queue]
    assert order.count(2500) == 1 and len(order) == 3000
    assert order.index(2500) == order.index(2100) + 1
