"""Submit a workflow over the HTTP API and follow its events until it ends (resuming the stream if the
connection drops), then print its tasks.

    orchestrator keys create me --role operator        # prints KEY
    orchestrator serve &                               # the API on 127.0.0.1:8000
    ORCHESTRATOR_API_KEY=KEY python examples/api_client.py examples/hello.yaml
"""

from __future__ import annotations

import json
import os
import sys

import httpx

URL = os.environ.get("ORCHESTRATOR_API_URL", "http://127.0.0.1:8000")


def main(path: str) -> int:
    headers = {"Authorization": f"Bearer {os.environ['ORCHESTRATOR_API_KEY']}"}
    with httpx.Client(base_url=URL, headers=headers, timeout=60) as client:
        kind = "application/yaml" if path.endswith((".yaml", ".yml")) else "application/json"
        r = client.post("/api/v1/workflows", content=open(path, "rb").read(), headers={"Content-Type": kind})
        if r.status_code != 201:
            print(f"refused ({r.status_code}): {r.json()['detail']}", file=sys.stderr)
            return 1
        run_id = r.json()["run_id"]
        print(f"submitted {run_id}")
        last_id, ended = None, False
        while not ended:  # one stream; after a dropped connection, resume after the last event seen
            try:
                resume = {"Last-Event-ID": last_id} if last_id else {}
                with client.stream("GET", f"/api/v1/workflows/{run_id}/events", headers=resume,
                                   timeout=httpx.Timeout(60, read=None)) as stream:
                    event = {}
                    for line in stream.iter_lines():
                        if line:
                            field, _, value = line.partition(": ")
                            event[field] = value
                            continue
                        if event.get("id"):
                            last_id = event["id"]
                            data = json.loads(event["data"])
                            print(f"{event['event']:<22} {data.get('task_id') or ''}")
                        if event.get("event") == "end":
                            ended = True
                        event = {}
            except httpx.TransportError as exc:
                print(f"stream interrupted ({exc}); resuming after event {last_id}", file=sys.stderr)
        run = client.get(f"/api/v1/workflows/{run_id}").json()
        print(f"{run_id}: {run['status']}")
        for t in run["tasks"]:
            print(f"  {t['task_id']:<10} {t['status']:<10} node {t['node']}")
        return 0 if run["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "examples/hello.yaml"))
