"""Structured JSON-lines logging: every line parses as JSON and carries the run and task it is about."""

from __future__ import annotations

import io
import json
import logging

from orchestrator.store.logs import JsonFormatter, configure_json_logging, task_logger


def test_records_become_one_json_object_per_line_with_context():
    stream = io.StringIO()
    handler = configure_json_logging(logging.DEBUG, stream, logger="orchestrator.test_logs", service="api")
    try:
        log = logging.getLogger("orchestrator.test_logs.child")
        log.info("started %s", "t1", extra={"run_id": "r1", "task_id": "t1", "node": "n1"})
        task_logger(log, "r2", "t9").warning("slow", extra={"seconds": 12.5})
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("failed", extra={"run_id": "r3"})
        log.debug("no context")
    finally:
        logging.getLogger("orchestrator.test_logs").removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["level"], e["message"], e["run_id"], e["task_id"]) for e in lines] == [
        ("info", "started t1", "r1", "t1"),
        ("warning", "slow", "r2", "t9"),
        ("error", "failed", "r3", None),
        ("debug", "no context", None, None),
    ]
    assert lines[0]["node"] == "n1" and lines[1]["seconds"] == 12.5
    assert all(e["service"] == "api" and e["logger"] == "orchestrator.test_logs.child" for e in lines)
    assert "ValueError: bad value" in lines[2]["exc"]
    assert lines[0]["ts"].endswith("+00:00")


def test_values_that_are_not_json_are_written_as_their_repr():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.obj = object()
    assert json.loads(JsonFormatter().format(record))["obj"].startswith("<object object")
