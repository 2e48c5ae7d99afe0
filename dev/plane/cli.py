"""`dev/cluster build|up|down|status|env`: the one entry point to the local cluster.

`up` builds what is missing, then starts what is not running, in dependency order,
and returns only when every component is healthy; it changes nothing that already runs,
so it is safe to call again. `down` stops everything it started, pods included, and
leaves no container, mount, cgroup, bridge, netns or iptables chain of the node behind.

The node is real: containerd + runc + the kubelet and kube-proxy (dev/node/), running
the project's images built from its Dockerfiles.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dev.node import dns, net, runtime
from dev.node.build import build_node
from dev.plane import build, components, pki, procs
from dev.plane.components import HOST, Spec
from dev.plane.layout import State

ORDER = (
    "etcd", "minio", "kafka", "apiserver", "controller-manager", "scheduler",
    "containerd", "kubelet", "kube-proxy", "coredns", "node-gateway",
)  # fmt: skip
"""Start order; `down` stops in reverse (the kubelet first, so it ends its pods)."""

SpecFactory = Callable[[State, dict[str, int]], Spec]
FACTORIES: dict[str, SpecFactory] = {
    "etcd": components.etcd,
    "minio": components.minio,
    "kafka": components.kafka,
    "apiserver": components.apiserver,
    "controller-manager": components.controller_manager,
    "scheduler": components.scheduler,
    "containerd": lambda state, _: runtime.containerd(state),
    "kubelet": runtime.kubelet,
    "kube-proxy": runtime.kube_proxy,
    "coredns": dns.spec,
    "node-gateway": runtime.gateway,
}


class ClusterError(RuntimeError):
    pass


def _any_running(state: State) -> bool:
    return any(procs.running(state, n) for n in ORDER)


def specs(state: State) -> dict[str, Spec]:
    p = components.ports(state, lambda: _any_running(state))
    return {n: FACTORIES[n](state, p) for n in ORDER}


def env_lines(state: State) -> list[tuple[str, str]]:
    p = components.ports(state, lambda: True)
    s3 = f"http://{HOST}:{p['minio']}"
    # What a pod dials: the node IP (dev/node/gateway.py, Kafka's POD listener),
    # reachable from the host too.
    pod_host = net.NodeNet.of(state).gateway
    kafka = components.kafka_listeners(state, p)
    return [
        ("KUBECONFIG", str(state.kubeconfig("admin"))),
        ("REWIND_S3_ENDPOINT", s3),
        ("AWS_ENDPOINT_URL", s3),
        ("AWS_ACCESS_KEY_ID", components.MINIO_USER),
        ("AWS_SECRET_ACCESS_KEY", components.MINIO_PASSWORD),
        ("AWS_REGION", components.AWS_REGION),
        ("AWS_DEFAULT_REGION", components.AWS_REGION),
        # Never ask a cloud metadata endpoint for anything: only loopback is reachable.
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("REWIND_KAFKA_BOOTSTRAP", kafka["PLAINTEXT"]),
        ("REWIND_DEV_BIN", str(state.bin)),
        ("REWIND_DEV_POD_S3_ENDPOINT", f"http://{pod_host}:{p['minio']}"),
        ("REWIND_DEV_POD_KAFKA_BOOTSTRAP", kafka["POD"]),
    ]


def _log_tail(state: State, name: str, lines: int = 25) -> str:
    log = state.logs / f"{name}.log"
    if not log.exists():
        return "(no log)"
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def _wait_healthy(state: State, todo: list[Spec]) -> None:
    deadline = {s.name: time.monotonic() + s.ready_timeout for s in todo}
    pending = list(todo)
    while pending:
        for s in list(pending):
            if s.healthy():
                pending.remove(s)
                print(f"dev/cluster: {s.name} is healthy", file=sys.stderr, flush=True)
            elif procs.running(state, s.name) is None:
                raise ClusterError(
                    f"{s.name} exited while starting; end of {state.logs / (s.name + '.log')}:\n"
                    + _log_tail(state, s.name)
                )
            elif time.monotonic() > deadline[s.name]:
                raise ClusterError(
                    f"{s.name} not healthy after {s.ready_timeout:.0f} s; see "
                    f"{state.logs / (s.name + '.log')}:\n" + _log_tail(state, s.name)
                )
        if pending:
            time.sleep(0.3)


def _start(state: State, s: Spec) -> Spec | None:
    """Starts `s` unless it runs already; returns it when it must be waited for."""
    if procs.running(state, s.name):
        return s
    if s.prepare:
        s.prepare()
    procs.start(state, s.name, s.argv, s.env, s.cwd)
    print(f"dev/cluster: started {s.name}", file=sys.stderr, flush=True)
    return s


def up(state: State) -> None:
    store = build_node(state)
    sp = specs(state)
    if all(procs.running(state, n) for n in sp) and all(s.healthy() for s in sp.values()):
        write_env(state)
        print("dev/cluster: already up", file=sys.stderr)
        return
    _check_service_range(state)
    for d in ("etcd", "minio", "kafka", "serving-certs"):
        state.data(d).mkdir(parents=True, exist_ok=True)
    pki.ensure_pki(state)
    ports = components.ports(state, lambda: True)
    pki.write_kubeconfigs(state, f"https://{HOST}:{ports['apiserver']}")
    t0 = time.monotonic()
    runtime.ensure_bridge(state)  # Kafka's pod listener binds the node IP
    # Three waves: what needs nothing, then the API server, then what needs the API.
    first = [_start(state, sp[n]) for n in ("etcd", "minio", "kafka", "containerd")]
    _wait_healthy(state, [sp["etcd"]])
    _start(state, sp["apiserver"])
    _wait_healthy(state, [sp["apiserver"]])
    _wait_healthy(state, [sp["containerd"]])
    runtime.import_images(state, store.tars())
    later = ("controller-manager", "scheduler", "kubelet", "kube-proxy", "coredns", "node-gateway")
    rest = [_start(state, sp[n]) for n in sp if n in later]
    _wait_healthy(state, [s for s in [*first, *rest] if s is not None and s.name != "etcd"])
    write_env(state)
    print(f"dev/cluster: up in {time.monotonic() - t0:.0f} s; `eval \"$(dev/cluster env)\"`",
          file=sys.stderr)  # fmt: skip


SERVICE_RANGE_FILE = "service-cidr"
"""In the state folder: the Service range etcd's data was made with. The API server keeps
the first range it was started with (the `kubernetes` ServiceCIDR object), whatever its
flag says later, so a changed range needs a new etcd."""


def _check_service_range(state: State) -> None:
    wanted = components.service_cidr(state)
    recorded = state.root / SERVICE_RANGE_FILE
    etcd = state.data("etcd")
    made = etcd.is_dir() and any(etcd.iterdir())
    if made and (not recorded.exists() or recorded.read_text().strip() != wanted):
        was = recorded.read_text().strip() if recorded.exists() else "another range"
        raise ClusterError(
            f"this cluster's etcd was made with Services in {was}; they now come from"
            f" {wanted}, inside the 198.18.0.0/15 test range. Start anew:"
            " `dev/cluster down && rm -rf dev/.state && dev/cluster up`"
        )
    recorded.write_text(wanted + "\n")


def write_env(state: State) -> None:
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env_lines(state))
    state.env_file.write_text(text)


def _marked_strays(state: State) -> list[procs.Proc]:
    """Processes that inherited our marker but are no longer below a pid file's process."""
    needle = f"{components.MARKER}={state.root}".encode()
    out: list[procs.Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            st = procs.read_stat(int(entry.name))
            if st:
                out.append(procs.Proc(int(entry.name), st[1]))
    return out


def down(state: State) -> None:
    nets: list[str] = []
    for name in reversed(ORDER):
        if name == "containerd" and procs.running(state, name):
            nets = runtime.stop_containers(state)  # the kubelet is gone: no restarts
        grace = 45.0 if name == "kubelet" else 30.0 if name == "kafka" else 10.0
        if procs.stop(state, name, grace):
            print(f"dev/cluster: stopped {name}", file=sys.stderr, flush=True)
        if name == "containerd":
            runtime.teardown_after_containerd(state, nets)
    # Container processes outlive a kubelet restart (it adopts them), so they need not be
    # below it; they inherit our marker, and whatever they started goes with them.
    strays = _marked_strays(state)
    if strays:
        procs.kill_trees(strays, grace=10.0)
        print(f"dev/cluster: stopped {len(strays)} leftover process(es)", file=sys.stderr)


def status(state: State) -> int:
    sp = specs(state)
    ok = True
    for name, s in sp.items():
        p = procs.running(state, name)
        health = "healthy" if p and s.healthy() else "unhealthy" if p else "-"
        ok = ok and health == "healthy"
        pid = f"pid {p.pid}" if p else "stopped"
        print(f"{name:20} {pid:12} {health}")
    return 0 if ok else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev/cluster", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser(
        "build",
        help="install the node's Debian packages, build every missing binary and image "
        "into the cache (see dev/README.md)",
    )
    b.add_argument("components", nargs="*", help="only these binaries (default: everything)")
    sub.add_parser("up", help="start everything that is not running; wait until healthy")
    sub.add_parser("down", help="stop everything, pods included")
    sub.add_parser("status", help="what runs; exit 0 when everything is healthy")
    sub.add_parser("env", help='print shell export lines (eval "$(dev/cluster env)")')
    args = parser.parse_args(argv)
    state = State.default()
    state.root.mkdir(parents=True, exist_ok=True)
    # One `dev/cluster` at a time per state folder: two concurrent `up`s (two test runs)
    # would otherwise both start a process for each component.
    lock = (state.root / ".lock").open("w")
    if args.cmd in ("build", "up", "down"):
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if args.cmd == "build":
            if args.components:
                build.build_all(state, args.components)
            else:
                build_node(state)
        elif args.cmd == "up":
            up(state)
        elif args.cmd == "down":
            down(state)
        elif args.cmd == "status":
            return status(state)
        elif args.cmd == "env":
            if not state.env_file.exists():
                print("dev/cluster: not set up yet; run `dev/cluster up`", file=sys.stderr)
                return 1
            sys.stdout.write(state.env_file.read_text())
    except (build.MissingTool, ClusterError, RuntimeError) as e:
        print(f"dev/cluster: {e}", file=sys.stderr)
        return 2
    finally:
        lock.close()
    return 0
