"""Savepoint write and restore throughput, next to the physical limits, in one run.

State: N keys (default 1 M) of {post_id: count} over 128 key groups and 4 subtasks,
held by the engine's count operator (AggregateOp with its CountState), as in
examples/post_analytics; int post ids, so the keys and counts are written as int64
columns (snapshot format 3). For each storage it measures, on the same bytes:

  savepoint write   the engine's own path for each of the 4 subtasks: capture (the copy
                    taken at the barrier), group into key groups (after a warm-up
                    snapshot, as in a running job after its first checkpoint: only
                    keys new since then are hashed, here none),
                    SnapshotWriter.add_subtask; then finish (encode, sha256, upload,
                    manifest), from the first capture to finish() returning
  first savepoint   the same, once, on fresh operators: every key is new and hashed
                    (a job's first checkpoint; a restored job knows its keys' groups
                    from the snapshot and skips this); for information
  raw upload        S3: boto3 `upload_fileobj` of one object of the same size (boto3's
                    own high-level transfer, default settings); file: one write + fsync
                    (the 50% target is set against the S3 upload; the file:// figures
                    are for information)
  restore           SnapshotReader: all key groups of all subtasks, restored into the
                    4 count operators (each subtask's AggregateOp.restore), until the
                    state is usable; the operators are freed after the clock stops (a
                    job keeps them)
  raw download      S3: boto3 `download_fileobj`; file: one read
  savepoint after   for information: the restored operators' first savepoint, which
    restore         also builds the key index's column that the restore left to it
                    (runtime/aggregate_state.py; a running job does it in steps between
                    batches); compare with "savepoint write"

Throughput is encoded bytes / seconds (MB = 10^6 bytes) and keys / seconds; each figure
is the median of --repeat runs. The S3 half uses the MinIO from dev/ (AWS_* variables,
else `dev/cluster env`); when no cluster is up it runs file:// only and says so.

    .venv/bin/python bench/bench_savepoint.py [--keys N] [--repeat R] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import msgpack
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from rewind_engine.dataflow import AggregateSpec
from rewind_engine.keys import KeyGrouper, key_group_of
from rewind_engine.runtime.operators import AggregateOp
from rewind_engine.snapshots import SnapshotMeta, SnapshotReader, SnapshotWriter, dispose
from rewind_engine.windows import Count

REPO = Path(__file__).resolve().parents[1]
UID = "count-per-post"


def build_state(
    keys: int, key_groups: int, layout: str = "scattered", seed: int = 7, shape: str = "int"
) -> dict[int, dict[Any, int]]:
    """{key group: {key: count}}. "scattered": keys arrive in random order, as in a
    running job, so a key group's objects lie all over the heap; "compact": each key
    group's objects were allocated together, as right after a restore. Keys are post
    ids (shape "int"), or (post id, "view" | "click") as in examples/post_analytics
    (shape "tuple": no int64 column for the keys; the counts still are one)."""
    rng = random.Random(seed)
    state: dict[int, dict[Any, int]] = {kg: {} for kg in range(key_groups)}
    post_ids = rng.sample(range(10**12), keys)
    for post_id in post_ids:
        key: Any = post_id if shape == "int" else (post_id, "click" if post_id % 5 else "view")
        state[key_group_of(key, key_groups)][key] = rng.randrange(1, 100_000)
    if layout == "compact":
        state = {kg: {k + 0: v + 0 for k, v in d.items()} for kg, d in state.items()}
    return state


def floor_figures(state: dict[int, dict[Any, int]], repeat: int) -> dict[str, float]:
    """What encoding can at best cost: touching every key and value once, and msgpack
    alone (no checksums, no I/O)."""
    packer = msgpack.Packer(use_bin_type=True)
    touch = [
        timed(lambda: [(set(map(type, d)), sum(d.values())) for d in state.values()])[0]
        for _ in range(repeat)
    ]
    pack = [timed(lambda: [packer.pack(d) for d in state.values()])[0] for _ in range(repeat)]
    return {"touch_every_object_s": median(touch), "msgpack_only_s": median(pack)}


def ranges(subtasks: int, key_groups: int) -> list[range]:
    return [
        range(i * key_groups // subtasks, (i + 1) * key_groups // subtasks) for i in range(subtasks)
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def count_operators(state: dict[int, dict[Any, int]], subtasks: int) -> list[AggregateOp]:
    """One engine count operator per subtask holding its key groups' keys (inserted in
    the state's order: scattered, as a running job's)."""
    ops = []
    for groups in ranges(subtasks, len(state)):
        op = AggregateOp(AggregateSpec(Count(), None, "batch"))
        assert op.counts is not None
        for kg in groups:
            op.counts.load(list(state[kg]), list(state[kg].values()))
        ops.append(op)
    return ops


def write_savepoint(uri: str, ops: list[AggregateOp], key_groups: int, grouper: KeyGrouper) -> int:
    writer = SnapshotWriter(
        uri,
        "savepoint",
        uri.rsplit("/", 1)[-1],
        SnapshotMeta(job_id="bench", flow="bench_savepoint", max_parallelism=key_groups),
    )
    for subtask, groups in enumerate(ranges(len(ops), key_groups)):
        capture = ops[subtask].capture(1)
        keyed = ops[subtask].group(capture.keyed, grouper)
        writer.add_subtask(UID, subtask, len(ops), groups, keyed, capture.operator_state)
    return writer.finish().size_bytes


def restore_savepoint(uri: str, subtasks: int, key_groups: int) -> list[AggregateOp]:
    """As runtime/restore.py does: every subtask's reads start, then each is restored."""
    ops = [AggregateOp(AggregateSpec(Count(), None, "batch")) for _ in range(subtasks)]
    with SnapshotReader(uri, max_parallelism=key_groups) as reader:
        keyed = [
            reader.keyed_state(UID, groups, arrays=op.restores_arrays)
            for op, groups in zip(ops, ranges(subtasks, key_groups), strict=True)
        ]
        for op, blocks in zip(ops, keyed, strict=True):
            op.restore(blocks, [])
    return ops


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_backend(
    name: str,
    location: str,
    state: dict[int, dict[Any, int]],
    args: argparse.Namespace,
    raw_put: Callable[[bytes], None],
    raw_get: Callable[[], bytes],
) -> dict[str, Any]:
    keys = sum(len(v) for v in state.values())
    write_s: list[float] = []
    read_s: list[float] = []
    after_restore_s: list[float] = []
    ops = count_operators(state, args.subtasks)
    grouper = KeyGrouper(args.key_groups)
    # The first snapshot of fresh operators learns every key (and builds the S3 client),
    # as a job's first checkpoint does; reported on its own, not in the median.
    warm = f"{location.rstrip('/')}/sp-first-{uuid.uuid4().hex[:6]}"
    first_s, _ = timed(partial(write_savepoint, warm, ops, args.key_groups, grouper))
    dispose(warm)
    size = 0
    for attempt in range(args.repeat):
        uri = f"{location.rstrip('/')}/sp-bench-{attempt}-{uuid.uuid4().hex[:6]}"
        seconds, size = timed(partial(write_savepoint, uri, ops, args.key_groups, grouper))
        write_s.append(seconds)
        seconds, restored = timed(partial(restore_savepoint, uri, args.subtasks, args.key_groups))
        assert sum(len(op.state) for op in restored) == keys, keys
        read_s.append(seconds)
        again = f"{uri}-again"
        after_restore_s.append(
            timed(partial(write_savepoint, again, restored, args.key_groups, grouper))[0]
        )
        del restored
        dispose(uri)
        dispose(again)
    payload = os.urandom(size)
    up_s: list[float] = []
    down_s: list[float] = []
    for _ in range(args.repeat):
        up_s.append(timed(lambda: raw_put(payload))[0])
        seconds, data = timed(raw_get)
        assert len(data) == size
        down_s.append(seconds)
    result: dict[str, Any] = {
        "backend": name,
        "keys": keys,
        "bytes": size,
        "savepoint_write_s": median(write_s),
        "first_savepoint_s": first_s,
        "raw_upload_s": median(up_s),
        "restore_s": median(read_s),
        "raw_download_s": median(down_s),
        "savepoint_after_restore_s": median(after_restore_s),
    }
    result["write_vs_raw"] = result["raw_upload_s"] / result["savepoint_write_s"]
    result["restore_vs_raw"] = result["raw_download_s"] / result["restore_s"]
    return result


def bench_file(state: dict[int, dict[Any, int]], args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="rewind-bench-", dir=args.tmp))
    raw = folder / "raw.bin"

    def put(data: bytes) -> None:
        with open(raw, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    try:
        return bench_backend("file://", folder.as_uri(), state, args, put, raw.read_bytes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cluster_env() -> dict[str, str] | None:
    """MinIO settings: the AWS variables if set, else what `dev/cluster env` prints."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return dict(os.environ)
    try:
        out = subprocess.run(
            [str(REPO / "dev" / "cluster"), "env"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    env = dict(os.environ)
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            parsed = shlex.split(value)  # `dev/cluster env` quotes with shlex.quote
            env[key] = parsed[0] if parsed else ""
    return env if env.get("AWS_ENDPOINT_URL") else None


def bench_s3(state: dict[int, dict[Any, int]], args: argparse.Namespace) -> dict[str, Any]:
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket = f"rewind-bench-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    transfer = TransferConfig()  # boto3's defaults: 8 MB parts, 10 threads

    def put(data: bytes) -> None:
        client.upload_fileobj(io.BytesIO(data), bucket, "raw.bin", Config=transfer)

    def get() -> bytes:
        buffer = io.BytesIO()
        client.download_fileobj(bucket, "raw.bin", buffer, Config=transfer)
        return buffer.getvalue()

    try:
        return bench_backend("s3:// (MinIO)", f"s3://{bucket}/bench", state, args, put, get)
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


def report(results: list[dict[str, Any]], target: float) -> str:
    lines = []
    for r in results:
        mb = r["bytes"] / 1e6
        lines.append(f"{r['backend']}: {r['keys']:,} keys, {mb:.1f} MB encoded")
        rows = [
            ("first savepoint", r["first_savepoint_s"], True),
            ("savepoint write", r["savepoint_write_s"], True),
            ("raw upload", r["raw_upload_s"], False),
            ("restore", r["restore_s"], True),
            ("raw download", r["raw_download_s"], False),
        ]
        for label, seconds, has_keys in rows:
            keys = f"{r['keys'] / seconds / 1e6:7.2f} M keys/s" if has_keys else ""
            lines.append(f"  {label:<16} {seconds * 1000:8.1f} ms {mb / seconds:8.1f} MB/s  {keys}")
        if r["backend"].startswith("s3"):
            verdict = "OK" if r["write_vs_raw"] >= target else "BELOW TARGET"
            goal = f"target >= {target:.0%}: {verdict}"
        else:  # the target is set against an upload; a local fsync'd write is no peer
            goal = "no target on a local disk"
        lines.append(
            f"  write = {r['write_vs_raw']:.0%} of raw upload ({goal}); "
            f"restore = {r['restore_vs_raw']:.0%} of raw download"
        )
        lines.append(
            f"  the restored operators' first savepoint: "
            f"{r['savepoint_after_restore_s'] * 1000:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--key-groups", type=int, default=128)
    parser.add_argument("--subtasks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layout", choices=["scattered", "compact"], default="scattered")
    parser.add_argument(
        "--key-shape",
        choices=["int", "tuple"],
        default="int",
        help="post ids, or (post id, kind) pairs as in examples/post_analytics",
    )
    parser.add_argument("--tmp", default=None, help="folder for the file:// half")
    parser.add_argument("--no-s3", action="store_true", help="file:// only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    state = build_state(args.keys, args.key_groups, args.layout, shape=args.key_shape)
    floor = floor_figures(state, args.repeat)
    results = [bench_file(state, args)]
    notes = []
    env = None if args.no_s3 else cluster_env()
    if env is None:
        notes.append("s3:// skipped: no MinIO (set AWS_ENDPOINT_URL or run `dev/cluster up`)")
    else:
        os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "REWIND_"))})
        results.append(bench_s3(state, args))
    if args.json:
        print(json.dumps({"floor": floor, "results": results, "notes": notes}, indent=2))
    else:
        print(
            f"state: {args.keys:,} {args.key_shape} keys ({args.layout} in memory), "
            f"{args.key_groups} key "
            f"groups, {args.subtasks} subtasks; touching every key and value once takes "
            f"{floor['touch_every_object_s'] * 1000:.0f} ms, msgpack alone "
            f"{floor['msgpack_only_s'] * 1000:.0f} ms"
        )
        print(report(results, target=0.5))
        for note in notes:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
