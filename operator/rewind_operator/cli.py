"""The `rewind` command: the engine's job commands plus the cluster commands.

argv -> the engine's parser (`rewind_engine.cli.build_parser()`: run, savepoint, stop,
cancel, status, inspect) with our cluster commands added -> either a Kubernetes call
through the current kubeconfig, or the engine's own command. The engine never imports
Kubernetes, which is why the cluster side lives here (docs/CONTRACTS.md, "CLI").

    rewind savepoint create APP [--stop] [--dispose-on-delete] [--wait]
    rewind savepoint list [APP]
    rewind fork APP --from SAVEPOINT --name NEW [--image IMAGE] [--location URI]

What must stay true: `rewind savepoint` without a subcommand still acts on a job (the
engine's command); with `--wait`, `savepoint create` prints the savepoint's URI on its
last line, like the engine's `rewind savepoint`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from rewind_engine import snapshots

from rewind_operator import k8s
from rewind_operator.models import API_VERSION, StreamApp

ClusterCommand = Callable[[argparse.Namespace], int]


def _engine_cli() -> Any:
    """The engine's CLI module, or None if this build has none (then: cluster commands only)."""
    try:
        return importlib.import_module("rewind_engine.cli")
    except ImportError:
        return None


def _engine_parser() -> argparse.ArgumentParser:
    engine = _engine_cli()
    if engine is not None:
        built: argparse.ArgumentParser = engine.build_parser()
        return built
    parser = argparse.ArgumentParser(prog="rewind", description="Rewind streaming engine.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("savepoint", help="take a savepoint of a running job")
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="command")


def _namespace_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig's current namespace)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The engine's parser with the cluster commands added."""
    parser = _engine_parser()
    commands = _subparsers(parser)
    savepoint = commands.choices.get("savepoint") or commands.add_parser("savepoint")
    cluster = savepoint.add_subparsers(dest="savepoint_command", metavar="{create,list}")
    create = cluster.add_parser("create", help="create a Savepoint resource for a StreamApp")
    create.add_argument("app", help="the StreamApp's name")
    create.add_argument("--name", help="the Savepoint's name (default: APP-manual-<time>)")
    create.add_argument("--stop", action="store_true", help="stop the job after the savepoint")
    create.add_argument(
        "--dispose-on-delete",
        action="store_true",
        help="delete the data from object storage when the Savepoint is deleted",
    )
    create.add_argument(
        "--wait", action="store_true", help="wait until it completes; print its URI last"
    )
    _namespace_arg(create)
    create.set_defaults(cluster_command=savepoint_create)
    listing = cluster.add_parser("list", help="list Savepoints (of one StreamApp)")
    listing.add_argument("app", nargs="?", help="only this StreamApp's savepoints")
    _namespace_arg(listing)
    listing.set_defaults(cluster_command=savepoint_list)

    fork = commands.add_parser("fork", help="start a new StreamApp from another's savepoint")
    fork.add_argument("app", help="the StreamApp to copy the spec from")
    fork.add_argument("--from", dest="source", required=True, help="a completed Savepoint's name")
    fork.add_argument("--name", required=True, help="the new StreamApp's name")
    fork.add_argument("--image", help="run this image instead of the original's")
    fork.add_argument(
        "--location",
        help="snapshot location of the fork (default: a sibling of the original's location"
        " named after the fork, e.g. s3://bucket/clicks -> s3://bucket/clicks-fork)",
    )
    _namespace_arg(fork)
    fork.set_defaults(cluster_command=fork_app)
    return parser


def _ns(args: argparse.Namespace) -> str:
    return str(args.namespace or k8s.current_namespace())


def savepoint_create(args: argparse.Namespace) -> int:
    """`rewind savepoint create APP`."""
    namespace = _ns(args)
    if k8s.get_object(k8s.APPS, namespace, args.app) is None:
        print(f"error: no StreamApp {args.app!r} in namespace {namespace}", file=sys.stderr)
        return 1
    name = args.name or f"{args.app}-manual-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "Savepoint",
        "metadata": {"name": name, "labels": {"rewind.dev/app": args.app}},
        "spec": {
            "app": args.app,
            "reason": "manual",
            "stop": bool(args.stop),
            "disposeOnDelete": bool(args.dispose_on_delete),
        },
    }
    if not k8s.create_object(k8s.SAVEPOINTS, namespace, body):
        print(f"error: Savepoint {name!r} already exists", file=sys.stderr)
        return 1
    print(f"savepoint.rewind.dev/{name} created")
    if not args.wait:
        return 0
    while True:
        obj = k8s.get_object(k8s.SAVEPOINTS, namespace, name) or {}
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase == "Completed":
            print(status.get("path"))
            return 0
        if phase in ("Failed", "Abandoned"):
            print(
                f"error: savepoint {name} {phase.lower()}: {status.get('error')}", file=sys.stderr
            )
            return 1
        time.sleep(1)


def _age(stamp: str | None) -> str:
    if not stamp:
        return "?"
    seconds = (
        datetime.now(UTC) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    ).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def savepoint_rows(items: Sequence[dict[str, Any]], app: str | None) -> list[list[str]]:
    """Table rows (oldest first) for `savepoint list`."""
    rows = []
    ordered = sorted(items, key=lambda o: str(o.get("metadata", {}).get("creationTimestamp")))
    for obj in ordered:
        spec = obj.get("spec") or {}
        if app is not None and spec.get("app") != app:
            continue
        status = obj.get("status") or {}
        size = status.get("sizeBytes")
        rows.append(
            [
                str(obj["metadata"]["name"]),
                str(spec.get("app")),
                str(spec.get("reason", "manual")),
                str(status.get("phase", "Pending")),
                snapshots.human_size(int(size)) if size is not None else "-",
                _age(obj["metadata"].get("creationTimestamp")),
                str(status.get("path") or "-"),
            ]
        )
    return rows


def savepoint_list(args: argparse.Namespace) -> int:
    """`rewind savepoint list [APP]`."""
    rows = savepoint_rows(k8s.list_objects(k8s.SAVEPOINTS, _ns(args)), args.app)
    header = ["NAME", "APP", "REASON", "PHASE", "SIZE", "AGE", "PATH"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def fork_spec(
    original: StreamApp, source: str, new_name: str, image: str | None, location: str | None
) -> dict[str, Any]:
    """The spec of a fork: the original's, restored from `source`, with its own storage."""
    spec = copy.deepcopy(original.spec.model_dump(by_alias=True, mode="json", exclude_none=True))
    spec["restore"] = {
        "savepoint": source,
        "allowNonRestoredState": original.spec.restore.allow_non_restored_state,
    }
    spec["state"] = "running"
    if image:
        spec["image"] = image
    spec["snapshots"]["location"] = location or sibling_location(
        original.spec.snapshots.location, new_name
    )
    return spec


def sibling_location(location: str, name: str) -> str:
    """`name` beside `location` (s3://b/apps/clicks -> s3://b/apps/NAME), or inside it
    when it is a bucket's root (s3://b -> s3://b/NAME). Never inside another app's
    checkpoints or savepoints: a fork's history stays apart from its original's."""
    scheme, sep, rest = location.rstrip("/").partition("://")
    if not sep:
        raise ValueError(f"not a snapshot location URI: {location!r}")
    parent, slash, _ = rest.rpartition("/")
    if slash and parent:
        return f"{scheme}://{parent}/{name}"
    return f"{scheme}://{rest}/{name}"


def fork_app(args: argparse.Namespace) -> int:
    """`rewind fork APP --from SAVEPOINT --name NEW`."""
    namespace = _ns(args)
    raw = k8s.get_object(k8s.APPS, namespace, args.app)
    if raw is None:
        print(f"error: no StreamApp {args.app!r} in namespace {namespace}", file=sys.stderr)
        return 1
    sp = k8s.get_object(k8s.SAVEPOINTS, namespace, args.source)
    if sp is None:
        print(f"error: no Savepoint {args.source!r} in namespace {namespace}", file=sys.stderr)
        return 1
    if (sp.get("status") or {}).get("phase") != "Completed":
        print(f"error: Savepoint {args.source!r} is not Completed", file=sys.stderr)
        return 1
    original = StreamApp.model_validate(raw)
    body = {
        "apiVersion": API_VERSION,
        "kind": "StreamApp",
        "metadata": {"name": args.name, "labels": {"rewind.dev/forked-from": args.app}},
        "spec": fork_spec(original, args.source, args.name, args.image, args.location),
    }
    if not k8s.create_object(k8s.APPS, namespace, body):
        print(f"error: StreamApp {args.name!r} already exists", file=sys.stderr)
        return 1
    print(f"streamapp.rewind.dev/{args.name} created from savepoint {args.source}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewind` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: ClusterCommand | None = getattr(args, "cluster_command", None)
    if command is not None:
        return command(args)
    engine_cli = _engine_cli()
    if engine_cli is None:
        parser.print_help()
        return 2
    result = engine_cli.main(list(argv) if argv is not None else None)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
