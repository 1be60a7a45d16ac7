"""The same ETL workflow through the Python API: `@task` and `WorkflowBuilder`.

    python -m examples.python_api

Build and run the workflow under `if __name__ == "__main__":` (as below): Ray workers import the module that defines
the task functions, and a run at the top level would be submitted again by each of them (`run()` refuses that).
"""

from __future__ import annotations

from orchestrator.runtime import WorkflowBuilder, task
from orchestrator.runtime.client import connect_ray

from . import etl

extract = task(cpus=1, memory="256MiB", retries=2)(etl.extract)
clean = task(etl.clean)
summarise = task(timeout=60)(etl.summarise)
report = task(etl.report)


def build() -> WorkflowBuilder:
    with WorkflowBuilder("etl-python", policy="srpt-cp") as wf:
        shards = [clean(extract(i)) for i in range(3)]
        report(summarise(*shards))
    return wf


if __name__ == "__main__":
    connect_ray()
    result = build().run()
    print(result["status"], result["counts"])
