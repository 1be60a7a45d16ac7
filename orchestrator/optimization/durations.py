"""Task duration distributions for what-if analysis: a log-normal per task, from its predicted (or declared) mean
and the coefficient of variation observed for its category.

What a scheduler or an analysis may know before a task runs is a prediction, never the task's own actual
runtime: `TaskDurations.mean` is the predicted mean (the task's declared `duration` when the workflow states one,
else the category's history), `cv` the spread of that category's observed runtimes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidError
from ..model import Workflow

CV_MIN, CV_MAX, CV_DEFAULT = 0.3, 1.0, 0.5


class AnalysisInputError(InvalidError):
    """A workflow or cluster the analysis cannot answer for, with the reason in words."""


@dataclass(frozen=True)
class TaskDurations:
    """Per task: the mean (seconds) and coefficient of variation of a log-normal duration, and where each mean
    came from (`declared`, `history`, `family-prior`)."""

    mean: np.ndarray
    cv: np.ndarray
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cv = np.asarray(self.cv, dtype=np.float64)
        if mean.shape != cv.shape or mean.ndim != 1:
            raise AnalysisInputError(f"durations: mean {mean.shape} and cv {cv.shape} must be equal 1-d shapes")
        if not (np.all(np.isfinite(mean)) and np.all(mean >= 0)):
            raise AnalysisInputError("durations: every mean must be a finite number of seconds >= 0")
        if not (np.all(np.isfinite(cv)) and np.all(cv >= 0)):
            raise AnalysisInputError("durations: every coefficient of variation must be finite and >= 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cv", cv)

    @property
    def n(self) -> int:
        return len(self.mean)

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.log1p(self.cv ** 2))

    @property
    def mu(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.mean) - 0.5 * self.sigma ** 2

    def normals(self, samples: int, seed: int) -> np.ndarray:
        """The standard normal draws behind `sample` (common random numbers: reuse them for every variant)."""
        return np.random.default_rng(seed).standard_normal((samples, self.n))

    def sample(self, samples: int, seed: int = 0, z: np.ndarray | None = None) -> np.ndarray:
        """`samples` x n durations; a zero mean gives zero. Deterministic for a seed (or for given normals)."""
        if z is None:
            z = self.normals(samples, seed)
        with np.errstate(under="ignore"):
            out = np.exp(self.mu + self.sigma * z)
        out[:, self.mean <= 0] = 0.0
        return out

    def scaled(self, factor: np.ndarray | float) -> "TaskDurations":
        return TaskDurations(self.mean * factor, self.cv, self.source)

    def quantile(self, q: float) -> np.ndarray:
        from scipy.stats import norm

        out = np.exp(self.mu + self.sigma * norm.ppf(q))
        out[self.mean <= 0] = 0.0
        return out


def category_cv(runtimes_by_category: Mapping[str, Iterable[float]], lo: float = CV_MIN,
                hi: float = CV_MAX) -> dict[str, float]:
    """The coefficient of variation of each category's observed runtimes, clipped to [lo, hi] (fewer than three
    observations: the default)."""
    out = {}
    for cat, values in runtimes_by_category.items():
        v = np.asarray([x for x in values if x is not None and x > 0], dtype=np.float64)
        if len(v) < 3 or v.mean() <= 0:
            out[cat] = CV_DEFAULT
        else:
            out[cat] = float(np.clip(v.std() / v.mean(), lo, hi))
    return out


class DurationHistory:
    """Observed runtimes per (family, category), from traces or the store: what the analysis knows before a run."""

    def __init__(self) -> None:
        self._by_cat: dict[str, list[float]] = defaultdict(list)
        self._by_family: dict[str, list[float]] = defaultdict(list)

    def add_workflow(self, wf: Workflow) -> None:
        for t in wf.tasks:
            if t.duration is not None and t.duration > 0:
                self._by_cat[_cat(t)].append(float(t.duration))
                self._by_family[wf.family or "unknown"].append(float(t.duration))

    @classmethod
    def from_workflows(cls, workflows: Iterable[Workflow]) -> "DurationHistory":
        h = cls()
        for wf in workflows:
            h.add_workflow(wf)
        return h

    def categories(self) -> set[str]:
        return set(self._by_cat)

    def mean_of(self, category: str) -> float | None:
        v = self._by_cat.get(category)
        return float(np.median(v)) if v else None

    def cv(self) -> dict[str, float]:
        return category_cv(self._by_cat)


def _cat(task) -> str:
    return task.category or task.id


def durations_for(wf: Workflow, history: DurationHistory | None = None, *,
                  cv: Mapping[str, float] | None = None, use_declared: bool = True) -> TaskDurations:
    """The duration distributions the analysis assumes for `wf`: each task's declared `duration` as its mean when
    given (`use_declared`), else the median of its category in `history`; the spread per category from `cv`, else
    from the history, else from the workflow's own tasks of that category, clipped to [0.3, 1.0].

    A task with no declared duration and no history of its category cannot be analysed: the error names the
    categories that lack one.
    """
    cvs = dict(history.cv()) if history is not None else {}
    own = category_cv({c: [t.duration for t in wf.tasks if _cat(t) == c]
                       for c in {_cat(t) for t in wf.tasks}})
    for c, v in own.items():
        cvs.setdefault(c, v)
    if cv:
        cvs.update(cv)
    mean = np.zeros(len(wf.tasks))
    spread = np.zeros(len(wf.tasks))
    source: list[str] = []
    missing: dict[str, int] = defaultdict(int)
    for i, t in enumerate(wf.tasks):
        c = _cat(t)
        spread[i] = cvs.get(c, CV_DEFAULT)
        if use_declared and t.duration is not None:
            mean[i] = t.duration
            source.append("declared")
            continue
        m = history.mean_of(c) if history is not None else None
        if m is None:
            missing[c] += 1
            source.append("none")
            continue
        mean[i] = m
        source.append("history")
    if missing:
        names = ", ".join(f"{c} ({k} task{'s' if k > 1 else ''})" for c, k in sorted(missing.items())[:8])
        raise AnalysisInputError(
            f"workflow '{wf.name}': no runtime is known for {sum(missing.values())} task(s) of categories {names}: "
            "give tasks a `duration`, or pass a history that has run these categories (--history DIR)")
    return TaskDurations(mean, spread, tuple(source))


__all__ = ["TaskDurations", "DurationHistory", "durations_for", "category_cv", "AnalysisInputError",
           "CV_MIN", "CV_MAX", "CV_DEFAULT"]
