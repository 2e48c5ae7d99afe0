"""`rewind` job commands: run, savepoint, stop, cancel, status, inspect (DESIGN.md).

    rewind run FLOW [--restore URI|latest] [--allow-non-restored-state] [--parallelism N]
               [--max-parallelism M] [--snapshots URI] [--checkpoint-interval S]
               [--control HOST:PORT] [ARGS...]
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
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from . import control, logs, snapshots
from .flowload import FlowLoadError, load_flow
from .runtime.job import Job
from .settings import Settings

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

    run = sub.add_parser("run", help="run a flow in this process")
    run.__class__ = _FlowArgsParser  # same object, plus the flow-args rule above
    run.set_defaults(flow_args=[])
    run.add_argument("flow", metavar="FLOW", help="path/to/flow.py or module:attribute")
    run.add_argument("--restore", metavar="URI", help='savepoint/checkpoint URI, or "latest"')
    run.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="drop snapshot state whose uid the flow no longer has",
    )
    run.add_argument("--parallelism", type=int, default=1, metavar="N")
    run.add_argument("--max-parallelism", type=int, default=128, metavar="M")
    run.add_argument(
        "--snapshots",
        metavar="URI",
        default=os.environ.get("REWIND_SNAPSHOTS", "file://./rewind-snapshots"),
        help="where checkpoints and default savepoints go (file:// or s3://)",
    )
    run.add_argument(
        "--checkpoint-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between checkpoints; 0 disables periodic checkpoints",
    )
    run.add_argument("--checkpoints-retained", type=int, default=3, metavar="N")
    run.add_argument(
        "--control", metavar="HOST:PORT", help="serve the control API here (default: none)"
    )
    run.add_argument("--job-id", help="job id (default: random per process)")
    run.add_argument("--batch-size", type=int, default=1024, metavar="N")
    run.add_argument("--log-format", choices=["json", "console"], default="json")
    run.set_defaults(handler=cmd_run)

    sp = sub.add_parser("savepoint", help="take a savepoint of a running job")
    control_arg(sp)
    sp.add_argument(
        "--target", metavar="URI", help="where to write it (default: under --snapshots)"
    )
    sp.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    sp.set_defaults(handler=cmd_savepoint)

    st = sub.add_parser("stop", help="stop a job with a savepoint; prints the savepoint URI")
    control_arg(st)
    st.add_argument("--drain", action="store_true", help="advance event time to the end first")
    st.add_argument("--target", metavar="URI")
    st.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
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
    logs.configure(json=args.log_format == "json")
    settings = Settings(job_id=args.job_id, control=args.control)
    settings.parallelism.parallelism = args.parallelism
    settings.parallelism.max_parallelism = args.max_parallelism
    settings.snapshots.location = args.snapshots
    settings.snapshots.checkpoint_interval_s = args.checkpoint_interval or None
    settings.snapshots.checkpoints_retained = args.checkpoints_retained
    settings.snapshots.restore = args.restore
    settings.snapshots.allow_non_restored_state = args.allow_non_restored_state
    settings.snapshots.deployment_id = os.environ.get("REWIND_DEPLOYMENT_ID") or None
    settings.runtime.batch_size = args.batch_size
    try:
        flow = load_flow(args.flow, args.flow_args)
    except FlowLoadError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # FlowError and friends: a malformed flow
        return _fail(str(exc))
    try:
        job = Job(flow, settings, flow_ref=args.flow)
    except ValueError as exc:
        return _fail(str(exc))
    state = asyncio.run(_serve(job))
    if state == "FAILED":
        return _fail(job.error or "the job failed")
    return 0


async def _serve(job: Job) -> str:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, job.cancel)
    runner = None
    if job.settings.control:
        try:
            runner = await control.start(job, job.settings.control)
        except (OSError, ValueError) as exc:
            job.state, job.error = "FAILED", f"cannot serve the control API: {exc}"
            return "FAILED"
    try:
        state: str = await job.run()
        stop = job.stop_request
        if runner is not None and stop is not None and state == "FINISHED":
            # Let `rewind stop` (or the operator) read the savepoint's result first.
            deadline = time.monotonic() + job.settings.runtime.linger_after_stop_s
            while not stop.result_read and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if os.environ.get("REWIND_DEPLOYMENT_ID"):
                # Under the operator: stay up (FINISHED) until the pod is terminated, or
                # Kubernetes would restart the old version (docs/CONTRACTS.md).
                terminated = asyncio.Event()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, terminated.set)
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
    except snapshots.SnapshotError as exc:
        return _fail(str(exc))
    print(json.dumps(description, indent=2) if args.json else snapshots.render(description))
    return 0


if __name__ == "__main__":
    sys.exit(main())
