"""Scaling one job across worker processes, in one run (issue 14's figures).

Prints, each from `rewind run --workers N` processes on this machine, with Kafka from
dev/ ($REWIND_KAFKA_BOOTSTRAP, else `dev/cluster env`) and a 1 s checkpoint interval:

  cpu      records/s of events -> map costing ~20 us per record -> key_by -> count, at
           1 worker (one process, no Kafka) and 2 workers; target 2 workers >= 1.6x
  exchange keyed count (no user cost) per worker at 2 workers, where about half of the
           records cross to the other worker through Kafka, as a share of the
           single-process path; target >= 50 %
  latency  p50/p99 of a record that crossed workers (stamped before key_by, measured at
           the sink after the keyed step), at a steady 5,000 records/s

Records/s count from the moment every worker runs (the coordinator's `workers_started`,
or `job_running` for one process) to the last `job_ended`: topic creation and the start
handshake are left out, the final checkpoint is in. The figures depend on the machine;
on a shared 2-core box they are noisy (the broker competes for the same cores).

    .venv/bin/python bench/bench_scale.py [--cpu-total N] [--count-total N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLOW = REPO / "bench" / "scale_flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]


def kafka_env() -> dict[str, str]:
    if os.environ.get("REWIND_KAFKA_BOOTSTRAP"):
        return {}
    out = subprocess.run(
        [str(REPO / "dev" / "cluster"), "env"], capture_output=True, text=True, check=False
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            env[k] = shlex.split(v)[0] if v else ""
    if not env.get("REWIND_KAFKA_BOOTSTRAP"):
        sys.exit("no Kafka: start dev/cluster (or set REWIND_KAFKA_BOOTSTRAP)")
    return env


def _events(log: Path) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "event" in rec and "timestamp" in rec:
            out.setdefault(rec["event"], datetime.fromisoformat(rec["timestamp"]))
    return out


def run(workers: int, flow_args: list[str], tmp: Path, env: dict[str, str]) -> float:
    """Seconds from 'every worker runs' to the last job_ended."""
    job = f"bench-{uuid.uuid4().hex[:8]}"
    procs, logs = [], []
    for i in range(workers):
        log = tmp / f"{job}-{i}.log"
        logs.append(log)
        cmd = [*REWIND, "run", str(FLOW), "--snapshots", f"file://{tmp}/snap"]
        cmd += ["--checkpoint-interval", "1", "--job-id", job, "--workers", str(workers)]
        cmd += ["--control", "none"]  # the bench reads logs; 8081 may be in use
        with log.open("w") as fh:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--", *flow_args],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "REWIND_WORKER_INDEX": str(i)},
                    cwd=tmp,
                )
            )
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a worker failed ({codes}); see {logs}")
    first = _events(logs[0])
    start = first["workers_started" if workers > 1 else "job_running"]
    end = max(_events(log)["job_ended"] for log in logs)
    return (end - start).total_seconds()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-total", type=int, default=200_000)
    p.add_argument("--count-total", type=int, default=2_000_000)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    env = kafka_env()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        tmp = Path(d)
        cpu = ["--mode", "cpu", "--total", str(a.cpu_total)]
        res["cpu_1_worker_rps"] = a.cpu_total / run(1, cpu, tmp, env)
        res["cpu_2_workers_rps"] = a.cpu_total / run(2, cpu, tmp, env)
        res["cpu_speedup"] = res["cpu_2_workers_rps"] / res["cpu_1_worker_rps"]
        count = ["--mode", "count", "--total", str(a.count_total)]
        res["count_1_worker_rps"] = a.count_total / run(1, count, tmp, env)
        res["count_2_workers_rps"] = a.count_total / run(2, count, tmp, env)
        res["exchange_share_per_worker"] = (
            res["count_2_workers_rps"] / 2 / res["count_1_worker_rps"]
        )
        out = tmp / "lat"
        lat_args = ["--mode", "latency", "--total", "25000", "--rate", "5000", "--out", str(out)]
        run(2, lat_args, tmp, env)
        lat = sorted(x for f in out.glob("latency-*.json") for x in json.loads(f.read_text()))
        res["latency_samples"] = len(lat)
        res["latency_p50_ms"] = statistics.median(lat) * 1e3
        res["latency_p99_ms"] = lat[int(0.99 * (len(lat) - 1))] * 1e3
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"cpu-bound (20 us/record map, keyed count), {a.cpu_total:,} records:")
    print(f"  1 worker   {res['cpu_1_worker_rps']:>10,.0f} records/s")
    print(
        f"  2 workers  {res['cpu_2_workers_rps']:>10,.0f} records/s  "
        f"({res['cpu_speedup']:.2f}x; target >= 1.6x)"
    )
    print(f"keyed count, {a.count_total:,} records:")
    print(f"  1 worker (in-process)  {res['count_1_worker_rps']:>10,.0f} records/s")
    print(
        f"  2 workers (exchange)   {res['count_2_workers_rps']:>10,.0f} records/s, "
        f"{res['count_2_workers_rps'] / 2:,.0f} per worker = "
        f"{res['exchange_share_per_worker']:.0%} of in-process (target >= 50%)"
    )
    print(
        f"latency across one exchange at 5,000 records/s, 1 s checkpoints "
        f"({res['latency_samples']:,} records crossed): p50 {res['latency_p50_ms']:.1f} ms, "
        f"p99 {res['latency_p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
