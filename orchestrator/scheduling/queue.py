"""The ready queue every engine keeps: ready tasks ordered by the policy's keys (flat, or job first then task)."""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

from .interface import JobView, ReadyTask, SchedulingPolicy


class ReadyQueue:
    """Ready tasks in policy order. Insert/remove O(log n); iteration in order is lazy."""

    def __init__(self, policy: SchedulingPolicy):
        self.policy = policy
        self.by_job = policy.orders_jobs
        self._flat: SortedList = SortedList()
        self._jobs: SortedList = SortedList()  # (job_key, job_id) of jobs with ready tasks
        self._job_key: dict[int, tuple] = {}
        self._job_tasks: dict[int, SortedList] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, task: ReadyTask, job: JobView) -> None:
        task.key = self.policy.task_key(task, job)
        entry = (task.key, task.seq, task)
        self._size += 1
        if not self.by_job:
            self._flat.add(entry)
            return
        tasks = self._job_tasks.get(job.id)
        if tasks is None:
            tasks = self._job_tasks[job.id] = SortedList()
        if not tasks:
            key = (self.policy.job_key(job), job.id)
            self._job_key[job.id] = key
            self._jobs.add(key)
        tasks.add(entry)

    def remove(self, task: ReadyTask) -> None:
        entry = (task.key, task.seq, task)
        self._size -= 1
        if not self.by_job:
            self._flat.remove(entry)
            return
        tasks = self._job_tasks[task.job]
        tasks.remove(entry)
        if not tasks:
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
            mine = [e for e in self._flat if e[2].job == job_id]
            for e in mine:
                self._flat.remove(e)
            self._size -= len(mine)
            return [e[2] for e in mine]
        tasks = self._job_tasks.pop(job_id, None)
        if not tasks:
            return []
        self._jobs.remove(self._job_key.pop(job_id))
        self._size -= len(tasks)
        return [e[2] for e in tasks]

    def __iter__(self) -> Iterator[ReadyTask]:
        if not self.by_job:
            for entry in self._flat:
                yield entry[2]
            return
        job_tasks = self._job_tasks
        for _, job_id in self._jobs:
            for entry in job_tasks[job_id]:
                yield entry[2]
