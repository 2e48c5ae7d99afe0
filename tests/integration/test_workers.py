"""One job as several `rewind run --workers N` processes, exchanging through real Kafka.

The post-analytics v1 flow (examples/post_analytics) counts events per (post, kind);
every output row is (post, kind, running count), one per event, so exactly-once has a
sharp meaning: the multiset of committed rows must equal a 1-worker run's, row for row
(a lost or doubled event changes some key's sequence of counts). Timing only decides
where a job is interrupted; every assertion is on exact results.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from rewind_engine.testing import free_port, read_jsonl

from .test_kafka_outage import Broker, broker  # noqa: F401 - the fixture (a private broker)

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]
TOTAL = 20000


def start_workers(
    tmp: Path,
    servers: str,
    workers: int,
    job: str,
    *args: str,
    control: str | None = None,
    flow_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(workers):
        extra = ["--control", control] if control and i == 0 else []
        with (tmp / f"{job}-w{i}-{time.monotonic_ns()}.log").open("w") as log:
            procs.append(
                subprocess.Popen(
                    [
                        *REWIND,
                        "run",
                        str(V1),
                        "--snapshots",
                        f"file://{tmp}/snapshots",
                        "--job-id",
                        job,
                        "--workers",
                        str(workers),
                        "--worker-index",
                        str(i),
                        "--worker-timeout",
                        "3",
                        *extra,
                        *args,
                        "--",
                        *flow_args,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "REWIND_KAFKA_BOOTSTRAP": servers, **(env or {})},
                    cwd=tmp,
                )
            )
    return procs


def wait_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    return [p.wait() for p in procs]


def as_multiset(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def get(control: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{control}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def wait_status(
    procs: list[subprocess.Popen[bytes]],
    control: str,
    ready: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Poll the coordinator's /status until `ready` says yes; return that status.

    The coordinator (procs[0]) must stay alive meanwhile; a refused connection (its
    control server not up yet) is only a reason to ask again.
    """
    while True:
        assert procs[0].poll() is None, "the coordinator exited early"
        try:
            status: dict[str, Any] | None = get(control, "/status")
        except OSError:
            status = None
        if status is not None and ready(status):
            return status
        time.sleep(0.1)


def wait_checkpoint(procs: list[subprocess.Popen[bytes]], control: str) -> dict[str, Any]:
    """Wait until the job has completed a global checkpoint; return that status."""
    return wait_status(procs, control, lambda status: status["last_checkpoint"] is not None)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REWIND, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The committed output of one uninterrupted single-process run."""
    tmp = tmp_path_factory.mktemp("one")
    out = tmp / "out"
    done = subprocess.run(
        [
            *REWIND,
            "run",
            str(V1),
            "--snapshots",
            f"file://{tmp}/s",
            "--",
            "--out",
            str(out),
            "--total",
            str(TOTAL),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out / "counts")
    assert len(rows) == TOTAL
    return rows


JOBS: list[str] = []


def job_name() -> str:
    JOBS.append(f"w{uuid.uuid4().hex[:8]}")
    return JOBS[-1]


@pytest.fixture(autouse=True)
def _delete_job_topics(kafka_bootstrap: str) -> Iterator[None]:
    """The exchange and control topics the engine created for this test's jobs."""
    yield
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    prefixes = tuple(f"rewind-{job}-" for job in JOBS)
    doomed = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefixes)]
    JOBS.clear()
    if doomed:
        for future in admin.delete_topics(doomed, request_timeout=60).values():
            future.result()


@pytest.mark.parametrize("workers", [2, 3])
def test_n_workers_count_exactly_what_one_process_counts(
    tmp_path: Path, kafka_bootstrap: str, reference: list[dict[str, Any]], workers: int
) -> None:
    job = job_name()
    out = tmp_path / "out"
    procs = start_workers(
        tmp_path,
        kafka_bootstrap,
        workers,
        job,
        "--checkpoint-interval",
        "0.5",
        flow_args=("--out", str(out), "--total", str(TOTAL)),
    )
    assert wait_all(procs) == [0] * workers
    assert as_multiset(read_jsonl(out / "counts")) == as_multiset(reference)
    # The final checkpoint lists every worker's part and the exchange positions.
    latest = sorted((tmp_path / "snapshots/checkpoints" / job).glob("chk-*/manifest.json"))
    manifest = json.loads(latest[-1].read_text())
    assert [w["worker"] for w in manifest["workers"]] == list(range(workers))
    assert manifest["exchange"], "no exchange positions in the manifest"


def test_a_killed_worker_fails_the_job_and_a_restart_from_latest_is_exact(
    tmp_path: Path, kafka_bootstrap: str, reference: list[dict[str, Any]]
) -> None:
    rnd = random.Random(14)
    job = job_name()
    out = tmp_path / "out"
    control = f"127.0.0.1:{free_port()}"
    flow_args = ("--out", str(out), "--total", str(TOTAL), "--rate", "3000")
    args = ("--restore", "latest", "--checkpoint-interval", "0.3")
    procs = start_workers(
        tmp_path, kafka_bootstrap, 3, job, *args, control=control, flow_args=flow_args
    )
    wait_checkpoint(procs, control)  # then a restart has one to use
    time.sleep(rnd.uniform(0.2, 1.0))
    victim = rnd.choice([1, 2])
    procs[victim].send_signal(signal.SIGKILL)
    codes = wait_all(procs)
    assert codes[victim] == -signal.SIGKILL
    assert all(c == 1 for i, c in enumerate(codes) if i != victim), codes
    logs = "".join(p.read_text() for p in tmp_path.glob(f"{job}-w0-*.log"))
    assert f"worker {victim} sent nothing" in logs
    procs = start_workers(tmp_path, kafka_bootstrap, 3, job, *args, flow_args=flow_args)
    assert wait_all(procs) == [0, 0, 0]
    assert as_multiset(read_jsonl(out / "counts")) == as_multiset(reference)


def test_a_savepoint_at_2_workers_restores_at_3_and_at_1(
    tmp_path: Path, kafka_bootstrap: str, reference: list[dict[str, Any]]
) -> None:
    job = job_name()
    control = f"127.0.0.1:{free_port()}"
    before_out = tmp_path / "out-2"
    procs = start_workers(
        tmp_path,
        kafka_bootstrap,
        2,
        job,
        "--checkpoint-interval",
        "0.3",
        control=control,
        flow_args=("--out", str(before_out), "--total", str(TOTAL), "--rate", "2000"),
    )
    wait_status(procs, control, lambda status: status["records_out"] >= 500)
    stopped = cli("stop", "--control", control)
    assert stopped.returncode == 0, stopped.stderr
    uri = stopped.stdout.strip().splitlines()[-1]
    assert wait_all(procs) == [0, 0]
    info = json.loads(cli("inspect", uri, "--json").stdout)
    assert [w["worker"] for w in info["workers"]] == [0, 1]
    assert info["exchange"]
    consumed = sum(info["sources"]["post-events"].values())
    assert 0 < consumed < TOTAL
    text = cli("inspect", uri).stdout
    assert "workers (2):" in text and "exchange positions" in text
    before = read_jsonl(before_out / "counts")
    for workers in (3, 1):
        out = tmp_path / f"out-{workers}"
        flow_args = ("--out", str(out), "--total", str(TOTAL))
        if workers == 1:
            done = subprocess.run(
                [
                    *REWIND,
                    "run",
                    str(V1),
                    "--snapshots",
                    f"file://{tmp_path}/snapshots",
                    "--restore",
                    uri,
                    "--parallelism",
                    "1",
                    "--",
                    *flow_args,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        else:
            procs = start_workers(
                tmp_path, kafka_bootstrap, workers, job_name(), "--restore", uri,
                flow_args=flow_args,
            )  # fmt: skip
            assert wait_all(procs) == [0] * workers
        after = read_jsonl(out / "counts")
        assert as_multiset(before + after) == as_multiset(reference), f"{workers} workers"


def test_a_broker_frozen_for_30_s_makes_the_job_wait_and_it_ends_exact(
    tmp_path: Path,
    broker: Broker,  # noqa: F811 - the fixture imported above
    reference: list[dict[str, Any]],
) -> None:
    # Every worker goes silent at once when the broker stops answering; that is no dead
    # worker (a 3 s worker timeout would fail the job ten times over). The job waits,
    # says why in /status, and its output is exact once the broker is back.
    broker.start()
    broker.wait_ready()
    job = job_name()
    out = tmp_path / "out"
    control = f"127.0.0.1:{free_port()}"
    flow_args = ("--out", str(out), "--total", str(TOTAL), "--rate", "1500")
    # 16 key groups: 16 partitions per exchange topic, quick to create on a new broker.
    procs = start_workers(
        tmp_path, broker.bootstrap, 2, job, "--checkpoint-interval", "0.5",
        "--max-parallelism", "16", control=control, flow_args=flow_args,
    )  # fmt: skip
    wait_checkpoint(procs, control)
    broker.freeze()
    reasons = []
    try:
        frozen_until = time.monotonic() + 30
        while time.monotonic() < frozen_until:
            assert all(p.poll() is None for p in procs), "a worker exited during the outage"
            reasons.append(get(control, "/status").get("reason") or "")
            time.sleep(1)
    finally:
        broker.thaw()
    assert any("has acknowledged nothing since" in r for r in reasons), reasons
    assert wait_all(procs) == [0, 0]
    assert as_multiset(read_jsonl(out / "counts")) == as_multiset(reference)
    logs = "".join(p.read_text() for p in tmp_path.glob(f"{job}-w*.log"))
    assert "exchange_broker_silent" in logs and "exchange_broker_back" in logs


def test_an_exchange_topic_deleted_under_the_job_fails_it_naming_the_topic(
    tmp_path: Path, kafka_bootstrap: str, reference: list[dict[str, Any]]
) -> None:
    job = job_name()
    out = tmp_path / "out"
    control = f"127.0.0.1:{free_port()}"
    flow_args = ("--out", str(out), "--total", str(TOTAL), "--rate", "3000")
    args = ("--restore", "latest", "--checkpoint-interval", "0.3")
    procs = start_workers(
        tmp_path, kafka_bootstrap, 2, job, *args, control=control, flow_args=flow_args
    )
    wait_checkpoint(procs, control)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    [edge] = [
        t for t in admin.list_topics(timeout=30).topics
        if t.startswith(f"rewind-{job}-") and not t.endswith("control")
    ]  # fmt: skip
    for future in admin.delete_topics([edge], request_timeout=60).values():
        future.result()
    assert wait_all(procs) == [1, 1], "the job ended as if nothing had happened"
    logs = "".join(p.read_text() for p in tmp_path.glob(f"{job}-w*.log"))
    assert f"exchange message to {edge}[" in logs, "the error names the topic"

    # What the dev broker does when a dying worker still writes to the topic
    # (auto.create.topics.enable, num.partitions=1), made certain here: the topic is back
    # with one partition where the job needs more. A restart refuses it, saying what to do.
    topics = admin.list_topics(timeout=30).topics
    if edge not in topics:
        for future in admin.create_topics([NewTopic(edge, 1, 1)]).values():
            future.result()
    else:
        assert len(topics[edge].partitions) == 1, "the broker made it again at its default"
    procs = start_workers(tmp_path, kafka_bootstrap, 2, job, *args, flow_args=flow_args)
    assert all(code != 0 for code in wait_all(procs)), "a restart ran on a 1-partition edge"
    logs = "".join(p.read_text() for p in tmp_path.glob(f"{job}-w*.log"))
    assert re.search(rf"exchange topic {edge} has 1 partition\(s\), but this job needs \d+", logs)
    assert f"kafka-topics.sh --delete --topic {edge}" in logs, "the fix is named"

    # Done as told, the restart from the last checkpoint completes, exact.
    for future in admin.delete_topics([edge], request_timeout=60).values():
        future.result()
    procs = start_workers(tmp_path, kafka_bootstrap, 2, job, *args, flow_args=flow_args)
    assert wait_all(procs) == [0, 0]
    assert as_multiset(read_jsonl(out / "counts")) == as_multiset(reference)


def test_a_new_version_retires_the_exchange_topics_of_the_older_ones(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # Job ids as the operator gives them (<namespace>.<app>.<hex deployment id>): v1 of
    # app "a" runs and ends, leaving its topics; so does an app whose name begins the
    # same; v2 of "a", told to retire "a"'s older versions, deletes only v1's.
    base = job_name()
    v1, v2, other = f"{base}.0a1b", f"{base}.2c3d", f"{base}-b.0a1b"
    JOBS.extend([v1, v2, other])
    flow_args = ("--total", "2000")

    def run(job: str, *args: str) -> None:
        out = ("--out", str(tmp_path / job))
        procs = start_workers(
            tmp_path, kafka_bootstrap, 2, job, *args, flow_args=(*out, *flow_args)
        )
        assert wait_all(procs) == [0, 0], job

    def topics_of(job: str) -> list[str]:
        names = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30).topics
        return sorted(t for t in names if t.startswith(f"rewind-{job}-"))

    run(v1)
    run(other)
    assert topics_of(v1) and topics_of(other), "a job of 2 workers makes exchange topics"
    run(v2, "--retire-exchange-of", rf"{re.escape(base)}\.[0-9a-f]+")
    assert topics_of(v1) == [], "v1's topics outlived v2's first snapshot"
    assert topics_of(other), "another app's topics were deleted"
    assert topics_of(v2), "v2 deleted its own topics"


def test_the_exchange_logs_in_to_a_secured_broker_with_the_secrets_variables(
    tmp_path: Path, reference: list[dict[str, Any]]
) -> None:
    # What a StreamApp's exchange credentialsSecret gives the pods: REWIND_KAFKA_* keys.
    secured = Broker(tmp_path / "kafka", users={"rewind": "pw-d2f0a9"})
    try:
        secured.start()
        secured.wait_ready()
        env = {"REWIND_KAFKA_" + k.upper().replace(".", "_"): v for k, v in secured.client.items()}
        out = tmp_path / "out"
        flow_args = ("--out", str(out), "--total", str(TOTAL))
        procs = start_workers(
            tmp_path, secured.bootstrap, 2, job_name(), flow_args=flow_args, env=env
        )
        assert wait_all(procs) == [0, 0]
        assert as_multiset(read_jsonl(out / "counts")) == as_multiset(reference)

        # A wrong password: the job fails, saying why, and no password is written anywhere.
        wrong = {**env, "REWIND_KAFKA_SASL_PASSWORD": "pw-wrong-77c1"}
        job = job_name()
        procs = start_workers(tmp_path, secured.bootstrap, 2, job, flow_args=flow_args, env=wrong)
        assert all(code != 0 for code in wait_all(procs))
        logs = "".join(p.read_text() for p in tmp_path.glob("*-w*.log"))
        assert "Authentication failed" in logs or "authentication" in logs.lower()
        assert "pw-d2f0a9" not in logs and "pw-wrong-77c1" not in logs
    finally:
        secured.stop()
