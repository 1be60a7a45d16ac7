"""The ready queue every engine keeps: ready tasks ordered by the policy's keys (flat, or job first then task).

Each ordered list is a sorted "front" (the entries a policy has walked past, and entries pushed in order)
plus a binary heap of the rest, so that pushing is an append or a C-level heap push and walking the queue in
order only sorts what is actually looked at.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from heapq import heapify, heappop, heappush, merge
from operator import itemgetter

from sortedcontainers import SortedList

from .interface import EPS, JobView, NodeView, ReadyTask, SchedulingPolicy


_task_of = itemgetter(2)
_cpus_of = itemgetter(0)

# A push that sorts after everything (e.g. FIFO: keys in ready order) is appended to the front while the heap is
# empty and the front shorter than this; the front never grows past _FRONT_SPILL (its upper half then goes back
# to the heap), which bounds the cost of deleting from it.
_FRONT_APPEND = 2048
_FRONT_SPILL = 4096


class _OrderedTasks:
    """Entries (key, seq, task) in ascending order. Invariant: every entry of `front` <= every entry of `heap`.

    An entry removed while in the heap stays there, marked dead by its seq and its key object, and is skipped
    when popped: a task removed and pushed again under a new key (re-keyed) has two entries of one seq in the
    heap, and only the one with the old key is dead."""

    __slots__ = ("heap", "front", "dead", "size")

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.front: list[tuple] = []
        self.dead: dict[int, list] = {}  # seq -> the keys of its entries removed while still in the heap
        self.size = 0

    def push(self, entry: tuple) -> None:
        front = self.front
        if front and entry < front[-1]:
            insort(front, entry)
            if len(front) > _FRONT_SPILL:
                self.spill()
        elif not self.heap and len(front) < _FRONT_APPEND:
            front.append(entry)
        else:
            heappush(self.heap, entry)
        self.size += 1

    def spill(self) -> None:
        """Move the upper half of the front to the heap (keeps deletions from the front cheap)."""
        front, heap = self.front, self.heap
        half = len(front) // 2
        heap.extend(front[half:])
        del front[half:]
        heapify(heap)

    def remove(self, entry: tuple) -> None:
        front = self.front
        i = bisect_left(front, entry)
        if i < len(front) and front[i][1] == entry[1]:
            del front[i]
        else:
            self.dead.setdefault(entry[1], []).append(entry[0])
        self.size -= 1

    def __iter__(self) -> Iterator[ReadyTask]:
        front, heap, dead = self.front, self.heap, self.dead
        # The walked part at C speed; it is not modified until that iteration is over.
        yield from map(_task_of, front)
        while heap:
            entry = heappop(heap)
            if dead and _take_dead(dead, entry):
                continue
            front.append(entry)
            yield entry[2]

    def iter_entries(self) -> Iterator[tuple]:
        front, heap, dead = self.front, self.heap, self.dead
        yield from front
        while heap:
            entry = heappop(heap)
            if dead and _take_dead(dead, entry):
                continue
            front.append(entry)
            yield entry

    def entries(self) -> list[tuple]:
        dead = {seq: list(keys) for seq, keys in self.dead.items()}
        return list(self.front) + [e for e in self.heap if not (dead and _take_dead(dead, e))]

    def drop_where(self, predicate) -> list[ReadyTask]:
        keep, gone = [], []
        for e in self.entries():
            (gone if predicate(e[2]) else keep).append(e)
        keep.sort()
        self.front, self.heap, self.dead = [], keep, {}
        heapify(self.heap)
        self.size = len(keep)
        return [e[2] for e in gone]


def _take_dead(dead: dict[int, list], entry: tuple) -> bool:
    """True (and the mark consumed) if `entry` was removed: its seq is marked with its very key object (a key
    equal but not identical is of a later push of the task: live)."""
    keys = dead.get(entry[1])
    if keys is None:
        return False
    key = entry[0]
    for j, k in enumerate(keys):
        if k is key:
            del keys[j]
            if not keys:
                del dead[entry[1]]
            return True
    return False


def _next_entry(tasks: _OrderedTasks) -> tuple | None:
    """Move the least entry of the heap to the end of the front and return it; None when the heap is empty."""
    heap, dead = tasks.heap, tasks.dead
    while heap:
        entry = heappop(heap)
        if dead and _take_dead(dead, entry):
            continue
        tasks.front.append(entry)
        return entry
    return None


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
        self._by_cpus: list[tuple[float, _OrderedTasks]] = []  # the same, sorted by cpus request
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
                self._by_cpus = sorted(self._classes.items(), key=_cpus_of)
            front = cls.front  # `_OrderedTasks.push`, inlined
            if front and entry < front[-1]:
                insort(front, entry)
                if len(front) > _FRONT_SPILL:
                    cls.spill()
            elif not cls.heap and len(front) < _FRONT_APPEND:
                front.append(entry)
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

    def iter(self, max_cpus: float | None = None, max_predicted: float | None = None) -> Iterator[ReadyTask]:
        """Ready tasks in queue order; with `max_cpus`, a flat queue may leave out tasks requesting more; with
        `max_predicted`, only tasks predicted to take at most that long."""
        if max_predicted is not None:
            return (t for t in self.iter(max_cpus) if t.predicted <= max_predicted)
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

    def walk(self, nodes: NodeView, free_c: list[float], free_m: list[float], free_g: list[float], most: float,
             scan_limit: int, place, take: bool,
             max_predicted: float | None = None) -> tuple[list[tuple[ReadyTask, int]], float]:
        """List scheduling, the one implementation: walk the ready tasks in queue order and start each on the
        node `place` picks (None: first fit, inline), reserving it on `free_c/free_m/free_g`, until `scan_limit`
        tasks fit nowhere or no cpu is left. `most` is `max(free_c)`; tasks of more cpus than that are passed
        over, and a flat queue does not even look at cpu classes above it. With `max_predicted`, tasks predicted
        to take longer are not offered (passed over without counting). Returns the (task, node) pairs in order
        and the new `max(free_c)`.

        The default `SchedulingPolicy.schedule` walks with `take=False` on copies of the free resources; the
        simulator's fast path with `take=True` on its live ones, which also removes what starts from the queue.
        """
        started: list[tuple[ReadyTask, int]] = []
        limit = most + EPS  # a task needing more cpus than this fits nowhere
        two_eps = 2 * EPS
        if limit < two_eps:
            return started, most
        # Segments walked one after the other: a job's tasks, job by job (a by-job queue); the cpu classes that
        # can fit, merged into one order (a flat queue). A segment is one ordered list, or a list of them to merge.
        if self.by_job:
            job_tasks = self._job_tasks
            segments = [(job_tasks[job_id], job_id) for _, job_id in self._jobs]
        else:
            cutoff = limit + 1e-9
            classes = []
            for cpus, tasks in self._by_cpus:
                if cpus > cutoff:
                    break
                if tasks.size:
                    classes.append(tasks)
            segments = ((classes if len(classes) > 1 else classes[0], None),) if classes else ()
        node_range = range(len(free_c))
        misses = 0
        stop = False
        for segment, job_id in segments:
            merged = type(segment) is list
            if merged:  # `front` stays empty: every step takes the merged branch below
                sources = segment
                pos = [0] * len(sources)
                heads = [s.front[0] if s.front else _next_entry(s) for s in sources]
                b = -1
                front = ()
            else:
                src = segment
                front = src.front
            i = 0
            while True:
                if i < len(front):
                    task = front[i][2]
                elif merged:  # the least head of the lists
                    if b >= 0:
                        f = src.front
                        pos[b] = i
                        heads[b] = f[i] if i < len(f) else _next_entry(src)
                    b, entry = -1, None
                    for j, e in enumerate(heads):
                        if e is not None and (entry is None or e < entry):
                            b, entry = j, e
                    if b < 0:
                        break
                    src = sources[b]
                    i = pos[b]
                    task = entry[2]
                elif not src.heap:
                    break
                else:  # walked past everything sorted so far: the next entry comes off the heap
                    entry = _next_entry(src)
                    if entry is None:
                        break
                    task = entry[2]
                if max_predicted is not None and task.predicted > max_predicted:
                    i += 1  # not offered
                    continue
                node = None
                if task.cpus <= limit:
                    if place is None:  # first fit, inline
                        c, m, g = task.cpus - EPS, task.memory - EPS, task.gpus - EPS
                        allowed = task.allowed
                        for n in node_range:
                            if free_c[n] >= c and free_m[n] >= m and free_g[n] >= g and (
                                    allowed is None or n in allowed):
                                node = n
                                break
                    else:
                        node = place(task, nodes, free_c, free_m, free_g)
                if node is None:
                    i += 1
                    misses += 1
                    if misses >= scan_limit:
                        stop = True
                        break
                    continue
                if take:
                    del src.front[i]
                    src.size -= 1
                else:
                    i += 1
                old = free_c[node]
                free_c[node] = left = old - task.cpus
                free_m[node] -= task.memory
                free_g[node] -= task.gpus
                started.append((task, node))
                if old >= most or left > most:  # the node with the most free shrank (or a negative request)
                    most = max(free_c)
                    limit = most + EPS
                    if limit < two_eps:  # no cpu left anywhere (a zero-cpu task waits for the next round)
                        stop = True
                        break
            if take and job_id is not None and not src.size:
                self._jobs.remove(self._job_key.pop(job_id))
            if stop:
                break
        if take:
            self._size -= len(started)
        return started, most

    def _iter_by_job(self) -> Iterator[ReadyTask]:
        job_tasks = self._job_tasks
        for _, job_id in list(self._jobs):
            yield from job_tasks[job_id]

    def job_heads(self, per_job: int, max_jobs: int, max_predicted: float | None = None
                  ) -> list[tuple[int, list[ReadyTask]]]:
        """The first `per_job` ready tasks of each of the first `max_jobs` jobs, in queue order (a by-job queue
        only): what a policy that chooses among the heads of the jobs looks at, without walking every ready task.
        With `max_predicted`, only tasks predicted to take at most that long."""
        if not self.by_job:
            raise TypeError("job_heads needs a queue ordered by job (a policy with orders_jobs = True)")
        out: list[tuple[int, list[ReadyTask]]] = []
        job_tasks = self._job_tasks
        for _, job_id in self._jobs:
            heads: list[ReadyTask] = []
            for task in job_tasks[job_id]:
                if max_predicted is not None and task.predicted > max_predicted:
                    continue
                heads.append(task)
                if len(heads) >= per_job:
                    break
            if heads:
                out.append((job_id, heads))
                if len(out) >= max_jobs:
                    break
        return out
