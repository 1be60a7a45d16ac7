"""DAG analysis on arrays agrees with a plain per-node reference on random DAGs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag import analyse, dag_arrays, levels, width_over_time
from orchestrator.model import Workflow


@st.composite
def random_dags(draw, max_tasks=40):
    n = draw(st.integers(1, max_tasks))
    tasks = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=min(i, 4), unique=True)) if i else []
        duration = draw(st.floats(0.0, 100.0, allow_nan=False))
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents], "duration": duration})
    # Shuffle so that the file order is not already topological.
    perm = draw(st.permutations(range(n)))
    return Workflow(name="r", tasks=[tasks[k] for k in perm])


def _reference(wf: Workflow):
    by_id = {t.id: t for t in wf.tasks}
    top, bottom = {}, {}

    def t_level(i):
        if i not in top:
            top[i] = max((t_level(p) + by_id[p].duration for p in by_id[i].depends_on), default=0.0)
        return top[i]

    children = {t.id: [] for t in wf.tasks}
    for t in wf.tasks:
        for p in t.depends_on:
            children[p].append(t.id)

    def b_level(i):
        if i not in bottom:
            bottom[i] = by_id[i].duration + max((b_level(c) for c in children[i]), default=0.0)
        return bottom[i]

    return {i: t_level(i) for i in by_id}, {i: b_level(i) for i in by_id}


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_analysis_matches_reference(wf):
    dag = dag_arrays(wf)
    a = analyse(dag)
    top, bottom = _reference(wf)
    for i, tid in enumerate(dag.ids):
        assert np.isclose(a.top_level[i], top[tid])
        assert np.isclose(a.bottom_level[i], bottom[tid])
    # Topological order: every edge goes forward.
    pos = np.empty(dag.n, dtype=int)
    pos[a.order] = np.arange(dag.n)
    assert np.all(pos[dag.src] < pos[dag.dst])
    assert np.all(a.level[dag.dst] > a.level[dag.src])
    # The critical path is a real path from a source to a sink whose length is the critical path length.
    cp = a.critical_path
    assert dag.in_degree[cp[0]] == 0 and dag.out_degree[cp[-1]] == 0
    for u, v in zip(cp[:-1], cp[1:]):
        assert v in dag.children_of(u)
    assert np.isclose(dag.duration[cp].sum(), a.critical_path_length)
    assert np.all(a.slack >= -1e-9) and np.all(a.slack[cp] == 0)


@settings(max_examples=50, deadline=None)
@given(random_dags())
def test_width_over_time_counts_running_tasks(wf):
    dag = dag_arrays(wf)
    a = analyse(dag)
    times, width = width_over_time(dag, a)
    assert width.min() >= 0 and width[-1] == 0
    end = a.top_level + dag.duration  # the same floating-point sums as the function's
    for k in range(len(times) - 1):
        # width[k] holds on [times[k], times[k+1]): count at its left end (a midpoint is not always between two
        # adjacent floats, e.g. 99.99999999999999 and 100.0).
        running = np.sum((a.top_level <= times[k]) & (end > times[k]))
        assert running == width[k]


def test_levels_of_a_chain_and_a_fan():
    wf = Workflow(name="x", tasks=[{"id": "a"}, {"id": "b", "depends_on": ["a"]}, {"id": "c", "depends_on": ["a"]},
                                   {"id": "d", "depends_on": ["b", "c"]}])
    order, level = levels(dag_arrays(wf))
    assert level.tolist() == [0, 1, 1, 2]
    assert order[0] == 0 and order[-1] == 3
