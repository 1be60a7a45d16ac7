"""The ready queue every engine keeps: ready tasks ordered by the policy's keys (flat, or job first then task).

Each ordered list is a binary heap plus a sorted "front" of the entries a policy has already walked past, so
that pushing is a C-level heap push and walking the queue in order only sorts what is actually looked at.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from heapq import heapify, heappop, heappush, merge
from operator import itemgetter

from sortedcontainers import SortedList

from .interface import JobView, ReadyTask, SchedulingPolicy


_task_of = itemgetter(2)


class _OrderedTasks:
    """Entries (key, seq, task) in ascending order. Invariant: every entry of `front` <= every entry of `heap`."""

    __slots__ = ("heap", "front", "dead", "size")

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.front: list[tuple] = []
        self.dead: set[int] = set()  # seqs removed while still in the heap (skipped when popped)
        self.size = 0

    def push(self, entry: tuple) -> None:
        front = self.front
        if front and entry < front[-1]:
            insort(front, entry)
        else:
            heappush(self.heap, entry)
        self.size += 1

    def remove(self, entry: tuple) -> None:
        front = self.front
        i = bisect_left(front, entry)
        if i < len(front) and front[i][1] == entry[1]:
            del front[i]
        else:
            self.dead.add(entry[1])
        self.size -= 1

    def __iter__(self) -> Iterator[ReadyTask]:
        front, heap, dead = self.front, self.heap, self.dead
        # The walked part at C speed; it is not modified until that iteration is over.
        yield from map(_task_of, front)
        while heap:
            entry = heappop(heap)
            if entry[1] in dead:
                dead.discard(entry[1])
                continue
            front.append(entry)
            yield entry[2]

    def iter_entries(self) -> Iterator[tuple]:
        front, heap, dead = self.front, self.heap, self.dead
        yield from front
        while heap:
            entry = heappop(heap)
            if entry[1] in dead:
                dead.discard(entry[1])
                continue
            front.append(entry)
            yield entry

    def entries(self) -> list[tuple]:
        return list(self.front) + [e for e in self.heap if e[1] not in self.dead]

    def drop_where(self, predicate) -> list[ReadyTask]:
        keep, gone = [], []
        for e in self.entries():
            (gone if predicate(e[2]) else keep).append(e)
        keep.sort()
        self.front, self.heap, self.dead = [], keep, set()
        heapify(self.heap)
        self.size = len(keep)
        return [e[2] for e in gone]


class ReadyQueue:
    """Ready tasks in policy order. Push/remove O(log n); iteration in order is lazy.

    A flat queue keeps one ordered list per distinct cpu request, so that walking "the tasks that could fit
    in `max_cpus`" skips the larger ones without looking at them (merged back into one order when needed).
    """

    def __init__(self, policy: SchedulingPolicy):
        self.policy = policy
        self.by_job = policy.orders_jobs
        self._task_key = policy.task_key
        self._classes: dict[float, _OrderedTasks] = {}  # cpus request -> its ready tasks (flat queues)
        self._jobs: SortedList = SortedList()  # (job_key, job_id) of jobs with ready tasks
        self._job_key: dict[int, tuple] = {}
        self._job_tasks: dict[int, _OrderedTasks] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, task: ReadyTask, job: JobView) -> None:
        task.key = key = self._task_key(task, job)
        self._size += 1
        entry = (key, task.seq, task)
        if not self.by_job:
            cls = self._classes.get(task.cpus)
            if cls is None:
                cls = self._classes[task.cpus] = _OrderedTasks()
            front = cls.front
            if front and entry < front[-1]:
                insort(front, entry)
            else:
                heappush(cls.heap, entry)
            cls.size += 1
            return
        tasks = self._job_tasks.get(job.id)
        if tasks is None:
            tasks = self._job_tasks[job.id] = _OrderedTasks()
        if not tasks.size:
            job_key = (self.policy.job_key(job), job.id)
            self._job_key[job.id] = job_key
            self._jobs.add(job_key)
        tasks.push(entry)

    def remove(self, task: ReadyTask) -> None:
        self._size -= 1
        if not self.by_job:
            cls = self._classes[task.cpus]
            front = cls.front
            if front and front[0][2] is task:  # the usual case: the head was started
                del front[0]
                cls.size -= 1
            else:
                cls.remove((task.key, task.seq, task))
            return
        tasks = self._job_tasks[task.job]
        tasks.remove((task.key, task.seq, task))
        if not tasks.size:
            self._jobs.remove(self._job_key.pop(task.job))

    def update_job(self, job: JobView) -> None:
        """Re-key a job after it progressed (e.g. its remaining work shrank)."""
        if not self.by_job:
            return
        old = self._job_key.get(job.id)
        if old is None:
            return
        new = (self.policy.job_key(job), job.id)
        if new != old:
            self._jobs.remove(old)
            self._jobs.add(new)
            self._job_key[job.id] = new

    def drop_job(self, job_id: int) -> list[ReadyTask]:
        """Remove every ready task of a job (cancellation); return them."""
        if not self.by_job:
            gone = []
            for cls in self._classes.values():
                gone.extend(cls.drop_where(lambda t: t.job == job_id))
        else:
            tasks = self._job_tasks.pop(job_id, None)
            if tasks is None or not tasks.size:
                return []
            self._jobs.remove(self._job_key.pop(job_id))
            gone = [e[2] for e in tasks.entries()]
        self._size -= len(gone)
        return gone

    def iter(self, max_cpus: float | None = None) -> Iterator[ReadyTask]:
        """Ready tasks in queue order; with `max_cpus`, a flat queue may leave out tasks requesting more."""
        if self.by_job:
            return self._iter_by_job()
        if len(self._classes) == 1:
            for c in self._classes.values():
                return iter(c) if max_cpus is None or c.heap or c.front else iter(())
        if max_cpus is None:
            classes = [c for c in self._classes.values() if c.size]
        else:
            limit = max_cpus + 1e-9
            classes = [c for cpus, c in self._classes.items() if c.size and cpus <= limit]
        if len(classes) == 1:
            return iter(classes[0])
        if not classes:
            return iter(())
        return map(_task_of, merge(*[c.iter_entries() for c in classes]))

    def __iter__(self) -> Iterator[ReadyTask]:
        return self.iter()

    def _iter_by_job(self) -> Iterator[ReadyTask]:
        job_tasks = self._job_tasks
        for _, job_id in list(self._jobs):
            yield from job_tasks[job_id]
