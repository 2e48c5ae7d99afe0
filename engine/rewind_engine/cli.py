"""`rewind` job commands: run, savepoint, stop, cancel, status, inspect (README.md).

    rewind run FLOW [--restore URI|latest] [--allow-non-restored-state] [--parallelism N]
               [--max-parallelism M] [--snapshots URI] [--checkpoint-interval S]
               [--control HOST:PORT|none] [--preflight] [ARGS...]
               # the control API: --control, else $REWIND_CONTROL, else 127.0.0.1:8081
    rewind savepoint [--control HOST:PORT] [--target URI]   # prints the URI on its last line
    rewind stop [--drain] [--target URI]                    # stop with a savepoint, prints URI
    rewind cancel | rewind status
    rewind inspect URI [--json]

Arguments `run` does not know (and everything after `--`) go to the flow. The console
script is `rewind_operator.cli:main`, which adds cluster commands to `build_parser()`
and calls `main(argv, parser)`; the engine itself never imports Kubernetes.
Exit codes: 0 success, 1 failure (the error on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import structlog

from . import control, logs, snapshots, state_cli, state_rows, termination
from .cli_options import add_parallelism_options
from .flowload import FlowLoadError, load_flow
from .runtime import preflight
from .runtime.job import Job
from .runtime.restore import RestoreError
from .settings import (
    RuntimeSettings,
    Settings,
    SnapshotSettings,
    WorkerSettings,
)

log = structlog.get_logger("rewind.cli")

DEFAULT_CONTROL = "127.0.0.1:8081"
Handler = Callable[[argparse.Namespace], int]


class _FlowArgsParser(argparse.ArgumentParser):
    """The `run` parser: arguments it does not know (and all after `--`) go to the flow.

    Done in the subparser itself, so that a wrapper calling `parse_args` on the top
    parser (the operator's CLI) accepts `rewind run flow.py --snapshots X --rate 5`."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and extras[0] == "--":
            extras = extras[1:]
        ns.flow_args = [*getattr(ns, "flow_args", []), *extras]
        return ns, []


def _job_pattern(text: str) -> str:
    """A --retire-exchange-of value: refused at once when it is not a regular expression."""
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression ({exc}): {text!r}") from exc
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewind", description="Run and manage Rewind streaming jobs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    control_default = os.environ.get("REWIND_CONTROL", DEFAULT_CONTROL)

    def control_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--control",
            default=control_default,
            metavar="HOST:PORT",
            help=f"the job's control API (default: $REWIND_CONTROL or {DEFAULT_CONTROL})",
        )

    run = sub.add_parser(
        "run",
        help="run a flow in this process",
        description="Run a flow in this process, serving its control API (where `rewind"
        " status`, `savepoint`, `stop` and `cancel` find it by default). Arguments `run`"
        " does not know, and everything after `--`, go to the flow.",
    )
    run.__class__ = _FlowArgsParser  # same object, plus the flow-args rule above
    run.set_defaults(flow_args=[])
    run.add_argument("flow", metavar="FLOW", help="path/to/flow.py or module:attribute")
    run.add_argument(
        "--restore",
        metavar="URI",
        help='savepoint or checkpoint URI to start from, or "latest" (the newest one of'
        " this app under --snapshots; none there: start empty) (default: start empty)",
    )
    run.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="drop snapshot state whose uid the flow no longer has (default: refuse)",
    )
    add_parallelism_options(
        run, default=None, note="no fewer than --workers (default: 1, or --workers)"
    )
    run.add_argument(
        "--snapshots",
        metavar="URI",
        default=os.environ.get("REWIND_SNAPSHOTS", SnapshotSettings.location),
        help="where checkpoints and default savepoints go, file:// or s3://"
        f" (default: $REWIND_SNAPSHOTS or {SnapshotSettings.location})",
    )
    run.add_argument(
        "--checkpoint-interval",
        type=float,
        default=SnapshotSettings.checkpoint_interval_s,
        metavar="SECONDS",
        help="seconds between checkpoints; 0 disables periodic checkpoints"
        f" (default: {SnapshotSettings.checkpoint_interval_s:g})",
    )
    run.add_argument(
        "--checkpoints-retained",
        type=int,
        default=SnapshotSettings.checkpoints_retained,
        metavar="N",
        help="completed checkpoints kept per job id; older ones are deleted, savepoints"
        f" never (default: {SnapshotSettings.checkpoints_retained})",
    )
    run.add_argument(
        "--incremental-checkpoints",
        action=argparse.BooleanOptionalAction,
        default=SnapshotSettings.incremental_checkpoints,
        help="checkpoints write only the key groups that changed and reference the rest in"
        " earlier checkpoints (kept as long as referenced); savepoints are always full"
        f" (default: {'on' if SnapshotSettings.incremental_checkpoints else 'off'})",
    )
    run.add_argument(
        "--full-checkpoint-every",
        type=int,
        default=SnapshotSettings.full_checkpoint_every,
        metavar="N",
        help="with incremental checkpoints, every N-th one is full: a checkpoint"
        " references at most N - 1 older ones"
        f" (default: {SnapshotSettings.full_checkpoint_every})",
    )
    run.add_argument(
        "--control",
        metavar="HOST:PORT",
        default=None,
        help="serve the control API here; port 0 picks a free one, `none` serves none"
        f" (default: $REWIND_CONTROL or {DEFAULT_CONTROL}; only worker 0 of several"
        " serves it unless given)",
    )
    run.add_argument(
        "--job-id",
        help="names the job's checkpoint folder (LOCATION/checkpoints/JOB_ID/): runs with"
        " the same id share one checkpoint history and one retention (default:"
        " $REWIND_DEPLOYMENT_ID under the operator, else random per process)",
    )
    run.add_argument(
        "--app",
        default=os.environ.get("REWIND_APP") or None,
        metavar="NAME",
        help="the application's identity: `--restore latest` picks only snapshots it wrote,"
        " and it names the Kafka consumer groups and transactional ids (default:"
        " $REWIND_APP, else the flow's name)",
    )
    run.add_argument(
        "--batch-size",
        type=int,
        default=RuntimeSettings.batch_size,
        metavar="N",
        help=f"records a source reads per poll (default: {RuntimeSettings.batch_size})",
    )
    run.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="json",
        help="one JSON object per line, or text for a terminal (default: json)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("REWIND_WORKERS", "1")),
        metavar="N",
        help="worker processes of the job (docs/scale.md; default: $REWIND_WORKERS or 1)",
    )
    run.add_argument(
        "--worker-index",
        type=int,
        default=int(os.environ.get("REWIND_WORKER_INDEX", "0")),
        metavar="I",
        help="this worker's index, 0..N-1; worker 0 coordinates (default:"
        " $REWIND_WORKER_INDEX or 0)",
    )
    run.add_argument(
        "--worker-timeout",
        type=float,
        default=WorkerSettings.worker_timeout_s,
        metavar="SECONDS",
        help="silence after which a worker counts as dead and the job fails"
        f" (default: {WorkerSettings.worker_timeout_s:g})",
    )
    run.add_argument(
        "--retire-exchange-of",
        type=_job_pattern,
        default=None,
        metavar="REGEX",
        help="job ids (matched in full) whose exchange topics worker 0 deletes once this"
        " job's first snapshot is committed: the older versions of the same app (the"
        " operator sets it; default: none)",
    )
    run.add_argument(
        "--preflight",
        action="store_true",
        help="only check that the flow restores from --restore (every uid maps, every state"
        " decodes), without running it: exit 0 and a JSON report, or exit 1 naming the uid"
        " and file",
    )
    run.set_defaults(handler=cmd_run)

    sp = sub.add_parser("savepoint", help="take a savepoint of a running job")
    control_arg(sp)
    sp.add_argument(
        "--target",
        metavar="URI",
        help="where to write it (default: the job's LOCATION/savepoints/sp-<time>-<id>/)",
    )
    sp.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up waiting for the savepoint after this long (default: 600)",
    )
    sp.set_defaults(handler=cmd_savepoint)

    st = sub.add_parser("stop", help="stop a job with a savepoint; prints the savepoint URI")
    control_arg(st)
    st.add_argument(
        "--drain",
        action="store_true",
        help="advance event time to the end first, so windows and timers fire (default: no)",
    )
    st.add_argument(
        "--target",
        metavar="URI",
        help="where to write the savepoint (default: the job's LOCATION/savepoints/...)",
    )
    st.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up waiting for the savepoint after this long (default: 600)",
    )
    st.set_defaults(handler=cmd_stop)

    cancel = sub.add_parser("cancel", help="stop a job at once, without a savepoint")
    control_arg(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    status = sub.add_parser("status", help="show a job's status (JSON)")
    control_arg(status)
    status.set_defaults(handler=cmd_status)

    inspect = sub.add_parser("inspect", help="describe a savepoint or checkpoint")
    inspect.add_argument("uri", metavar="URI")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--verify", action="store_true", help="also check every file's sha256")
    inspect.set_defaults(handler=cmd_inspect)
    state_cli.add_parser(sub)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> subparser, so that a wrapper can extend e.g. `savepoint`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    handler: Handler = args.handler
    return handler(args)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# -- run -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as exc:  # a bug or a crashing flow: its last words, then the traceback
        termination.record(termination.describe(exc))
        raise


def _fail_run(message: str) -> int:
    """The job cannot run: say why on stderr and in the termination message."""
    termination.record(message)
    return _fail(message)


def _run(args: argparse.Namespace) -> int:
    logs.configure(json=args.log_format == "json")
    deployment_id = os.environ.get("REWIND_DEPLOYMENT_ID") or None
    # One deployment's restarts are one job: the same checkpoint folder, numbering and
    # retention, instead of a new random folder per container start.
    job_id = args.job_id or deployment_id
    settings = Settings(job_id=job_id, control=control_address(args), app=args.app)
    settings.parallelism.parallelism = args.parallelism or args.workers
    settings.workers.workers = args.workers
    settings.workers.worker = args.worker_index
    settings.workers.worker_timeout_s = args.worker_timeout
    settings.workers.retire_jobs = args.retire_exchange_of
    settings.parallelism.max_parallelism = args.max_parallelism
    settings.snapshots.location = args.snapshots
    settings.snapshots.checkpoint_interval_s = args.checkpoint_interval or None
    settings.snapshots.checkpoints_retained = args.checkpoints_retained
    settings.snapshots.incremental_checkpoints = args.incremental_checkpoints
    settings.snapshots.full_checkpoint_every = args.full_checkpoint_every
    settings.snapshots.restore = args.restore
    settings.snapshots.allow_non_restored_state = args.allow_non_restored_state
    settings.snapshots.deployment_id = deployment_id
    settings.runtime.batch_size = args.batch_size
    try:
        flow = load_flow(args.flow, args.flow_args)
    except (FlowLoadError, ValueError) as exc:  # ValueError: FlowError, a malformed flow
        return _fail_run(f"cannot load flow {args.flow}: {exc}")
    if args.preflight:
        return _preflight(flow, settings)
    try:
        job = _make_job(flow, settings, args.flow)
    except ValueError as exc:
        return _fail_run(f"cannot start the job: {exc}")
    state = asyncio.run(_serve(job))
    if state == "FAILED":
        return _fail_run(job.error or "the job failed")
    return 0


PREFLIGHT_UNCHECKED = 3
"""Exit code of `rewind run --preflight` that could not read the snapshot (storage down or
hanging): no verdict on the flow, unlike 1 (it does not restore). docs/CONTRACTS.md."""


def _preflight(flow: Any, settings: Settings) -> int:
    """`rewind run --preflight`: the restore of a real start, and nothing else."""
    settings.workers.workers, settings.workers.worker = 1, 0  # every subtask, here
    try:
        report = preflight.check(flow, settings)
    except (RestoreError, ValueError, snapshots.StorageError) as exc:
        if preflight.unreadable(exc):
            _fail_run(f"preflight could not read the snapshot: {exc}")
            return PREFLIGHT_UNCHECKED
        return _fail_run(f"preflight failed: {exc}")
    # Kubernetes keeps the termination message of a succeeded container too: the operator
    # quotes it in the StreamApp's status (what was restored, from where).
    termination.record(report.summary())
    print(json.dumps({"passed": True, "summary": report.summary(), **asdict(report)}))
    return 0


def control_address(args: argparse.Namespace) -> str | None:
    """Where `run` serves the control API: --control, else $REWIND_CONTROL, else the
    address `status`/`stop` use by default; None for `none` and for workers other than
    0 that were not given one (worker 0 serves the job's API)."""
    given = args.control or os.environ.get("REWIND_CONTROL")
    if given is None and args.worker_index != 0:
        return None
    address = given or DEFAULT_CONTROL
    return None if address.lower() == "none" else address


def _make_job(flow: Any, settings: Settings, flow_ref: str) -> Job:
    if settings.workers.workers == 1 and settings.workers.worker == 0:
        return Job(flow, settings, flow_ref=flow_ref)
    from .runtime.worker import WorkerJob  # noqa: PLC0415 - Kafka only with workers

    return WorkerJob(flow, settings, flow_ref=flow_ref)


async def _serve(job: Job) -> str:
    loop = asyncio.get_running_loop()
    # One handler for the whole life of the process: a SIGTERM that comes while the job
    # is finishing (or while it lingers for its stop result) is remembered, so a finished
    # engine exits at once instead of waiting for a second signal that never comes (the
    # kubelet sends one, then SIGKILL after the grace period).
    terminated = asyncio.Event()

    def on_signal() -> None:
        terminated.set()
        job.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    runner = None
    if job.settings.control:
        address = job.settings.control
        try:
            runner = await control.start(job, address)
        except (OSError, ValueError) as exc:
            reason = (
                "the address is in use (another job?)"
                if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
                else str(exc)
            )
            job.state = "FAILED"
            job.error = (
                f"cannot serve the control API at {address}: {reason}; choose another with"
                " --control HOST:PORT (or $REWIND_CONTROL; port 0 picks a free one), or"
                " --control none"
            )
            return "FAILED"
        # The first line a user reads: where `rewind status` / `stop` reach this job.
        served = control.served_address(runner)
        job.settings.control = served
        log.info("control_api", address=served, url=f"http://{served}/status")
    try:
        state: str = await job.run()
        stop = job.stop_request
        if runner is not None and stop is not None and state == "FINISHED":
            # Let `rewind stop` (or the operator) read the savepoint's result first.
            deadline = time.monotonic() + job.settings.runtime.linger_after_stop_s
            while not (stop.result_read or terminated.is_set()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if os.environ.get("REWIND_DEPLOYMENT_ID"):
                # Under the operator: stay up (FINISHED) until the pod is terminated, or
                # Kubernetes would restart the old version (docs/CONTRACTS.md).
                await terminated.wait()
        return state
    finally:
        if runner is not None:
            await runner.cleanup()


# -- talking to a job ----------------------------------------------------------------------


def _call(control: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"http://{control}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # http to the address the user gave
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"cannot reach the job's control API at {control}: {exc}") from exc


def _wait_savepoint(control: str, sid: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        info = _call(control, "GET", f"/savepoints/{sid}")
        if info["status"] == "COMPLETED":
            print(f"savepoint {sid} completed ({info.get('size_bytes')} bytes)", file=sys.stderr)
            print(info["location"])
            return 0
        if info["status"] == "FAILED":
            return _fail(f"savepoint {sid} failed: {info.get('error')}")
        if time.monotonic() > deadline:
            return _fail(f"savepoint {sid} still in progress after {timeout:g} s")
        time.sleep(0.1)


def cmd_savepoint(args: argparse.Namespace) -> int:
    try:
        body: dict[str, Any] = {"stop": False}
        if args.target:
            body["target"] = args.target
        sid = _call(args.control, "POST", "/savepoints", body)["id"]
        print(f"savepoint {sid} triggered", file=sys.stderr)
        return _wait_savepoint(args.control, sid, args.timeout)
    except RuntimeError as exc:
        return _fail(str(exc))


def cmd_stop(args: argparse.Namespace) -> int:
    try:
        body: dict[str, Any] = {"drain": args.drain}
        if args.target:
            body["target"] = args.target
        sid = _call(args.control, "POST", "/stop", body)["id"]
        print(f"stopping with savepoint {sid}", file=sys.stderr)
        return _wait_savepoint(args.control, sid, args.timeout)
    except RuntimeError as exc:
        return _fail(str(exc))


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        _call(args.control, "POST", "/cancel")
    except RuntimeError as exc:
        return _fail(str(exc))
    print("cancelled")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(_call(args.control, "GET", "/status"), indent=2))
    except RuntimeError as exc:
        return _fail(str(exc))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        description = snapshots.describe(args.uri, check=args.verify)
        with snapshots.SnapshotReader(description["uri"]) as reader:
            for uid, step in description["steps"].items():
                step["kind"] = state_rows.step_kind(reader, uid)
                step["keys"] = state_rows.key_count(reader, uid)
    except snapshots.SnapshotError as exc:
        return _fail(f"cannot read snapshot {args.uri}: {exc}")
    print(json.dumps(description, indent=2) if args.json else snapshots.render(description))
    return 0


if __name__ == "__main__":
    sys.exit(main())
