"""``python -m dev.kubelet``: run the process kubelet (see dev/kubelet/README.md).

``--cleanup`` only stops every container process recorded in the state folder and exits;
``dev/cluster down`` can call it after stopping the kubelet, so nothing is left behind
even when the kubelet itself was killed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from dev.kubelet.kubelet import Kubelet, KubeletSettings, cleanup_state

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dev.kubelet", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig of a user allowed to manage nodes and pods")
    p.add_argument("--state-dir", default=str(REPO_ROOT / "dev" / ".state"), type=Path)
    p.add_argument("--node-name", default="rewind-dev-node")
    p.add_argument("--images", default=str(REPO_ROOT / "dev" / "images.yaml"), type=Path)
    p.add_argument(
        "--port",
        default=10250,
        type=int,
        help="HTTPS port for /containerLogs on 127.0.0.1; 0: none",
    )
    p.add_argument(
        "--keep-pods-on-exit",
        action="store_true",
        help="on SIGTERM leave the pods' processes running for the next kubelet to adopt",
    )
    p.add_argument("--backoff-initial", default=1.0, type=float, help="first restart delay (s)")
    p.add_argument("--backoff-max", default=10.0, type=float, help="cap of the restart delay (s)")
    p.add_argument("--cpu", default="2")
    p.add_argument("--memory", default="", help="node memory capacity (default: the machine's)")
    p.add_argument(
        "--register-with-taints",
        default="",
        help="comma-separated key=value:Effect taints for a newly registered node",
    )
    p.add_argument(
        "--cleanup", action="store_true", help="stop all recorded container processes and exit"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    state_dir = Path(args.state_dir).resolve()
    if args.cleanup:
        count = cleanup_state(state_dir)
        logging.getLogger("kubelet").info("stopped the processes of %d recorded pod(s)", count)
        return 0
    if not args.kubeconfig:
        print("--kubeconfig is required", file=sys.stderr)
        return 2
    settings = KubeletSettings(
        kubeconfig=args.kubeconfig,
        state_dir=state_dir,
        repo_root=REPO_ROOT,
        images=Path(args.images).resolve(),
        node_name=args.node_name,
        port=args.port,
        keep_pods_on_exit=args.keep_pods_on_exit,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        cpu=args.cpu,
        memory=args.memory,
        taints=tuple(t for t in args.register_with_taints.split(",") if t),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Kubelet(settings).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
