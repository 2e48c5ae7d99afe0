"""The `rewind` command without traps: `run` serves its control API where `status` and
`stop` look by default, says where on its first log line, fails clearly when the port is
taken, and every option says what it does and what its default is.

The end-to-end test runs real `rewind` processes with no address flags at all: the
address comes from the one default both sides share ($REWIND_CONTROL, else
127.0.0.1:8081; the test picks a free port through the variable because other jobs may
run on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import cli
from rewind_engine.testing import free_port

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]


def rewind(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REWIND, *args], capture_output=True, text=True, env=env, check=False)


def first_json_line(path: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    while True:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                return entry
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)


def test_run_then_status_and_stop_with_no_address_flags(tmp_path: Path) -> None:
    env = {**os.environ, "REWIND_CONTROL": f"127.0.0.1:{free_port()}"}
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*REWIND, "run", str(V1), "--snapshots", f"file://{tmp_path}/snap",
             "--checkpoint-interval", "0.5", "--", "--out", str(tmp_path / "out"),
             "--rate", "2000"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        first = first_json_line(log, proc)
        assert first["event"] == "control_api", first
        assert first["address"] == env["REWIND_CONTROL"]
        while True:
            done = rewind("status", env=env)
            if done.returncode == 0:
                status = json.loads(done.stdout)
                rates = status["steps"]["views-and-clicks"]["records_in_per_s"]
                if rates and status["last_checkpoint_age_s"] is not None:
                    break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert status["state"] == "RUNNING"
        assert rates > 0
        assert status["last_checkpoint_age_s"] >= 0
        stopped = rewind("stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        uri = stopped.stdout.strip().splitlines()[-1]
        assert uri.startswith(f"file://{tmp_path}/snap/savepoints/"), uri
        assert proc.wait() == 0
        # inspect: the kind of state and the keys per step, one interval notation.
        described = json.loads(rewind("inspect", uri, "--json", env=env).stdout)
        counts = described["steps"]["views-and-clicks"]
        assert counts["kind"] == "aggregate" and counts["keys"] > 0
        assert described["steps"]["post-events"]["kind"] == "source"
        start, end = counts["subtasks"][0]["key_group_range"]
        text = rewind("inspect", uri, env=env).stdout
        assert f"views-and-clicks  aggregate, parallelism 1, {counts['keys']} keys" in text
        assert f"key groups [{start}, {end})" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_fails_clearly_when_the_control_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**os.environ, "REWIND_CONTROL": address}
        done = rewind(
            "run", str(V1), "--snapshots", f"file://{tmp_path}/snap", "--", "--total", "10",
            "--out", str(tmp_path / "out"), env=env,
        )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot serve the control API at {address}:"), last
    assert "in use" in last and "--control HOST:PORT" in last and "--control none" in last


def test_run_and_the_job_commands_share_one_default_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REWIND_CONTROL")
    parser = cli.build_parser()
    run = parser.parse_args(["run", "flow.py"])
    assert cli.control_address(run) == cli.DEFAULT_CONTROL == "127.0.0.1:8081"
    for command in ("status", "stop", "savepoint", "cancel"):
        assert parser.parse_args([command]).control == cli.DEFAULT_CONTROL
    assert cli.control_address(parser.parse_args(["run", "f.py", "--control", "none"])) is None
    # A worker other than 0 serves nothing unless told (worker 0 serves the job's API).
    assert cli.control_address(parser.parse_args(["run", "f.py", "--worker-index", "1"])) is None


def test_every_option_has_help_that_states_its_default() -> None:
    for name, sub in cli.subcommand_parsers(cli.build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            where = f"rewind {name} {action.option_strings[0]}"
            assert action.help, f"{where} has no help text"
            if not isinstance(action, argparse._StoreTrueAction):
                assert "default" in action.help, f"{where}: help does not state the default"
    run = " ".join(cli.subcommand_parsers(cli.build_parser())["run"].format_help().split())
    assert "(default: 128)" in run and "(default: 10)" in run
