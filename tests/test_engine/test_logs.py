"""Under `--log-format json` every stderr line is one JSON object, whoever logged it: the
engine's structlog events and the stdlib loggers of libraries (the Kafka connector,
librdkafka through it, boto)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
import structlog
from rewind_engine import logs

logs.configure(json=True)
structlog.get_logger("rewind.job").info("job_running", job_id="j1")
logging.getLogger("rewind.kafka.source").warning("reading %s from offset %d", "t:0", 5)
logging.getLogger("rewind.kafka.librdkafka").info("FAIL [thrd:x]: broker down")
logging.getLogger("botocore.credentials").info("too chatty: dropped below WARNING")
try:
    raise KeyError("kind")
except KeyError:
    logging.getLogger("rewind.kafka.sink").exception("no commit marker")
"""


def test_every_line_is_json_with_its_level_and_logger() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["event"], e["level"], e.get("logger")) for e in lines] == [
        ("job_running", "info", None),
        ("reading t:0 from offset 5", "warning", "rewind.kafka.source"),
        ("FAIL [thrd:x]: broker down", "info", "rewind.kafka.librdkafka"),
        ("no commit marker", "error", "rewind.kafka.sink"),
    ]
    assert all("timestamp" in e for e in lines) and lines[0]["job_id"] == "j1"
    assert "KeyError" in json.dumps(lines[3]["exception"])
