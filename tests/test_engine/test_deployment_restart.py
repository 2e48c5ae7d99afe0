"""REWIND_DEPLOYMENT_ID: a restarted container continues from its own checkpoint.

The operator starts an engine with `--restore SAVEPOINT` and its workload hash in
REWIND_DEPLOYMENT_ID. If Kubernetes restarts that container (same arguments), the engine
must resume from the newest snapshot it wrote itself, not replay from the savepoint (which
would duplicate committed sink output); another deployment (a rollback) still starts from
the savepoint it names. Runs `rewind run` as a real process on post-analytics v1 and
compares committed file-sink output record for record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from rewind_engine.testing import free_port, read_jsonl

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]
TOTAL = 30000


def start(tmp: Path, log: Path, *args: str, deployment: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "REWIND_DEPLOYMENT_ID"}
    if deployment is not None:
        env["REWIND_DEPLOYMENT_ID"] = deployment
    with log.open("w") as out:  # the child keeps its fd
        return subprocess.Popen(
            [*REWIND, "run", str(V1), "--snapshots", f"file://{tmp}/snapshots", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )


def status(control: str, proc: Any) -> dict[str, Any] | None:
    assert proc.poll() is None, "the job exited early"
    try:
        with urllib.request.urlopen(f"http://{control}/status", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def as_multiset(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def savepoint_of_v1(tmp: Path) -> str:
    """Run v1 (unbounded, no deployment id) and stop it with a savepoint; its URI."""
    control = f"127.0.0.1:{free_port()}"
    proc = start(
        tmp, tmp / "v1.log", "--control", control, "--", "--out", str(tmp / "out-v1"),
        "--rate", "1000",
    )  # fmt: skip
    while (s := status(control, proc)) is None or s["records_out"] < 500:
        time.sleep(0.05)
    stopped = subprocess.run(
        [*REWIND, "stop", "--control", control], capture_output=True, text=True, check=False
    )
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait() == 0
    return stopped.stdout.strip().splitlines()[-1]


def test_a_restart_resumes_from_its_own_checkpoint_and_another_deployment_from_restore(
    tmp_path: Path,
) -> None:
    plain = subprocess.run(
        [*REWIND, "run", str(V1), "--snapshots", f"file://{tmp_path}/plain-snapshots", "--",
         "--out", str(tmp_path / "out-plain"), "--total", str(TOTAL)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    uninterrupted = read_jsonl(tmp_path / "out-plain" / "counts")
    assert len(uninterrupted) == TOTAL

    sp = savepoint_of_v1(tmp_path)
    before = read_jsonl(tmp_path / "out-v1" / "counts")
    control = f"127.0.0.1:{free_port()}"
    args = [
        "--restore", sp, "--control", control, "--checkpoint-interval", "0.2",
        "--", "--out", str(tmp_path / "out-x"), "--total", str(TOTAL), "--rate", "3000",
    ]  # fmt: skip

    # First container of deployment X: restores the savepoint, checkpoints, is killed.
    first = start(tmp_path, tmp_path / "x1.log", *args, deployment="X")
    while (s := status(control, first)) is None or s["last_checkpoint"] is None:
        time.sleep(0.05)
    assert s["restored_from"] == sp
    time.sleep(0.3)  # output staged after the checkpoint must not count twice
    first.send_signal(signal.SIGKILL)
    first.wait()
    committed_before_restart = len(read_jsonl(tmp_path / "out-x" / "counts"))
    assert committed_before_restart > 0  # the first container's checkpoints committed output

    # The restarted container (same arguments, same deployment) resumes from its own.
    second = start(tmp_path, tmp_path / "x2.log", *args, deployment="X")
    assert second.wait() == 0
    chosen = log_events(tmp_path / "x2.log", "restore_own_snapshot")
    assert len(chosen) == 1 and chosen[0]["deployment_id"] == "X"
    assert "/checkpoints/" in chosen[0]["uri"] and chosen[0]["instead_of"] == sp
    running = log_events(tmp_path / "x2.log", "job_running")
    assert running[0]["restored_from"] == chosen[0]["uri"]
    after = read_jsonl(tmp_path / "out-x" / "counts")
    assert as_multiset(before + after) == as_multiset(uninterrupted)  # no loss, no duplicate

    # Another deployment (a rollback to the same savepoint) ignores X's checkpoints.
    other_args = [a if a != str(tmp_path / "out-x") else str(tmp_path / "out-y") for a in args]
    other_args[other_args.index("--control") + 1] = f"127.0.0.1:{free_port()}"
    other = start(tmp_path, tmp_path / "y.log", *other_args, deployment="Y")
    assert other.wait() == 0
    assert not log_events(tmp_path / "y.log", "restore_own_snapshot")
    assert log_events(tmp_path / "y.log", "job_running")[0]["restored_from"] == sp
    rolled_back = read_jsonl(tmp_path / "out-y" / "counts")
    assert as_multiset(before + rolled_back) == as_multiset(uninterrupted)


def test_a_finished_engine_under_the_operator_exits_on_the_first_sigterm(tmp_path: Path) -> None:
    """Under the operator a job stopped with a savepoint stays up (FINISHED) until its pod
    is terminated. A SIGTERM that comes before anyone read the stop's result (the kubelet
    sends one, then SIGKILL after the grace period) must end it at once: it used to be
    swallowed, and the old version held the upgrade for the whole 60 s grace period."""
    control = f"127.0.0.1:{free_port()}"
    proc = start(
        tmp_path, tmp_path / "x.log", "--control", control, "--",
        "--out", str(tmp_path / "out"), "--rate", "1000",
        deployment="X",
    )  # fmt: skip
    while (s := status(control, proc)) is None or s["records_out"] < 200:
        time.sleep(0.05)
    request = urllib.request.Request(
        f"http://{control}/stop", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 202
    while (s := status(control, proc)) is None or s["state"] != "FINISHED":
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    # A hang detector, not a speed limit: the bug waited for a second signal forever.
    assert proc.wait(timeout=30) == 0
    [ended] = log_events(tmp_path / "x.log", "job_ended")
    assert ended["state"] == "FINISHED"


def test_restarts_of_one_deployment_share_one_checkpoint_history_and_retention(
    tmp_path: Path,
) -> None:
    """Each restart used to write under a new random job id, and retention counted per
    job id, so a crash-looping job piled up checkpoint folders without bound. Now the
    deployment is the job id: one folder, numbering carried on, `--checkpoints-retained`
    bounding the whole history."""
    control = f"127.0.0.1:{free_port()}"
    args = [
        "--control", control, "--checkpoint-interval", "0.1", "--checkpoints-retained", "2",
        "--", "--out", str(tmp_path / "out"), "--rate", "2000",
    ]  # fmt: skip
    checkpoints = tmp_path / "snapshots" / "checkpoints"
    seen: list[int] = []
    for attempt in range(3):
        proc = start(tmp_path, tmp_path / f"d{attempt}.log", *args, deployment="D")
        while (s := status(control, proc)) is None or (
            s["last_checkpoint"] is None
            or int(s["last_checkpoint"]["id"][4:]) < max(seen, default=0) + 3
        ):
            time.sleep(0.05)
        assert s["job_id"] == "D"
        seen.append(int(s["last_checkpoint"]["id"][4:]))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name for p in checkpoints.iterdir()] == ["D"]  # one history
    assert seen == sorted(seen) and len(set(seen)) == 3  # numbering carries on
    kept = [p for p in (checkpoints / "D").iterdir() if (p / "manifest.json").exists()]
    # Retention bounds it: 2 kept (a third may complete between prune and the kill).
    assert 2 <= len(kept) <= 3, sorted(p.name for p in kept)
    assert f"chk-{seen[-1]}" in {p.name for p in kept}
